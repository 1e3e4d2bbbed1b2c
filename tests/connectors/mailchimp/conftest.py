"""Fixtures for the Mailchimp connector tests: a client pointed at the emulator (tests/conftest.py starts it),
a loopback webhook receiver, and the contract check on every request the client sends."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connectors.mailchimp.client import MailchimpClient, OutboundRequest, request_observers
from connectors.mailchimp.contract import ContractRecorder
from connectors.mailchimp.emulator import MailchimpEmulator
from connectors.mailchimp.limiter import LocalConnectionLimiter

AUDIENCE_ID = "test0aud1e"  # config/settings/test.py's MAILCHIMP_AUDIENCE_ID
API_KEY = "0123456789abcdef0123456789abcdef-us21"  # config/settings/test.py's MAILCHIMP_API_KEY


@pytest.fixture
def mailchimp_client(mailchimp_emulator: MailchimpEmulator) -> MailchimpClient:
    return MailchimpClient(
        api_key=API_KEY,
        api_url=mailchimp_emulator.api_url,
        timeout=5,
        limiter=LocalConnectionLimiter(limit=10, acquire_timeout=10),
    )


@pytest.fixture(autouse=True)
def _contract_on_every_test(mailchimp_contract: ContractRecorder) -> ContractRecorder:
    return mailchimp_contract


@pytest.fixture
def sent_requests() -> Iterator[list[OutboundRequest]]:
    """What the client sent, in order (method, /3.0 path, query, exact JSON body)."""
    seen: list[OutboundRequest] = []
    request_observers.append(seen.append)
    yield seen
    request_observers.remove(seen.append)


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    pairs: list[tuple[str, str]]


@dataclass
class WebhookReceiver:
    url: str
    requests: list[ReceivedRequest] = field(default_factory=list)
    get_status: int = 200

    def posts(self) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.method == "POST"]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A tiny loopback HTTP server standing in for our webhook view: records every request."""
    receiver = WebhookReceiver(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _record(self, body: bytes) -> None:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            with lock:
                receiver.requests.append(
                    ReceivedRequest(self.command, self.path, dict(self.headers.items()), dict(pairs), pairs)
                )

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._record(b"")
            self.send_response(receiver.get_status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            self._record(self.rfile.read(length))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/mailchimp/test-mailchimp-secret-new/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()
