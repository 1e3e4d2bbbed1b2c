"""Sends the emulator's queued webhooks the way Trading Grid would: Standard Webhooks headers signed with the
subscription's secret, the same `webhook-id` on every retry, a fresh timestamp per attempt, and retries with
growing delays (scaled by `state.webhook_delay_scale`, so tests compress a day into milliseconds)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import requests

from ..webhooks import webhook_headers

if TYPE_CHECKING:
    from .state import Delivery, EmulatorState

logger = logging.getLogger(__name__)


class WebhookDispatcher:
    """One background thread that sends due deliveries, one at a time, in the order they fell due."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._session = requests.Session()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tg-emulator-webhooks", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self.state.changed:
            self.state.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        self._session.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            delivery = self._next_due()
            if delivery is not None:
                self._attempt(delivery)

    def _next_due(self) -> Delivery | None:
        with self.state.changed:
            pending = [d for d in self.state.deliveries.values() if d.status == "pending" and not d.in_flight]
            now = time.monotonic()
            due = min(pending, key=lambda d: d.next_attempt_at, default=None)
            if due is not None and due.next_attempt_at <= now:
                due.in_flight = True
                return due
            wait = 0.5 if due is None else min(0.5, due.next_attempt_at - now)
            self.state.changed.wait(max(0.001, wait))
            return None

    def _attempt(self, delivery: Delivery) -> None:
        with self.state.lock:
            subscription = self.state.subscriptions.get(delivery.subscription_id)
            timeout = self.state.webhook_timeout
        if subscription is None:
            self._finish(delivery, status="cancelled", record=None)
            return
        headers = webhook_headers(msg_id=delivery.id, body=delivery.body, secrets=[subscription["secret"]])
        headers["content-type"] = "application/json"
        headers["user-agent"] = "TradingGrid-Emulator-Webhooks/1.0"
        started = time.monotonic()
        record = {
            "attempt": len(delivery.attempts) + 1,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "webhook_timestamp": int(headers["webhook-timestamp"]),
            "status_code": None,
            "error": "",
            "duration_ms": 0,
        }
        try:
            response = self._session.post(delivery.url, data=delivery.body, headers=headers,
                                          timeout=(min(5.0, timeout), timeout), allow_redirects=False)
            record["status_code"] = response.status_code
            response.close()
            succeeded = 200 <= response.status_code < 300
        except requests.RequestException as exc:
            record["error"] = type(exc).__name__
            succeeded = False
        record["duration_ms"] = int((time.monotonic() - started) * 1000)
        if succeeded:
            self._finish(delivery, status="delivered", record=record)
            return
        delay = self.state.retry_delay(len(delivery.attempts) + 1)
        if delay is None:
            logger.warning("Webhook %s to %s failed %d times; giving up.", delivery.id, delivery.url,
                           len(delivery.attempts) + 1)
            self._finish(delivery, status="failed", record=record)
        else:
            self._finish(delivery, status="pending", record=record, retry_in=delay)

    def _finish(self, delivery: Delivery, *, status: str, record: dict | None, retry_in: float = 0.0) -> None:
        with self.state.changed:
            if record is not None:
                delivery.attempts.append(record)
            if delivery.status == "pending":  # a deleted subscription may have cancelled it meanwhile
                delivery.status = status
            delivery.next_attempt_at = time.monotonic() + retry_in
            delivery.in_flight = False
            self.state.changed.notify_all()
