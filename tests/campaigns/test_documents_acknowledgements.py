# ruff: noqa: F811 - fixtures imported from documents_support are redefined as test arguments
"""Confirmations of receipt from Trading Grid: the document.acknowledged webhook (through /webhooks/tradinggrid/,
the inbox and a handler that re-reads Trading Grid) and the poll with updated_since; each stored once."""

import pytest

from campaigns import documents
from campaigns.models import DocumentAcknowledgement
from connectors.models import EventStatus, InboundEvent
from partners.models import Contact, SyncCursor
from tests.partners.conftest import acme

from .documents_support import approve_version, document, new_version, private_documents  # noqa: F401

pytestmark = pytest.mark.django_db

BUID = "GC00804444LX"
ANNA = "anna.schmidt@acme.de"


@pytest.fixture
def published(tg, document, author, approver, django_capture_on_commit_callbacks):
    """Acme and its contact in Trading Grid and here; version 2026.1 in the community."""
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()
    version = approve_version(new_version(document, author), author, approver, django_capture_on_commit_callbacks)
    return version


def acknowledge(tg, version, email=ANNA, label=None, emit=True):
    return tg.state.acknowledge_document(
        version.document.tg_document_id,
        {"partner_company_id": BUID, "contact_email": email, "version": label or version.version},
        emit=emit,
    )


def ack_events():
    return list(InboundEvent.objects.filter(event_type="document.acknowledged").order_by("pk"))


def test_the_webhook_records_the_acknowledgement_after_rereading_trading_grid(tg, published):
    acknowledge(tg, published)

    tg.deliver()

    ack = DocumentAcknowledgement.objects.get()
    assert (ack.version_id, ack.partner_company_id, ack.email, ack.source) == (published.pk, BUID, ANNA, "webhook")
    assert ack.partner.tg_company_id == BUID
    assert ack.contact == Contact.objects.get(email=ANNA)
    [event] = ack_events()
    assert event.status == EventStatus.PROCESSED
    assert event.outcome == f"{ANNA} ({BUID}) confirmed “Trading terms” version 2026.1."
    # The webhook was a hint: the handler read the acknowledgements from Trading Grid itself.
    assert tg.requests("GET", f"/community/v1/documents/{published.document.tg_document_id}/acknowledgements")


def test_a_replayed_webhook_and_a_repeated_acknowledgement_change_nothing(tg, published):
    acknowledge(tg, published)
    [request] = tg.take()
    tg.post(request)
    tg.post(request)  # the same webhook-id again: the inbox keeps one event

    acknowledge(tg, published)  # Trading Grid reports it again, under a new webhook id
    tg.deliver()

    assert DocumentAcknowledgement.objects.count() == 1
    first, second = ack_events()
    assert second.status == EventStatus.PROCESSED
    assert second.outcome == f"{ANNA} ({BUID}) had already confirmed “Trading terms” version 2026.1."


def test_the_poll_records_what_no_webhook_brought_and_then_nothing_more(tg, published):
    acknowledge(tg, published, emit=False)

    first = documents.document_acknowledgements_poll_from_tg()
    second = documents.document_acknowledgements_poll_from_tg()

    ack = DocumentAcknowledgement.objects.get()
    assert ack.source == "poll"
    assert (first.seen, first.recorded, first.unmatched) == (1, 1, 0)
    assert (second.seen, second.recorded) == (1, 0)  # updated_since is inclusive: the boundary comes again
    stream = documents.ACK_STREAM_PREFIX + published.document.tg_document_id
    assert SyncCursor.objects.get(stream=stream).value
    polls = tg.requests("GET", f"/community/v1/documents/{published.document.tg_document_id}/acknowledgements")
    assert "updated_since" in polls[-1]["query"]


def test_webhook_and_poll_of_the_same_acknowledgement_store_it_once(tg, published):
    acknowledge(tg, published)
    tg.deliver()

    result = documents.document_acknowledgements_poll_from_tg()

    assert DocumentAcknowledgement.objects.count() == 1
    assert result.recorded == 0


def test_an_acknowledgement_of_a_version_we_do_not_hold_is_kept_unmatched(tg, published):
    tg.state.add_document_version(
        published.document.tg_document_id,
        {"version": "9.9", "file_name": "x.pdf", "sha256": "cd" * 32, "content_url": "http://x/y"},
    )
    acknowledge(tg, published, label="9.9")

    tg.deliver()

    assert not DocumentAcknowledgement.objects.exists()
    [event] = ack_events()
    assert (event.status, event.outcome) == (EventStatus.UNMATCHED, "“Trading terms” has no version '9.9' here.")


def test_an_acknowledgement_of_another_document_is_unmatched(tg, published):
    other = tg.state.create_document({"kind": "policy", "title": "Not ours"})
    tg.state.add_document_version(
        other["id"], {"version": "1", "file_name": "x.pdf", "sha256": "cd" * 32, "content_url": "http://x/y"}
    )
    tg.state.acknowledge_document(other["id"], {"partner_company_id": BUID, "contact_email": ANNA}, emit=True)

    tg.deliver()

    [event] = ack_events()
    assert (event.status, event.outcome) == (
        EventStatus.UNMATCHED,
        f"No document here has the Trading Grid id {other['id']}.",
    )
