"""What can go wrong on purpose: 429 with an empty body, 5xx, slow answers, dropped connections.

Tests add faults one by one (`emulator.faults.add(Fault(status=429, retry_after=3))`, or POST
/_emulator/faults); the demo sets shares of requests by environment variables (see `faults_from_env`)."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Fault:
    status: int | None = None  # answer with this status instead of doing the work
    empty_body: bool | None = None  # default: empty for 429, 403 and 503 (as under load), problem+json otherwise
    retry_after: int | None = None  # seconds, sent as Retry-After
    latency: float = 0.0  # seconds to wait before answering
    drop: bool = False  # close the connection without an answer
    method: str | None = None  # only this HTTP method
    path: str | None = None  # only paths starting with this, without /3.0 (e.g. "/lists/")
    times: int | None = 1  # how many matching requests it hits; None: until cleared
    probability: float = 1.0  # share of matching requests it hits (seeded, for the demo)
    id: int = field(default=0)

    @property
    def answers_empty(self) -> bool:
        return self.empty_body if self.empty_body is not None else self.status in (403, 429, 503)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data and key != "id"}
        fault = cls(**known)
        if fault.status is not None and not 400 <= int(fault.status) <= 599:
            raise ValueError("status must be a 4xx or 5xx code")
        if not (fault.status or fault.latency or fault.drop):
            raise ValueError("a fault needs a status, a latency or drop")
        return fault


@dataclass
class Hit:
    """The faults that apply to one request: total latency, then at most one status or drop."""

    latency: float = 0.0
    fault: Fault | None = None


class FaultInjector:
    def __init__(self, *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._next_id = 1
        self._random = random.Random(seed)

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            fault.id = self._next_id
            self._next_id += 1
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(fault) for fault in self._faults]

    def match(self, *, method: str, path: str) -> Hit:
        """`path` without /3.0. Consumes one use of each fault that hits."""
        hit = Hit()
        with self._lock:
            for fault in list(self._faults):
                if fault.method and fault.method.upper() != method.upper():
                    continue
                if fault.path and not path.startswith(fault.path):
                    continue
                if fault.probability < 1.0 and self._random.random() >= fault.probability:
                    continue
                if (fault.status or fault.drop) and hit.fault is not None:
                    continue  # one answer per request; leave this fault for the next one
                hit.latency += fault.latency
                if fault.status or fault.drop:
                    hit.fault = fault
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
        return hit


def faults_from_env(environ: Mapping[str, str] = os.environ) -> list[Fault]:
    """The demo's standing faults:
    MAILCHIMP_EMULATOR_LATENCY_MS   added to every API request
    MAILCHIMP_EMULATOR_429_RATE     share (0..1) of requests answered 429 with an empty body
    MAILCHIMP_EMULATOR_500_RATE     share answered 500 (problem+json)
    MAILCHIMP_EMULATOR_503_RATE     share answered 503 with an empty body
    MAILCHIMP_EMULATOR_DROP_RATE    share whose connection is dropped without an answer
    MAILCHIMP_EMULATOR_RETRY_AFTER  Retry-After seconds sent with those 429s (default 1)
    """
    faults = []
    latency_ms = float(environ.get("MAILCHIMP_EMULATOR_LATENCY_MS") or 0)
    if latency_ms > 0:
        faults.append(Fault(latency=latency_ms / 1000, times=None))
    retry_after = int(environ.get("MAILCHIMP_EMULATOR_RETRY_AFTER") or 1)
    for status in (429, 500, 503):
        rate = float(environ.get(f"MAILCHIMP_EMULATOR_{status}_RATE") or 0)
        if rate > 0:
            faults.append(
                Fault(status=status, retry_after=retry_after if status == 429 else None, times=None, probability=rate)
            )
    drop_rate = float(environ.get("MAILCHIMP_EMULATOR_DROP_RATE") or 0)
    if drop_rate > 0:
        faults.append(Fault(drop=True, times=None, probability=drop_rate))
    return faults
