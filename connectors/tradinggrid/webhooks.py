"""Standard Webhooks signing and verification for the webhooks Trading Grid sends us (CONTRACT.md).

Pure functions: the project's webhook view calls `verify_webhook` with the raw body and the request headers;
the emulator and the tests call `sign_webhook` / `webhook_headers`. Secrets are `whsec_<base64>`; several
secrets may be configured at once so a rotation never rejects a genuine message."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .errors import TradingGridConfigurationError, TradingGridError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker, not a secret
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 1024 * 1024
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

# The event types Trading Grid sends (CONTRACT.md, "Webhooks").
WEBHOOK_EVENT_TYPES = (
    "partner.created",
    "partner.updated",
    "partner.status_changed",
    "partner.contact.created",
    "partner.contact.updated",
    "partner.contact.removed",
    "issue.created",
    "issue.updated",
    "issue.status_changed",
    "document.acknowledged",
    "event.registration.created",
    "event.attendance.recorded",
    "event.question.created",
)


class WebhookVerificationError(TradingGridError):
    """A webhook was refused. The view answers 4xx (never 5xx: a retry would not help)."""


class WebhookMissingHeaderError(WebhookVerificationError):
    """`webhook-id`, `webhook-timestamp` or `webhook-signature` is absent or empty."""


class WebhookTimestampError(WebhookVerificationError):
    """`webhook-timestamp` is not Unix seconds, or is further than the tolerance from now (replay guard)."""


class WebhookSignatureError(WebhookVerificationError):
    """No `v1,` signature matches any configured secret."""


class WebhookPayloadTooLargeError(WebhookVerificationError):
    """The body is larger than we accept (1 MiB)."""


class WebhookMalformedPayloadError(WebhookVerificationError):
    """The signed body is not a JSON object."""


def generate_webhook_secret() -> str:
    """A fresh `whsec_` secret (24 random bytes), e.g. for a new webhook subscription."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(24)).decode("ascii")


def decode_webhook_secret(secret: str, *, position: int = 0) -> bytes:
    """The HMAC key inside `whsec_<base64>`. The error names the secret's position, never its value."""
    encoded = secret.strip()
    if encoded.startswith(SECRET_PREFIX):
        encoded = encoded[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise TradingGridConfigurationError(
            f"Trading Grid webhook secret #{position + 1} is not of the form whsec_<base64>."
        )
    return key


def sign_webhook(*, msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """One `v1,<base64>` signature: HMAC-SHA256 over `{id}.{timestamp}.{body}` with the decoded secret."""
    return f"{SIGNATURE_VERSION},{_signature(decode_webhook_secret(secret), msg_id, timestamp, body)}"


def webhook_headers(
    *, msg_id: str, body: bytes, secrets: Sequence[str], timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every given secret (space-separated, for rotation)."""
    if timestamp is None:
        timestamp = int(time.time())
    signatures = " ".join(sign_webhook(msg_id=msg_id, timestamp=timestamp, body=body, secret=s) for s in secrets)
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signatures}


def verify_webhook(
    *,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    now: float | datetime | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> dict[str, Any]:
    """Check a Standard Webhooks message and return its parsed JSON body.

    Raises a `WebhookVerificationError` subclass naming what was wrong, or `TradingGridConfigurationError`
    when no usable secret is configured. `headers` may be `request.headers`, `request.META` or any mapping;
    names are matched case-insensitively."""
    if not secrets:
        raise TradingGridConfigurationError("TRADINGGRID_WEBHOOK_SECRETS is empty: no webhook can be verified.")
    keys = [decode_webhook_secret(secret, position=i) for i, secret in enumerate(secrets)]

    # Size first: never hash or parse an oversized body.
    if len(body) > max_body_bytes:
        raise WebhookPayloadTooLargeError(f"Webhook body is {len(body)} bytes; the limit is {max_body_bytes}.")

    lowered = {_header_name(name): value for name, value in headers.items()}
    msg_id = _required_header(lowered, ID_HEADER)
    raw_timestamp = _required_header(lowered, TIMESTAMP_HEADER)
    raw_signatures = _required_header(lowered, SIGNATURE_HEADER)

    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookTimestampError(f"Header {TIMESTAMP_HEADER} is not Unix seconds.")
    current = _unix_seconds(now)
    if abs(current - timestamp) > tolerance:
        direction = "old" if timestamp < current else "far in the future"
        raise WebhookTimestampError(
            f"Header {TIMESTAMP_HEADER} is {abs(int(current - timestamp))}s {direction}; the tolerance is {tolerance}s."
        )

    offered = [
        candidate.split(",", 1)[1]
        for candidate in raw_signatures.split()
        if candidate.startswith(f"{SIGNATURE_VERSION},")
    ]
    if not offered:
        raise WebhookSignatureError(f"Header {SIGNATURE_HEADER} has no {SIGNATURE_VERSION} signature.")
    matched = False
    for key in keys:
        expected = _signature(key, msg_id, timestamp, body)
        for signature in offered:
            # Compare every pair so timing does not reveal which secret or position matched.
            matched |= hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))
    if not matched:
        raise WebhookSignatureError("No webhook signature matches a configured secret.")

    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise WebhookMalformedPayloadError("Webhook body is not valid JSON.")
    if not isinstance(payload, dict):
        raise WebhookMalformedPayloadError("Webhook body is not a JSON object.")
    return payload


def _header_name(name: object) -> str:
    """`Webhook-Id`, `webhook-id` and Django's `request.META` spelling `HTTP_WEBHOOK_ID` all become `webhook-id`."""
    lowered = str(name).lower()
    if lowered.startswith("http_"):
        lowered = lowered[5:].replace("_", "-")
    return lowered


def _required_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None or not str(value).strip():
        raise WebhookMissingHeaderError(f"Header {name} is missing.")
    return str(value).strip()


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def _unix_seconds(now: float | datetime | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        return now.timestamp()
    return float(now)
