"""Inbound events partners react to, registered with the connectors' inbox (see PartnersConfig.ready)."""

from datetime import datetime

from connectors import inbox
from connectors.models import EventSource, EventStatus, InboundEvent
from partners import services
from partners.models import MarketingStatus

_STATUS_BY_TYPE = {
    "subscribe": MarketingStatus.SUBSCRIBED,
    "unsubscribe": MarketingStatus.UNSUBSCRIBED,
    "cleaned": MarketingStatus.CLEANED,
}


def _outcome(result: services.ContactEventResult, what: str, email: str) -> inbox.Outcome:
    if result.matched == 0:
        return inbox.Outcome(EventStatus.UNMATCHED, f"No contact has the address {email}; kept for review.")
    status = EventStatus.CONFLICT if result.conflicts and not result.applied else EventStatus.PROCESSED
    return inbox.Outcome(status, result.describe(what))


@inbox.register(EventSource.MAILCHIMP, "subscribe", "unsubscribe", "cleaned")
def mailchimp_status_changed(event: InboundEvent) -> inbox.Outcome:
    payload = event.payload
    status = _STATUS_BY_TYPE[event.event_type]
    reason = payload.get("reason", "")
    if event.event_type == "unsubscribe" and payload.get("action") == "delete":
        reason = "deleted in Mailchimp" + (f", {reason}" if reason else "")
    result = services.contact_marketing_status_apply(
        email=payload["email"],
        status=status,
        occurred_at=datetime.fromisoformat(payload["fired_at"]),
        reason=reason,
    )
    return _outcome(result, f"{payload['email']} {status}", payload["email"])


@inbox.register(EventSource.MAILCHIMP, "upemail")
def mailchimp_email_changed(event: InboundEvent) -> inbox.Outcome:
    payload = event.payload
    result = services.contact_email_change_apply(
        old_email=payload["old_email"],
        new_email=payload["new_email"],
        occurred_at=datetime.fromisoformat(payload["fired_at"]),
    )
    return _outcome(result, f"{payload['old_email']} → {payload['new_email']}", payload["old_email"])


@inbox.register(EventSource.MAILCHIMP, "profile")
def mailchimp_profile_changed(event: InboundEvent) -> inbox.Outcome:
    payload = event.payload
    result = services.contact_profile_apply(
        email=payload["email"], merges=payload.get("merges") or {}, language=payload.get("language", "")
    )
    return _outcome(result, f"profile of {payload['email']}", payload["email"])
