"""The Trading Grid webhook policy documents react to, registered with the connectors' inbox at start-up
(CampaignsConfig.ready). A webhook is a hint: the handler re-reads the document's acknowledgements from Trading
Grid and records what Trading Grid holds (campaigns/documents.py). Transient errors propagate: the inbox task
retries them."""

from collections.abc import Mapping

from connectors import inbox
from connectors.models import EventSource, EventStatus, InboundEvent
from connectors.tradinggrid.errors import TradingGridNotFoundError


def _mapping(value) -> Mapping:
    return value if isinstance(value, Mapping) else {}


@inbox.register(EventSource.TRADING_GRID, "document.acknowledged")
def tradinggrid_document_acknowledged(event: InboundEvent) -> inbox.Outcome:
    from campaigns import documents

    data = _mapping(event.payload.get("data"))
    ack = _mapping(data.get("acknowledgement"))
    document_id = str(data.get("document_id") or _mapping(data.get("document")).get("id") or "").strip()
    partner = str(ack.get("partner_company_id") or data.get("partner_company_id") or "").strip()
    email = str(ack.get("contact_email") or data.get("contact_email") or "").strip()
    version = str(ack.get("version") or data.get("version") or "").strip()
    if not (document_id and partner and email and version):
        return inbox.Outcome(
            EventStatus.FAILED,
            "document.acknowledged names no document, partner, contact or version; nothing to re-read.",
        )
    try:
        result = documents.document_acknowledgement_sync_from_tg(
            tg_document_id=document_id,
            partner_company_id=partner,
            email=email,
            version=version,
            updated_since=str(ack.get("updated_at") or "") or None,
        )
    except TradingGridNotFoundError:
        return inbox.Outcome(EventStatus.UNMATCHED, f"Trading Grid has no document {document_id} (any more); kept.")
    return inbox.Outcome(EventStatus.PROCESSED if result.matched else EventStatus.UNMATCHED, result.message)
