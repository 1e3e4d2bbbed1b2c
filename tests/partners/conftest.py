"""Trading Grid fixtures for the partner sync tests: the connector's emulator fixtures, plus `tg`, which
subscribes a loopback receiver to the emulator's webhooks and hands what it receives to our webhook view."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.urls import reverse

from tests.connectors.tradinggrid.conftest import (  # noqa: F401 - fixtures, reused here
    WebhookReceiver,
    tg_emulator,
    tg_emulator_server,
    tg_settings,
    webhook_receiver,
)

ACME = {
    "company_id": "GC00804444LX",
    "name": "Acme Foods",
    "legal_name": "Acme Foods GmbH",
    "trading_addresses": ["ZZ:ACME", "01:123456789"],
    "partner_type": "supplier",
    "region": "emea",
    "country_code": "DE",
    "tier": "preferred",
    "onboarding_status": "invited",
    "compliance_status": "compliant",
    "product_lines": ["Dairy", "Frozen foods"],
    "certifications": [
        {"type": "ISO 9001", "number": "Q-1", "issuer": "BSI", "issued_at": "2025-01-01", "expires_at": "2027-12-31"}
    ],
    "contract_renewal_at": "2027-06-30",
    "compliance_review_at": "2027-01-15",
    "contacts": [
        {
            "email": "anna.schmidt@acme.de",
            "first_name": "Anna",
            "last_name": "Schmidt",
            "role": "primary",
            "phone": "+49 30 1234",
            "language": "de",
            "timezone": "Europe/Berlin",
        }
    ],
}


def acme(**overrides: Any) -> dict[str, Any]:
    return {**copy.deepcopy(ACME), **overrides}


@dataclass
class TradingGrid:
    """The emulator acting as Trading Grid, wired to our webhook endpoint through a loopback receiver."""

    emulator: Any
    receiver: WebhookReceiver
    client: Any
    capture: Any
    forwarded: int = 0
    responses: list[Any] = field(default_factory=list)

    @property
    def state(self):
        return self.emulator.state

    def deliver(self) -> list[Any]:
        """Hand every webhook the emulator sent since the last call to /webhooks/tradinggrid/, as sent (tasks
        run eagerly on commit, so each is processed before this returns)."""
        assert self.state.wait_for_deliveries(timeout=10)
        with self.receiver.lock:
            pending = self.receiver.received[self.forwarded :]
            self.forwarded = len(self.receiver.received)
        responses = [self.post(request) for request in pending]
        self.responses.extend(responses)
        return responses

    def take(self) -> list[dict[str, Any]]:
        """The webhooks sent since the last call, without delivering them (to deliver later, or out of order)."""
        assert self.state.wait_for_deliveries(timeout=10)
        with self.receiver.lock:
            pending = self.receiver.received[self.forwarded :]
            self.forwarded = len(self.receiver.received)
        return pending

    def post(self, request: dict[str, Any]):
        headers = {name: request["headers"][name] for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        with self.capture(execute=True):
            response = self.client.post(
                reverse("tradinggrid-webhook"), data=request["body"], content_type="application/json", headers=headers
            )
        assert response.status_code == 200, response.content
        return response

    def requests(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        with self.state.lock:
            entries = list(self.state.requests)
        return [
            r for r in entries if (method is None or r["method"] == method) and (path is None or r["path"] == path)
        ]


@pytest.fixture
def tg(tg_settings, tg_emulator, webhook_receiver, client, eager_tasks, django_capture_on_commit_callbacks):  # noqa: F811
    tg_emulator.state.create_subscription(
        {"url": webhook_receiver.url, "event_types": [], "secret": settings.TRADINGGRID_WEBHOOK_SECRETS[0]}
    )
    return TradingGrid(
        emulator=tg_emulator, receiver=webhook_receiver, client=client, capture=django_capture_on_commit_callbacks
    )
