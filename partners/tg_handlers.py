"""Trading Grid webhooks partners react to, registered with the connectors' inbox (see PartnersConfig.ready).

A webhook is a hint, not the truth: each handler re-reads the partner or issue from Trading Grid and applies
what it holds now (partners/tg_sync.py), so a stale, duplicated or reordered webhook never wins. Transient
Trading Grid errors propagate: the inbox task retries them. `document.acknowledged` is handled by policy documents
(campaigns/document_handlers.py); `event.*` webhooks belong to a later flow and stay unregistered (the inbox marks
them ignored)."""

from collections.abc import Mapping

from connectors import inbox
from connectors.models import EventSource, EventStatus, InboundEvent
from connectors.tradinggrid.errors import TradingGridNotFoundError
from partners import tg_sync

PARTNER_EVENTS = (
    "partner.created",
    "partner.updated",
    "partner.status_changed",
    "partner.contact.created",
    "partner.contact.updated",
    "partner.contact.removed",
)
ISSUE_EVENTS = ("issue.created", "issue.updated", "issue.status_changed")


def _data(event: InboundEvent) -> Mapping:
    data = event.payload.get("data")
    return data if isinstance(data, Mapping) else {}


def _nested(data: Mapping, key: str) -> Mapping:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


@inbox.register(EventSource.TRADING_GRID, *PARTNER_EVENTS)
def tradinggrid_partner_changed(event: InboundEvent) -> inbox.Outcome:
    data = _data(event)
    company_id = str(
        data.get("company_id") or _nested(data, "partner").get("company_id") or data.get("partner_company_id") or ""
    ).strip()
    if not company_id:
        return inbox.Outcome(EventStatus.FAILED, f"{event.event_type} names no company id; nothing to re-read.")
    contact_email = str(_nested(data, "contact").get("email") or "").strip().lower()
    removed = [contact_email] if event.event_type == "partner.contact.removed" and contact_email else []
    previous_email = str(data.get("previous_email") or "").strip().lower()
    renamed = {previous_email: contact_email} if previous_email and contact_email else {}
    try:
        change = tg_sync.partner_sync_from_tg(
            company_id=company_id,
            source_event=f"webhook {event.event_type}",
            removed_contact_emails=removed,
            renamed_contact_emails=renamed,
        )
    except TradingGridNotFoundError:
        return inbox.Outcome(EventStatus.UNMATCHED, f"Trading Grid has no partner {company_id} (any more); kept.")
    return inbox.Outcome(EventStatus.PROCESSED, change.describe())


@inbox.register(EventSource.TRADING_GRID, *ISSUE_EVENTS)
def tradinggrid_issue_changed(event: InboundEvent) -> inbox.Outcome:
    data = _data(event)
    issue_id = str(_nested(data, "issue").get("id") or data.get("issue_id") or "").strip()
    if not issue_id:
        return inbox.Outcome(EventStatus.FAILED, f"{event.event_type} names no issue id; nothing to re-read.")
    try:
        change = tg_sync.issue_sync_from_tg(issue_id=issue_id)
    except TradingGridNotFoundError:
        return inbox.Outcome(EventStatus.UNMATCHED, f"Trading Grid has no issue {issue_id} (any more); kept.")
    status = EventStatus.UNMATCHED if change.unmatched else EventStatus.PROCESSED
    return inbox.Outcome(status, change.describe())


@inbox.register(EventSource.TRADING_GRID, tg_sync.LENS_FAILURE_EVENT)
def lens_transaction_failed(event: InboundEvent) -> inbox.Outcome:
    """Our own event: a failed Lens transaction the poll could not match to a partner (Lens has no webhooks)."""
    data = _data(event)
    change = tg_sync.lens_failure_upsert_from_tg(
        transaction_record=_nested(data, "transaction"),
        our_trading_addresses=data.get("our_trading_addresses") or (),
    )
    if change is None:
        return inbox.Outcome(EventStatus.IGNORED, "Not a failed transaction.")
    status = EventStatus.UNMATCHED if change.unmatched else EventStatus.PROCESSED
    return inbox.Outcome(status, change.describe())
