"""The webhook-security suite: every refusal has its own exception, rotation works, and a good message passes."""

import base64
import json

import pytest
from django.core.exceptions import ImproperlyConfigured

from connectors.tradinggrid.errors import TradingGridConfigurationError, TradingGridError
from connectors.tradinggrid.webhooks import (
    MAX_BODY_BYTES,
    WebhookMalformedPayloadError,
    WebhookMissingHeaderError,
    WebhookPayloadTooLargeError,
    WebhookSignatureError,
    WebhookTimestampError,
    WebhookVerificationError,
    decode_webhook_secret,
    generate_webhook_secret,
    sign_webhook,
    verify_webhook,
    webhook_headers,
)

NEW_SECRET = "whsec_" + base64.b64encode(b"new-secret-for-tests-0123456789").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"old-secret-for-tests-9876543210").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"somebody-else-entirely").decode()
NOW = 1_764_000_000
BODY = json.dumps({"type": "partner.created", "timestamp": "2025-11-24T16:00:00Z",
                   "data": {"company_id": "GC00804444LX"}}).encode()


def signed(*, body: bytes = BODY, secrets=(NEW_SECRET,), msg_id="msg_1", timestamp=NOW) -> dict[str, str]:
    return webhook_headers(msg_id=msg_id, body=body, secrets=list(secrets), timestamp=timestamp)


def test_standard_webhooks_reference_vector():
    # The example from the Standard Webhooks / Svix documentation.
    signature = sign_webhook(
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_correctly_signed_message_is_accepted_and_parsed():
    payload = verify_webhook(body=BODY, headers=signed(), secrets=[NEW_SECRET], now=NOW)
    assert payload["type"] == "partner.created"
    assert payload["data"] == {"company_id": "GC00804444LX"}


def test_header_names_are_matched_case_insensitively():
    headers = {name.upper(): value for name, value in signed().items()}
    assert verify_webhook(body=BODY, headers=headers, secrets=[NEW_SECRET], now=NOW)["type"] == "partner.created"


def test_django_meta_style_header_names_work_too():
    meta = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in signed().items()}
    assert verify_webhook(body=BODY, headers=meta, secrets=[NEW_SECRET], now=NOW)["type"] == "partner.created"


@pytest.mark.parametrize(
    ("signed_with", "configured"),
    [
        pytest.param([OLD_SECRET], [NEW_SECRET, OLD_SECRET], id="sender-still-on-old-secret"),
        pytest.param([NEW_SECRET], [NEW_SECRET, OLD_SECRET], id="sender-on-new-secret"),
        pytest.param([NEW_SECRET, OLD_SECRET], [OLD_SECRET], id="sender-signs-with-both-receiver-on-old"),
        pytest.param([OTHER_SECRET, NEW_SECRET], [NEW_SECRET], id="one-of-several-signatures-matches"),
    ],
)
def test_secret_rotation(signed_with, configured):
    headers = signed(secrets=signed_with)
    assert verify_webhook(body=BODY, headers=headers, secrets=configured, now=NOW)["type"] == "partner.created"


def test_the_tolerance_boundary_is_inclusive():
    assert verify_webhook(body=BODY, headers=signed(timestamp=NOW - 300), secrets=[NEW_SECRET], now=NOW)
    assert verify_webhook(body=BODY, headers=signed(timestamp=NOW + 300), secrets=[NEW_SECRET], now=NOW)


def _without(name):
    headers = signed()
    del headers[name]
    return headers


def _with(name, value):
    return {**signed(), name: value}


REFUSALS = [
    pytest.param(BODY, _without("webhook-id"), WebhookMissingHeaderError, id="missing-id"),
    pytest.param(BODY, _without("webhook-timestamp"), WebhookMissingHeaderError, id="missing-timestamp"),
    pytest.param(BODY, _without("webhook-signature"), WebhookMissingHeaderError, id="missing-signature"),
    pytest.param(BODY, _with("webhook-signature", "  "), WebhookMissingHeaderError, id="blank-signature"),
    pytest.param(BODY, signed(secrets=[OTHER_SECRET]), WebhookSignatureError, id="signed-with-unknown-secret"),
    pytest.param(BODY + b" ", signed(), WebhookSignatureError, id="body-changed"),
    pytest.param(BODY, _with("webhook-id", "msg_2"), WebhookSignatureError, id="id-changed"),
    pytest.param(BODY, _with("webhook-timestamp", str(NOW + 1)), WebhookSignatureError, id="timestamp-changed"),
    pytest.param(BODY, _with("webhook-signature", "v1,not-base64-at-all"), WebhookSignatureError, id="garbage"),
    pytest.param(BODY, _with("webhook-signature", signed()["webhook-signature"].replace("v1,", "v2,")),
                 WebhookSignatureError, id="only-unknown-version"),
    pytest.param(BODY, _with("webhook-signature", signed()["webhook-signature"].split(",", 1)[1]),
                 WebhookSignatureError, id="no-version-prefix"),
    pytest.param(BODY, signed(timestamp=NOW - 301), WebhookTimestampError, id="stale-timestamp"),
    pytest.param(BODY, signed(timestamp=NOW + 301), WebhookTimestampError, id="future-timestamp"),
    pytest.param(BODY, _with("webhook-timestamp", "yesterday"), WebhookTimestampError, id="timestamp-not-a-number"),
    pytest.param(b"x" * (MAX_BODY_BYTES + 1), signed(body=b"x" * (MAX_BODY_BYTES + 1)),
                 WebhookPayloadTooLargeError, id="body-over-1-mib"),
    pytest.param(b"{not json", signed(body=b"{not json"), WebhookMalformedPayloadError, id="malformed-json"),
    pytest.param(b"\xff\xfe", signed(body=b"\xff\xfe"), WebhookMalformedPayloadError, id="not-utf8"),
    pytest.param(b"[1, 2]", signed(body=b"[1, 2]"), WebhookMalformedPayloadError, id="json-but-not-an-object"),
]


@pytest.mark.parametrize(("body", "headers", "error"), REFUSALS)
def test_each_refusal_raises_its_own_error(body, headers, error):
    with pytest.raises(error) as caught:
        verify_webhook(body=body, headers=headers, secrets=[NEW_SECRET, OLD_SECRET], now=NOW)
    # Every refusal is a verification error (the view answers 4xx) and a connector error.
    assert isinstance(caught.value, WebhookVerificationError)
    assert isinstance(caught.value, TradingGridError)
    assert NEW_SECRET not in str(caught.value) and OLD_SECRET not in str(caught.value)


def test_timestamps_are_checked_before_signatures():
    # A replayed message with a valid signature from long ago is refused for its age.
    with pytest.raises(WebhookTimestampError):
        verify_webhook(body=BODY, headers=signed(timestamp=NOW - 3600), secrets=[NEW_SECRET], now=NOW)


def test_now_may_be_a_datetime():
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(NOW, tz=UTC)
    assert verify_webhook(body=BODY, headers=signed(), secrets=[NEW_SECRET], now=moment)


def test_no_configured_secret_is_a_configuration_error():
    with pytest.raises(TradingGridConfigurationError) as caught:
        verify_webhook(body=BODY, headers=signed(), secrets=[], now=NOW)
    assert isinstance(caught.value, ImproperlyConfigured)


def test_a_malformed_secret_is_named_by_position_never_by_value():
    with pytest.raises(TradingGridConfigurationError) as caught:
        verify_webhook(body=BODY, headers=signed(), secrets=[NEW_SECRET, "whsec_***not-base64***"], now=NOW)
    assert "#2" in str(caught.value)
    assert "not-base64" not in str(caught.value)


def test_generated_secrets_decode_and_differ():
    first, second = generate_webhook_secret(), generate_webhook_secret()
    assert first.startswith("whsec_") and first != second
    assert len(decode_webhook_secret(first)) == 24


def test_the_test_settings_secrets_are_usable(settings):
    headers = signed(secrets=[settings.TRADINGGRID_WEBHOOK_SECRETS[1]])
    assert verify_webhook(body=BODY, headers=headers, secrets=settings.TRADINGGRID_WEBHOOK_SECRETS, now=NOW)


def test_a_django_request_verifies_as_the_webhook_view_will_call_it(rf, settings):
    headers = webhook_headers(msg_id="msg_view", body=BODY, secrets=[settings.TRADINGGRID_WEBHOOK_SECRETS[0]])
    request = rf.post("/webhooks/tradinggrid/", data=BODY, content_type="application/json", headers=headers)
    payload = verify_webhook(body=request.body, headers=request.headers, secrets=settings.TRADINGGRID_WEBHOOK_SECRETS)
    assert payload["data"]["company_id"] == "GC00804444LX"
