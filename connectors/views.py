"""Webhook endpoints: authenticate, parse, store under a dedupe key, answer at once. Processing happens in a
task (connectors/services.py, handlers registered by the apps)."""

import logging

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from connectors import services
from connectors.mailchimp.webhooks import normalize_webhook, secret_is_valid, webhook_dedupe_key
from connectors.models import EventSource
from connectors.tradinggrid.errors import TradingGridConfigurationError
from connectors.tradinggrid.payloads import webhook_event_from_tg
from connectors.tradinggrid.webhooks import (
    ID_HEADER,
    WebhookPayloadTooLargeError,
    WebhookSignatureError,
    WebhookVerificationError,
    verify_webhook,
)

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1024 * 1024


@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def mailchimp_webhook(request, secret: str):
    """Mailchimp has no signature: the secret in the URL is the authentication (MAILCHIMP_WEBHOOK_SECRETS,
    several during rotation). A wrong secret is a 404 and stores nothing."""
    if not secret_is_valid(secret, settings.MAILCHIMP_WEBHOOK_SECRETS):
        raise Http404
    if request.method in ("GET", "HEAD"):
        return HttpResponse("ok", content_type="text/plain")  # Mailchimp checks the URL when the webhook is made
    if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_WEBHOOK_BYTES:
        return HttpResponse("body too large", status=413, content_type="text/plain")
    raw = request.body.decode("utf-8", errors="replace")
    form = {key: request.POST.get(key) for key in request.POST}
    try:
        event = normalize_webhook(form)
    except ValueError as exc:
        logger.warning("mailchimp webhook refused: %s", exc)
        return HttpResponseBadRequest(f"malformed webhook: {exc}", content_type="text/plain")
    stored, created = services.inbound_event_record(
        source=EventSource.MAILCHIMP,
        dedupe_key=webhook_dedupe_key(form),
        event_type=event["type"],
        payload=event,
        raw=raw,
    )
    return JsonResponse({"stored": created, "event": stored.pk})


@csrf_exempt
@require_POST
def tradinggrid_webhook(request):
    """Standard Webhooks from Trading Grid, verified over the raw body against every secret in
    TRADINGGRID_WEBHOOK_SECRETS (several during rotation). Any refusal is a 4xx (a retry would not help) and
    stores nothing; a stored event is processed by a task, and a replayed webhook-id changes nothing."""
    if int(request.META.get("CONTENT_LENGTH") or 0) > MAX_WEBHOOK_BYTES:
        return HttpResponse("body too large", status=413, content_type="text/plain")
    body = request.body
    try:
        verified = verify_webhook(body=body, headers=request.headers, secrets=settings.TRADINGGRID_WEBHOOK_SECRETS)
        event = webhook_event_from_tg(verified)
    except WebhookPayloadTooLargeError as exc:
        return _refused(413, exc)
    except WebhookSignatureError as exc:
        return _refused(401, exc)
    except (WebhookVerificationError, ValueError) as exc:
        return _refused(400, exc)
    except TradingGridConfigurationError:
        # Our mistake, not the sender's: 503 so Trading Grid retries once the secrets are set.
        logger.error("tradinggrid webhook refused: TRADINGGRID_WEBHOOK_SECRETS is empty or malformed")
        return HttpResponse("webhook secrets are not configured", status=503, content_type="text/plain")
    stored, created = services.inbound_event_record(
        source=EventSource.TRADING_GRID,
        dedupe_key=request.headers[ID_HEADER].strip(),
        event_type=event.type,
        payload={
            "type": event.type,
            "timestamp": event.occurred_at.isoformat() if event.occurred_at else None,
            "data": dict(event.data),
        },
        raw=body.decode("utf-8", errors="replace"),
    )
    return JsonResponse({"stored": created, "event": stored.pk})


def _refused(status: int, exc: Exception) -> HttpResponse:
    logger.warning("tradinggrid webhook refused (%s): %s", status, exc)
    return HttpResponse(f"refused: {exc}", status=status, content_type="text/plain")
