"""Serving the emulator: a threaded werkzeug server, in the foreground (management command) or in a
background thread (tests, other test packages: `with run_in_thread() as emulator: ...`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import MailchimpEmulator
from .faults import Fault

logger = logging.getLogger(__name__)

# The key the test settings use; any key works as long as client and emulator agree.
DEFAULT_API_KEY = "0123456789abcdef0123456789abcdef-us21"


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to our logger at DEBUG instead of stderr."""

    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002 - werkzeug's signature
        logger.debug("%s " + message, self.address_string(), *args)


class EmulatorServer:
    def __init__(self, emulator: MailchimpEmulator, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self._server: BaseWSGIServer = make_server(host, port, emulator, threaded=True, request_handler=_QuietHandler)
        self.host = host
        self.port = int(self._server.socket.getsockname()[1])
        self._thread: threading.Thread | None = None
        emulator.base_url = self.base_url
        emulator.api_url = self.api_url

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/3.0"

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="mailchimp-emulator", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        try:
            self._server.serve_forever()
        finally:
            self._close()

    def stop(self) -> None:
        self.emulator.cut_short_waits()
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._close()

    def _close(self) -> None:
        self._server.server_close()
        self.emulator.webhooks.stop()


@contextmanager
def run_in_thread(
    *,
    api_key: str = DEFAULT_API_KEY,
    list_ids: tuple[str, ...] = ("test0aud1e",),
    host: str = "127.0.0.1",
    port: int = 0,
    max_connections: int = 10,
    faults: tuple[Fault, ...] = (),
    seed_demo: bool = False,
) -> Iterator[MailchimpEmulator]:
    """Start an emulator on a free loopback port for the duration of the block. Yields the emulator
    (its `api_url` is what MAILCHIMP_API_URL should be)."""
    emulator = MailchimpEmulator(api_key=api_key, list_ids=list_ids, max_connections=max_connections, faults=faults)
    server = EmulatorServer(emulator, host=host, port=port).start()
    try:
        if seed_demo:
            from .demo import seed_demo as seed

            seed(emulator)
        yield emulator
    finally:
        server.stop()
