"""Serving the emulator: in a background thread for tests (`run_in_thread`), or in the foreground for the demo
(`serve_forever`, used by `manage.py tradinggrid_emulator`). Both use werkzeug's threaded WSGI server."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import create_app
from .delivery import WebhookDispatcher
from .state import EmulatorState, FaultRule

logger = logging.getLogger(__name__)

ENV_PREFIX = "TRADINGGRID_EMULATOR_"


class QuietRequestHandler(WSGIRequestHandler):
    """No access log lines (tests would drown in them)."""

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass


@dataclass
class RunningEmulator:
    """A started emulator: its base URL (what TRADINGGRID_API_URL should be) and its state."""

    url: str
    state: EmulatorState
    server: BaseWSGIServer
    dispatcher: WebhookDispatcher

    def control(self, method: str, path: str, payload: Any = None) -> Any:
        """Call the control API, e.g. `control("POST", "/_emulator/partners/GC.../status", {...})`."""
        response = requests.request(method, f"{self.url}{path}", json=payload, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None


def faults_from_env(environ: Mapping[str, str] | None = None) -> list[FaultRule]:
    """Random faults for the demo, from TRADINGGRID_EMULATOR_* variables (rates are probabilities 0..1).

    FAULT_429_RATE (+ RETRY_AFTER seconds, default 1), FAULT_500_RATE, FAULT_503_RATE, FAULT_DROP_RATE,
    LATENCY_MS (added to every call). They apply to the contract's paths, never to /_emulator/."""
    env = os.environ if environ is None else environ

    def number(name: str) -> float:
        raw = env.get(ENV_PREFIX + name, "").strip()
        return float(raw) if raw else 0.0

    rules = []
    if number("LATENCY_MS") > 0:
        rules.append(FaultRule(kind="latency", seconds=number("LATENCY_MS") / 1000, times=None))
    retry_after = number("RETRY_AFTER") or 1.0
    for name, status in (("FAULT_429_RATE", 429), ("FAULT_500_RATE", 500), ("FAULT_503_RATE", 503)):
        if number(name) > 0:
            rules.append(FaultRule(kind="status", status=status, times=None, probability=min(1.0, number(name)),
                                   retry_after=retry_after if status in (429, 503) else None))
    if number("FAULT_DROP_RATE") > 0:
        rules.append(FaultRule(kind="drop", times=None, probability=min(1.0, number("FAULT_DROP_RATE"))))
    return rules


def build_state(
    *,
    client_id: str,
    client_secret: str,
    company_id: str,
    token_ttl: float | None = None,
    webhook_delay_scale: float | None = None,
    random_seed: int = 0,
    environ: Mapping[str, str] | None = None,
    **extra: Any,
) -> EmulatorState:
    """A state configured from arguments, falling back to TRADINGGRID_EMULATOR_* variables when `environ` is
    given (the demo); tests pass no `environ` and get no random faults."""
    env = environ or {}
    ttl = token_ttl if token_ttl is not None else float(env.get(ENV_PREFIX + "TOKEN_TTL") or 36000)
    state = EmulatorState(client_id=client_id, client_secret=client_secret, company_id=company_id,
                          token_ttl=ttl, random_seed=int(env.get(ENV_PREFIX + "SEED") or random_seed), **extra)
    scale = webhook_delay_scale
    if scale is None and env.get(ENV_PREFIX + "WEBHOOK_DELAY_SCALE"):
        scale = float(env[ENV_PREFIX + "WEBHOOK_DELAY_SCALE"])
    if scale is not None:
        state.webhook_delay_scale = scale
    if environ is not None:
        state.env_faults = faults_from_env(environ)
    return state


@contextmanager
def run_in_thread(
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    company_id: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    state: EmulatorState | None = None,
    seed_demo: bool = False,
    webhook_delay_scale: float = 0.001,
    quiet: bool = True,
) -> Iterator[RunningEmulator]:
    """Start the emulator on `host:port` (0: a free port) in daemon threads; stop it on exit.

    Credentials and company default to the TRADINGGRID_* Django settings, so `get_client()` is accepted once
    TRADINGGRID_API_URL points at `.url`. Webhook retry delays are compressed 1000x by default (a day becomes
    ~90 s; the first retries take milliseconds)."""
    if state is None:
        from django.conf import settings

        state = build_state(
            client_id=client_id or settings.TRADINGGRID_CLIENT_ID,
            client_secret=client_secret or settings.TRADINGGRID_CLIENT_SECRET,
            company_id=company_id or settings.TRADINGGRID_COMPANY_ID,
            webhook_delay_scale=webhook_delay_scale,
        )
    if seed_demo:
        from .seed import seed_demo as _seed_demo

        _seed_demo(state)
    server = make_server(host, port, create_app(state), threaded=True,
                         request_handler=QuietRequestHandler if quiet else None)
    dispatcher = WebhookDispatcher(state)
    dispatcher.start()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="tg-emulator-http", daemon=True)
    thread.start()
    try:
        yield RunningEmulator(url=f"http://{host}:{server.server_port}", state=state, server=server,
                              dispatcher=dispatcher)
    finally:
        server.shutdown()
        server.server_close()
        dispatcher.stop()
        thread.join(5)


def serve_forever(*, state: EmulatorState, host: str, port: int, on_ready: Any = None) -> None:
    """Serve in the foreground until interrupted (the management command)."""
    server = make_server(host, port, create_app(state), threaded=True)
    dispatcher = WebhookDispatcher(state)
    dispatcher.start()
    if on_ready:
        on_ready(f"http://{host}:{server.server_port}")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        dispatcher.stop()
