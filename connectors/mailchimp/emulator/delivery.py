"""Calls our webhook URLs the way Mailchimp does: a GET when a webhook is created (it must answer 2xx),
then form-encoded POSTs, one at a time from a background thread, each recorded for the tests."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import queue
import threading
import time
from typing import Any

import requests

logger = logging.getLogger(__name__)

_USER_AGENT = "MailChimp"  # what Mailchimp's webhook requests say
_TIMEOUT = 10.0  # Mailchimp gives up (and retries later) after 10 s


class WebhookDispatcher:
    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[int, str, list[tuple[str, str]], str, str] | None] = queue.Queue()
        self._lock = threading.Condition()
        self._pending = 0
        self._ids = itertools.count(1)
        self._generation = 0
        self.deliveries: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, name="mailchimp-emulator-webhooks", daemon=True)
        self._thread.start()

    def verify(self, url: str) -> tuple[bool, str]:
        """Mailchimp's check when a webhook is created: GET the URL, expect 2xx."""
        try:
            response = requests.get(url, timeout=_TIMEOUT, headers={"User-Agent": _USER_AGENT})
        except requests.RequestException as exc:
            return False, f"{exc.__class__.__name__}"
        return response.ok, f"HTTP {response.status_code}"

    def enqueue(self, url: str, form: list[tuple[str, str]], event_type: str, list_id: str) -> None:
        with self._lock:
            self._pending += 1
            generation = self._generation
        self._queue.put((generation, url, form, event_type, list_id))

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery was attempted; False if that took longer than `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def reset(self) -> None:
        """Forget past deliveries; queued ones from before the reset are skipped."""
        with self._lock:
            self._generation += 1
            self.deliveries = []

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(delivery) for delivery in self.deliveries]

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            generation, url, form, event_type, list_id = item
            try:
                if generation == self._generation:
                    self._deliver(url, form, event_type, list_id)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._lock.notify_all()

    def _deliver(self, url: str, form: list[tuple[str, str]], event_type: str, list_id: str) -> None:
        record: dict[str, Any] = {
            "id": next(self._ids),
            "url": url,
            "type": event_type,
            "list_id": list_id,
            "form": dict(form),
            "attempted_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "status_code": None,
            "error": "",
        }
        try:
            response = requests.post(url, data=form, timeout=_TIMEOUT, headers={"User-Agent": _USER_AGENT})
            record["status_code"] = response.status_code
        except requests.RequestException as exc:
            record["error"] = exc.__class__.__name__
            logger.info("Webhook %s to %s failed: %s", event_type, url, exc.__class__.__name__)
        with self._lock:
            self.deliveries.append(record)
