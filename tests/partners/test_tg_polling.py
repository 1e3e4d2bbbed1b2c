"""The beat pollers: directory and profiles, issues and Lens failures, each from where its cursor stood. They feed
the same services as the webhooks, so a missed webhook is caught and a change seen both ways is applied once."""

from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.contrib.admin.models import LogEntry
from django.core.cache import cache
from django.utils import timezone

from connectors.models import EventStatus, InboundEvent
from connectors.tradinggrid.client import reset_client
from partners import tasks, tg_sync
from partners.models import CommunityIssue, SyncCursor, TradingPartner
from tests.partners.conftest import acme
from tests.partners.factories import TradingAddressFactory, TradingPartnerFactory

pytestmark = pytest.mark.django_db

BUID = "GC00804444LX"
PROFILE = f"/community/v1/partners/{BUID}/profile"


def run(task, tg):
    """A beat tick: the task as Celery runs it, with on-commit work executed."""
    with tg.capture(execute=True):
        return task.apply().get()


# --- Directory and profiles -----------------------------------------------------------------------------------


def test_a_missed_webhook_is_caught_by_the_next_poll(tg):
    tg.state.create_partner(acme())  # no webhook at all

    summary = run(tasks.tg_partners_poll_task, tg)

    assert TradingPartner.objects.get(tg_company_id=BUID).name == "Acme Foods"
    assert summary.startswith("tradinggrid:partner-directory: seen=1 fetched=1 changed=1")

    tg.state.update_profile(BUID, {"tier": "strategic"})  # a change whose webhook is lost
    run(tasks.tg_partners_poll_task, tg)

    assert TradingPartner.objects.get().tier == "strategic"


def test_only_partners_whose_record_changed_are_read_and_applied(tg):
    tg.state.create_partner(acme())
    tg.state.create_partner(acme(company_id="GC00800001US", name="Swift Carriers", trading_addresses=["ZZ:SWIFT"],
                                 contacts=[]))
    run(tasks.tg_partners_poll_task, tg)
    reads = len(tg.requests("GET", PROFILE))

    unchanged = tg_sync.partners_poll_from_tg()
    assert (unchanged.seen, unchanged.fetched, unchanged.changed) == (2, 0, 0)
    assert len(tg.requests("GET", PROFILE)) == reads

    tg.state.update_profile(BUID, {"compliance_status": "review_due"})
    one_changed = tg_sync.partners_poll_from_tg()
    assert (one_changed.seen, one_changed.fetched, one_changed.changed) == (2, 1, 1)


def test_a_profile_not_read_for_a_day_is_read_again_even_with_an_unchanged_directory_entry(tg):
    tg.state.create_partner(acme())
    run(tasks.tg_partners_poll_task, tg)
    TradingPartner.objects.update(tg_synced_at=timezone.now() - timedelta(hours=25))

    result = tg_sync.partners_poll_from_tg()

    assert (result.fetched, result.changed) == (1, 0)
    assert TradingPartner.objects.get().tg_synced_at > timezone.now() - timedelta(minutes=1)


def test_a_change_seen_by_webhook_then_poll_is_applied_once(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()
    tg.state.update_profile(BUID, {"tier": "strategic"}, emit=True)
    tg.deliver()
    history = LogEntry.objects.count()

    result = tg_sync.partners_poll_from_tg()

    assert result.changed == 0
    assert LogEntry.objects.count() == history


def test_a_change_seen_by_poll_then_webhook_is_applied_once(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()
    tg.state.update_profile(BUID, {"tier": "strategic"}, emit=True)
    late = tg.take()
    assert tg_sync.partners_poll_from_tg().changed == 1
    history = LogEntry.objects.count()

    for request in late:
        tg.post(request)

    assert InboundEvent.objects.get(event_type="partner.updated").outcome == f"{BUID}: nothing changed."
    assert LogEntry.objects.count() == history


def test_a_partner_that_fails_to_apply_does_not_stop_the_others(tg, monkeypatch):
    tg.state.create_partner(acme())
    tg.state.create_partner(acme(company_id="GC00800001US", name="Swift", trading_addresses=["ZZ:SWIFT"],
                                 contacts=[]))
    real = tg_sync.partner_upsert_from_tg

    def flaky(*, partner, source_event, **kwargs):
        if partner.tg_company_id == BUID:
            raise ValueError("odd record")
        return real(partner=partner, source_event=source_event, **kwargs)

    monkeypatch.setattr(tg_sync, "partner_upsert_from_tg", flaky)

    result = tg_sync.partners_poll_from_tg()

    assert (result.changed, result.failed) == (1, 1)
    assert list(TradingPartner.objects.values_list("tg_company_id", flat=True)) == ["GC00800001US"]


def test_an_overlapping_poll_stands_down(tg):
    cache.add(f"partnerlink:poll-lock:{tg_sync.DIRECTORY_STREAM}", "1")
    try:
        result = tg_sync.partners_poll_from_tg()
    finally:
        cache.delete(f"partnerlink:poll-lock:{tg_sync.DIRECTORY_STREAM}")

    assert result.skipped and str(result).endswith("another poll is running; skipped.")


# --- Issues -------------------------------------------------------------------------------------------------


def issue_queries(tg):
    return [parse_qs(r["query"]) for r in tg.requests("GET", "/community/v1/issues")]


def test_issues_poll_from_its_cursor_which_survives_a_restart(tg):
    TradingPartnerFactory(tg_company_id=BUID)
    tg.state.create_partner(acme())
    first = tg.state.create_issue({"partner_company_id": BUID, "title": "Late truck"})
    tg.state.create_issue({"partner_company_id": BUID, "title": "Short shipment"})

    summary = run(tasks.tg_issues_poll_task, tg)

    assert CommunityIssue.objects.count() == 2
    assert "seen=2" in summary and "changed=2" in summary
    cursor = SyncCursor.objects.get(stream=tg_sync.ISSUES_STREAM).value
    assert cursor.startswith(str(timezone.now().year))
    assert "updated_since" not in issue_queries(tg)[0]

    # A restart: a new process, an empty cache. The cursor is in the database.
    reset_client()
    cache.clear()
    tg.state.update_issue(first["id"], {"status": "resolved"})
    again = tg_sync.issues_poll_from_tg()

    assert issue_queries(tg)[-1]["updated_since"] == [cursor]
    # The boundary issue comes again (updated_since is inclusive) and changes nothing; the resolved one changes.
    assert (again.seen, again.changed) == (2, 1)
    assert CommunityIssue.objects.get(tg_issue_id=first["id"]).status == "resolved"
    assert SyncCursor.objects.get(stream=tg_sync.ISSUES_STREAM).value > cursor


def test_an_issue_seen_by_webhook_then_poll_is_applied_once(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()
    tg.state.create_issue({"partner_company_id": BUID, "title": "Late truck"}, emit=True)
    tg.deliver()

    result = tg_sync.issues_poll_from_tg()

    assert (result.seen, result.changed) == (1, 0)


def test_a_polled_issue_of_an_unknown_partner_is_kept_unmatched_in_the_inbox(tg):
    tg.state.create_partner(acme())
    tg.state.create_issue({"partner_company_id": BUID, "title": "Invoice short"})

    result = run(tasks.tg_issues_poll_task, tg)

    assert "unmatched=1" in result
    event = InboundEvent.objects.get()
    assert (event.event_type, event.status, event.payload["found_by"]) == ("issue.updated", EventStatus.UNMATCHED,
                                                                          "poll")
    assert not CommunityIssue.objects.exists()


# --- Lens -----------------------------------------------------------------------------------------------------


def add_failure(tg, **fields):
    (transaction,) = tg.state.add_transactions([
        {
            "status": "F",
            "senderaddress": "ZZ:PARTNERLINK",
            "receiveraddress": "ZZ:ACME",
            "editype": "856",
            "errorcode": "E7",
            "externalerrormessage": "Remote mailbox full",
            "contentkeys": {"shipment identification": "SH-1"},
            **fields,
        }
    ])
    return transaction


def test_lens_failures_become_issues_and_the_cursor_moves_on(tg):
    partner = TradingPartnerFactory(tg_company_id=BUID)
    TradingAddressFactory(partner=partner, address="ZZ:ACME")
    failure = add_failure(tg)
    tg.state.add_transactions([{"status": "C", "senderaddress": "ZZ:PARTNERLINK", "receiveraddress": "ZZ:ACME"}])

    summary = run(tasks.tg_lens_failures_poll_task, tg)

    issue = CommunityIssue.objects.get()
    assert issue.tg_issue_id == f"lens:{failure['correlationid']}"
    assert (issue.partner, issue.category, issue.asn_id) == (partner, "edi_transaction_failure", "SH-1")
    assert "seen=1" in summary and "changed=1" in summary
    cursor = SyncCursor.objects.get(stream=tg_sync.LENS_STREAM).value
    assert cursor

    again = tg_sync.lens_failures_poll_from_tg()
    assert again.changed == 0 and CommunityIssue.objects.count() == 1
    assert SyncCursor.objects.get(stream=tg_sync.LENS_STREAM).value == cursor


def test_a_functional_acknowledgement_rejection_is_an_issue_too(tg):
    partner = TradingPartnerFactory(tg_company_id=BUID)
    TradingAddressFactory(partner=partner, address="ZZ:ACME")
    add_failure(tg, status="C", fastatus="R", fastatusdate=timezone.now().isoformat())

    tg_sync.lens_failures_poll_from_tg()

    assert CommunityIssue.objects.get().reason_code == "E7"


def test_a_lens_failure_nobody_here_has_the_address_of_is_kept_unmatched(tg):
    add_failure(tg, receiveraddress="ZZ:STRANGER")

    result = run(tasks.tg_lens_failures_poll_task, tg)

    assert "unmatched=1" in result
    event = InboundEvent.objects.get()
    assert (event.event_type, event.status) == (tg_sync.LENS_FAILURE_EVENT, EventStatus.UNMATCHED)
    assert "ZZ:STRANGER" in event.outcome
    # The same failure seen again is the same inbox event.
    tg_sync.lens_failures_poll_from_tg()
    assert InboundEvent.objects.count() == 1


def test_a_transient_trading_grid_failure_is_retried_by_the_task(tg, monkeypatch):
    from connectors.tradinggrid.errors import TradingGridTransientError

    calls = []

    def unavailable():
        calls.append(1)
        if len(calls) == 1:
            raise TradingGridTransientError("HTTP 503", status=503, retry_after=1)
        return tg_sync.PollResult(stream="x")

    monkeypatch.setattr(tg_sync, "issues_poll_from_tg", unavailable)

    # throw=False: an eager retry runs again at once instead of raising Retry.
    assert tasks.tg_issues_poll_task.apply(throw=False).get().startswith("x: seen=0")
    assert len(calls) == 2


def test_refused_access_stops_the_poll_instead_of_failing_every_partner(tg):
    from connectors.tradinggrid.errors import TradingGridAuthError

    tg.state.create_partner(acme())
    tg.state.create_partner(acme(company_id="GC00800001US", name="Swift", trading_addresses=["ZZ:SWIFT"]))
    tg.state.add_faults([{"kind": "status", "status": 403, "path": "/community/v1/partners/*", "times": None}])

    with pytest.raises(TradingGridAuthError):
        tg_sync.partners_poll_from_tg()
    assert len(tg.requests("GET")) < 5  # the directory and one profile, not every partner's


@pytest.mark.parametrize(("retries", "retry_after", "low", "high"), [(0, None, 15, 30), (3, None, 120, 240),
                                                                     (10, None, 900, 1800), (0, 120, 120, 120)])
def test_task_retries_back_off_with_jitter_and_honour_retry_after(retries, retry_after, low, high):
    from types import SimpleNamespace

    from connectors.tradinggrid.errors import TradingGridTransientError

    countdowns = []
    task = SimpleNamespace(
        name="t", request=SimpleNamespace(retries=retries), retry=lambda exc, countdown: countdowns.append(countdown)
    )
    for _ in range(20):
        tasks._retry_later(task, TradingGridTransientError("503", status=503, retry_after=retry_after))

    assert all(low <= c <= high for c in countdowns)
