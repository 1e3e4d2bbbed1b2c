"""Fixtures for the Trading Grid connector: an in-process emulator, a client pointed at it that never really
sleeps, and a tiny loopback webhook receiver.

Other test packages can use the emulator without these fixtures:

    from connectors.tradinggrid.emulator import run_in_thread
    with run_in_thread() as tg:          # credentials from the test settings
        settings.TRADINGGRID_API_URL = tg.url
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.cache import cache

from connectors.tradinggrid.client import TradingGridClient, reset_client
from connectors.tradinggrid.emulator import RunningEmulator, run_in_thread
from connectors.tradinggrid.emulator.state import DEFAULT_WEBHOOK_RETRY_SCHEDULE

# Test retries happen in milliseconds: the schedule's shape, compressed.
TEST_WEBHOOK_DELAY_SCALE = 0.0001


@pytest.fixture(scope="session")
def tg_emulator_server() -> Iterator[RunningEmulator]:
    """One emulator for the whole session; `tg_emulator` resets it for each test."""
    with run_in_thread(webhook_delay_scale=TEST_WEBHOOK_DELAY_SCALE) as running:
        yield running


@pytest.fixture
def tg_emulator(tg_emulator_server: RunningEmulator) -> Iterator[RunningEmulator]:
    """The emulator, empty, with no faults and fast webhook retries."""
    state = tg_emulator_server.state
    _fresh(state)
    yield tg_emulator_server
    _fresh(state)


def _fresh(state: Any) -> None:
    state.after_request_hooks.clear()
    state.webhook_delay_scale = TEST_WEBHOOK_DELAY_SCALE
    state.webhook_retry_schedule = DEFAULT_WEBHOOK_RETRY_SCHEDULE
    state.webhook_timeout = 2.0
    state.reset()


@pytest.fixture
def tg_settings(settings: Any, tg_emulator: RunningEmulator) -> Iterator[Any]:
    """Settings pointing the connector at the emulator, with an empty token cache."""
    settings.TRADINGGRID_API_URL = tg_emulator.url
    reset_client()
    cache.clear()
    yield settings
    reset_client()
    cache.clear()


@pytest.fixture
def tg_sleeps() -> list[float]:
    """Every delay the client asked to sleep, in order (nothing really waits)."""
    return []


@pytest.fixture
def tg_client(tg_settings: Any, tg_sleeps: list[float]) -> Iterator[TradingGridClient]:
    """A client for the emulator whose sleeps are recorded, with jitter fixed at half the step."""
    client = TradingGridClient.from_settings(sleep=tg_sleeps.append, random=lambda: 0.5)
    yield client
    client.close()


@dataclass
class WebhookReceiver:
    """A loopback endpoint that records what it receives and answers statuses from `script` (then 204)."""

    url: str = ""
    script: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_status(self) -> int:
        with self.lock:
            return self.script.pop(0) if self.script else 204

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.received]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = receiver.next_status()
            with receiver.lock:
                receiver.received.append(
                    {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                     "answered": status}
                )
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/webhooks/tradinggrid/"
    yield receiver
    server.shutdown()
    server.server_close()
