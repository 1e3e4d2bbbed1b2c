"""Partner contacts and segments synced to the Mailchimp emulator (flow F4)."""

import json
import re

import pytest
from django.core.management import call_command
from django.utils import timezone

from connectors.mailchimp.emulator import Fault
from connectors.mailchimp.errors import MailchimpTransientError
from partners import services
from partners.models import (
    CommunityIssue,
    Contact,
    ContactSyncState,
    MailchimpAudience,
    MemberBatch,
    MemberBatchStatus,
    ProductLine,
    Segment,
    SegmentMember,
    SyncKind,
    SyncRun,
    SyncStatus,
)
from tests.conftest import MAILCHIMP_TEST_AUDIENCE
from tests.partners.factories import CommunityIssueFactory, ContactFactory, TradingPartnerFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("mailchimp_contract")]


@pytest.fixture
def audience(mailchimp_emulator):
    return services.audience_default_ensure()


def sync(audience, kind=SyncKind.INCREMENTAL, **kwargs) -> SyncRun:
    run = services.audience_sync_start(audience=audience, kind=kind, triggered_by="test", enqueue=False, **kwargs)
    return services.audience_sync_execute(run_id=run.pk, poll_interval=0, **kwargs_for_execute())


def kwargs_for_execute():
    return {"sleep": lambda seconds: None}


def members(emulator) -> dict[str, dict]:
    return emulator.members(list_id=MAILCHIMP_TEST_AUDIENCE)


def segment_emails(emulator, segment_id) -> list[str]:
    segments = emulator.state.snapshot()["lists"][MAILCHIMP_TEST_AUDIENCE]["segments"]
    return next(s["emails"] for s in segments if s["id"] == segment_id)


def write_calls(emulator) -> list[tuple[str, str]]:
    return [
        (entry["method"], entry["path"])
        for entry in emulator.request_log
        if entry["method"] in ("POST", "PUT", "PATCH", "DELETE") and entry["path"].startswith("/3.0")
    ]


@pytest.fixture
def partners():
    dairy = ProductLine.objects.create(name="Dairy")
    acme = TradingPartnerFactory(
        name="Acme Foods", tg_company_id="GC00804444LX", partner_type="supplier", region="emea", tier="strategic"
    )
    acme.product_lines.add(dairy)
    ContactFactory(partner=acme, email="anna@acme.de", first_name="Anna", last_name="Schmidt", language="de")
    ContactFactory(partner=acme, email="ops@acme.de", first_name="Olaf", language="pt-BR")
    CommunityIssueFactory(partner=acme, status="open", category="asn_mismatch")
    swift = TradingPartnerFactory(name="Swift", tg_company_id="GC00800001US", partner_type="carrier", region="na")
    ContactFactory(partner=swift, email="dispatch@swift.com")
    ContactFactory(partner=swift, email="gone@swift.com", marketing_status="unsubscribed")
    ContactFactory(partner=swift, email="bounced@swift.com", marketing_status="cleaned", email_invalid=True)
    return acme, swift


def test_first_sync_creates_members_with_merge_fields(mailchimp_emulator, audience, partners):
    run = sync(audience)

    assert run.status == SyncStatus.SUCCEEDED, run.errors
    assert (run.created, run.updated, run.unchanged, run.failed, run.skipped) == (3, 0, 0, 0, 2)
    remote = members(mailchimp_emulator)
    assert set(remote) == {"anna@acme.de", "ops@acme.de", "dispatch@swift.com"}
    anna = remote["anna@acme.de"]
    assert anna["status"] == "subscribed"
    assert anna["language"] == "de"
    assert remote["ops@acme.de"]["language"] == "pt"
    assert anna["merge_fields"]["BUID"] == "GC00804444LX"
    assert anna["merge_fields"]["PTYPE"] == "Supplier"
    assert anna["merge_fields"]["REGION"] == "EMEA"
    assert anna["merge_fields"]["PRODLINES"] == "Dairy"
    assert anna["merge_fields"]["TIER"] == "Strategic"
    assert anna["merge_fields"]["OPENISSUES"] == 1
    assert anna["merge_fields"]["FNAME"] == "Anna"
    assert ContactSyncState.objects.filter(audience=audience, last_error="").count() == 3
    assert MemberBatch.objects.get().status == MemberBatchStatus.FINISHED


def test_unsubscribed_and_cleaned_contacts_are_never_sent(mailchimp_emulator, audience, partners, sent_bodies):
    sync(audience)

    assert not any("gone@swift.com" in body or "bounced@swift.com" in body for body in sent_bodies)
    operations = [op for body in sent_bodies if '"operations"' in body for op in json.loads(body)["operations"]]
    assert len(operations) == 3
    assert all(op["method"] == "PUT" and "status" not in json.loads(op["body"]) for op in operations)
    assert {json.loads(op["body"])["status_if_new"] for op in operations} == {"subscribed"}


def test_an_unchanged_database_makes_no_write_calls(mailchimp_emulator, audience, partners):
    sync(audience)
    before = len(write_calls(mailchimp_emulator))

    run = sync(audience)

    assert write_calls(mailchimp_emulator)[before:] == []
    assert (run.created, run.updated, run.unchanged) == (0, 0, 3)


def test_incremental_sync_sends_only_what_changed(mailchimp_emulator, audience, partners):
    acme, swift = partners
    sync(audience)
    acme.tier = "preferred"
    acme.save()
    ContactFactory(partner=swift, email="night@swift.com")

    run = sync(audience)

    assert (run.created, run.updated, run.unchanged) == (1, 2, 1)
    assert members(mailchimp_emulator)["anna@acme.de"]["merge_fields"]["TIER"] == "Preferred"


def test_a_new_open_issue_changes_the_partners_members(mailchimp_emulator, audience, partners):
    acme, _ = partners
    sync(audience)
    CommunityIssueFactory(partner=acme, status="open")

    run = sync(audience)

    assert run.updated == 2
    assert members(mailchimp_emulator)["anna@acme.de"]["merge_fields"]["OPENISSUES"] == 2


def test_an_existing_unsubscribed_member_keeps_its_status(mailchimp_emulator, audience, partners):
    mailchimp_emulator.add_member(list_id=MAILCHIMP_TEST_AUDIENCE, email="dispatch@swift.com", status="unsubscribed")

    sync(audience)

    assert members(mailchimp_emulator)["dispatch@swift.com"]["status"] == "unsubscribed"


def test_refused_members_are_recorded_and_not_resent_until_they_change(mailchimp_emulator, audience, partners):
    mailchimp_emulator.add_member(list_id=MAILCHIMP_TEST_AUDIENCE, email="dispatch@swift.com")
    mailchimp_emulator.forget_member(list_id=MAILCHIMP_TEST_AUDIENCE, email="dispatch@swift.com")

    run = sync(audience)

    assert run.failed == 1
    assert "Forgotten Email Not Subscribed" in run.errors[0]
    state = ContactSyncState.objects.get(contact__email="dispatch@swift.com")
    assert "Forgotten Email Not Subscribed" in state.last_error
    before = len(write_calls(mailchimp_emulator))
    assert sync(audience).failed == 0
    assert write_calls(mailchimp_emulator)[before:] == []


def test_segments_become_static_segments_synced_by_diffs(mailchimp_emulator, audience, partners):
    acme, swift = partners
    suppliers = Segment.objects.create(name="EMEA suppliers", audience=audience, partner_types=["supplier"],
                                       regions=["emea"])
    sync(audience)

    suppliers.refresh_from_db()
    remote = mailchimp_emulator.state.snapshot()["lists"][MAILCHIMP_TEST_AUDIENCE]["segments"]
    assert [s["name"] for s in remote] == ["EMEA suppliers"]
    assert (suppliers.member_count, suppliers.remote_member_count) == (2, 2)
    assert segment_emails(mailchimp_emulator, suppliers.mailchimp_segment_id) == ["anna@acme.de", "ops@acme.de"]

    Contact.objects.filter(email="ops@acme.de").update(marketing_status="unsubscribed")
    swift.partner_type, swift.region = "supplier", "emea"
    swift.save()
    before = len(write_calls(mailchimp_emulator))
    sync(audience)

    segment_calls = [c for c in write_calls(mailchimp_emulator)[before:] if "/segments/" in c[1]]
    assert len(segment_calls) == 1
    assert segment_emails(mailchimp_emulator, suppliers.mailchimp_segment_id) == ["anna@acme.de", "dispatch@swift.com"]


def test_a_run_killed_midway_resumes_without_resending(mailchimp_emulator, audience, partners, monkeypatch):
    from partners import audience_sync

    def die(self, *, until):
        raise KeyboardInterrupt("worker killed")

    monkeypatch.setattr(audience_sync.AudienceSync, "_wait_for_batches", die)
    run = services.audience_sync_start(audience=audience, enqueue=False)
    with pytest.raises(KeyboardInterrupt):
        services.audience_sync_execute(run_id=run.pk, poll_interval=0)
    monkeypatch.undo()
    assert MemberBatch.objects.get().status == MemberBatchStatus.SUBMITTED
    ContactFactory(partner=partners[0], email="late@acme.de")  # a change made while it ran

    SyncRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - services.STALE_SYNC_RUN * 2)
    resumed = sync(audience)

    puts = [c for c in write_calls(mailchimp_emulator) if c[0] == "POST" and c[1] == "/3.0/batches"]
    assert len(puts) == 2  # the first run's batch, then only the new contact
    assert resumed.created == 4
    assert set(members(mailchimp_emulator)) == {"anna@acme.de", "ops@acme.de", "dispatch@swift.com", "late@acme.de"}
    assert SyncRun.objects.get(pk=run.pk).status == SyncStatus.ABANDONED


def test_one_run_at_a_time_per_audience(audience):
    first = services.audience_sync_start(audience=audience, enqueue=False)
    second = services.audience_sync_start(audience=audience, enqueue=False)

    assert first == second


def test_a_transient_failure_requeues_the_run(mailchimp_emulator, audience, partners):
    mailchimp_emulator.faults.add(Fault(status=503, empty_body=True, path="/batches", method="POST", times=1))
    run = services.audience_sync_start(audience=audience, enqueue=False)

    with pytest.raises(MailchimpTransientError):
        services.audience_sync_execute(run_id=run.pk, poll_interval=0)
    run.refresh_from_db()
    assert run.status == SyncStatus.QUEUED

    finished = services.audience_sync_execute(run_id=run.pk, poll_interval=0)
    assert finished.status == SyncStatus.SUCCEEDED
    assert finished.created == 3


def api_calls(emulator) -> int:
    return sum(1 for entry in emulator.request_log if entry["path"].startswith("/3.0"))


def test_batches_are_sent_while_earlier_ones_are_polled(mailchimp_emulator, audience, partners, monkeypatch):
    from partners import audience_sync

    monkeypatch.setattr(audience_sync, "BATCH_MEMBERS", 1)
    monkeypatch.setattr(audience_sync, "POLL_EVERY_BATCHES", 1)
    monkeypatch.setattr(audience_sync, "CALLS_AHEAD", 1)  # each answer is in before the next batch goes out

    run = sync(audience)

    assert run.status == SyncStatus.SUCCEEDED, run.errors
    assert (run.created, run.failed) == (3, 0)
    assert set(members(mailchimp_emulator)) == {"anna@acme.de", "ops@acme.de", "dispatch@swift.com"}
    assert MemberBatch.objects.filter(status=MemberBatchStatus.FINISHED).count() == 3
    polls = [e for e in mailchimp_emulator.request_log if (e["method"], e["path"]) == ("GET", "/3.0/batches")]
    submissions = [i for i, e in enumerate(mailchimp_emulator.request_log) if e["method"] == "POST"]
    first_poll = next(i for i, e in enumerate(mailchimp_emulator.request_log) if e["path"] == "/3.0/batches"
                      and e["method"] == "GET")
    assert first_poll < submissions[-1]  # polled while still sending
    assert len(polls) >= 2
    assert run.calls == api_calls(mailchimp_emulator)


def test_a_failure_while_sending_keeps_the_batches_mailchimp_accepted(
    mailchimp_emulator, audience, partners, monkeypatch
):
    from connectors.mailchimp.client import MailchimpClient
    from partners import audience_sync

    monkeypatch.setattr(audience_sync, "BATCH_MEMBERS", 1)
    send = MailchimpClient.start_member_upsert_batch
    sent = []

    def second_one_fails(self, **kwargs):
        sent.append(kwargs)
        if len(sent) == 2:
            mailchimp_emulator.faults.add(Fault(status=503, path="/batches", method="POST"))
        return send(self, **kwargs)

    monkeypatch.setattr(MailchimpClient, "start_member_upsert_batch", second_one_fails)
    run = services.audience_sync_start(audience=audience, enqueue=False)
    with pytest.raises(MailchimpTransientError):
        services.audience_sync_execute(run_id=run.pk, poll_interval=0, sleep=lambda seconds: None)
    monkeypatch.undo()
    monkeypatch.setattr(audience_sync, "BATCH_MEMBERS", 1)

    def accepted_batches():
        return [e for e in mailchimp_emulator.request_log if (e["method"], e["path"]) == ("POST", "/3.0/batches")
                and e["status"] == 200]

    # Every batch Mailchimp accepted is in the ledger, even those answered after the failure.
    assert MemberBatch.objects.count() == len(accepted_batches()) >= 1

    finished = services.audience_sync_execute(run_id=run.pk, poll_interval=0, sleep=lambda seconds: None)

    assert finished.status == SyncStatus.SUCCEEDED, finished.errors
    assert set(members(mailchimp_emulator)) == {"anna@acme.de", "ops@acme.de", "dispatch@swift.com"}
    assert len(accepted_batches()) == 3  # nobody was sent twice
    assert sorted(batch.members[0][1] for batch in MemberBatch.objects.all()) == [
        "anna@acme.de", "dispatch@swift.com", "ops@acme.de"
    ]
    assert finished.created == 3


def test_many_segment_changes_go_in_one_batch(mailchimp_emulator, audience, partners, monkeypatch, sent_bodies):
    from partners import audience_sync

    monkeypatch.setattr(audience_sync, "SEGMENT_CHANGES_ONE_BY_ONE", 0)
    acme, swift = partners
    emea = Segment.objects.create(name="EMEA", audience=audience, regions=["emea"])
    carriers = Segment.objects.create(name="Carriers", audience=audience, partner_types=["carrier"])

    run = sync(audience)

    assert run.status == SyncStatus.SUCCEEDED, run.errors
    emea.refresh_from_db()
    carriers.refresh_from_db()
    assert segment_emails(mailchimp_emulator, emea.mailchimp_segment_id) == ["anna@acme.de", "ops@acme.de"]
    assert segment_emails(mailchimp_emulator, carriers.mailchimp_segment_id) == ["dispatch@swift.com"]
    assert (emea.member_count, emea.remote_member_count) == (2, 2)
    assert (carriers.member_count, carriers.remote_member_count) == (1, 1)
    assert not [c for c in write_calls(mailchimp_emulator) if re.search(r"/segments/\d+$", c[1])]
    operations = [op for body in sent_bodies if '"operations"' in body for op in json.loads(body)["operations"]]
    assert sorted(op["path"] for op in operations if "/segments/" in op["path"]) == sorted(
        f"/lists/{MAILCHIMP_TEST_AUDIENCE}/segments/{segment.mailchimp_segment_id}" for segment in (emea, carriers)
    )
    # One more download than API calls: the batch results, from storage rather than the API.
    assert run.calls == api_calls(mailchimp_emulator) + 1

    swift.region = "emea"
    swift.save()
    run = sync(audience)

    assert segment_emails(mailchimp_emulator, emea.mailchimp_segment_id) == [
        "anna@acme.de", "dispatch@swift.com", "ops@acme.de"
    ]
    assert sorted(SegmentMember.objects.filter(segment=emea).values_list("email", flat=True)) == [
        "anna@acme.de", "dispatch@swift.com", "ops@acme.de"
    ]


def test_a_segment_change_refused_in_a_batch_fails_the_run(mailchimp_emulator, audience, partners, monkeypatch):
    from partners import audience_sync

    acme, swift = partners
    emea = Segment.objects.create(name="EMEA", audience=audience, regions=["emea"])
    carriers = Segment.objects.create(name="Carriers", audience=audience, partner_types=["carrier"])
    sync(audience)
    emea.refresh_from_db()
    with mailchimp_emulator.state.lock:  # someone deleted the static segment in Mailchimp
        del mailchimp_emulator.state.audiences[MAILCHIMP_TEST_AUDIENCE].segments[emea.mailchimp_segment_id]
    monkeypatch.setattr(audience_sync, "SEGMENT_CHANGES_ONE_BY_ONE", 0)
    swift.region, swift.partner_type = "emea", "supplier"
    swift.save()
    ContactFactory(partner=TradingPartnerFactory(partner_type="carrier", region="na"), email="new@carrier.example")

    run = sync(audience)

    assert run.status == SyncStatus.FAILED
    assert any("Mailchimp refused" in error and "EMEA" in error for error in run.errors), run.errors
    # The refused segment keeps its old base for the next diff; the other one was recorded.
    assert sorted(SegmentMember.objects.filter(segment=emea).values_list("email", flat=True)) == [
        "anna@acme.de", "ops@acme.de"
    ]
    assert sorted(SegmentMember.objects.filter(segment=carriers).values_list("email", flat=True)) == [
        "new@carrier.example"
    ]


def test_full_sync_reads_unsubscribes_back(mailchimp_emulator, audience, partners):
    sync(audience)
    mailchimp_emulator.unsubscribe_member(list_id=MAILCHIMP_TEST_AUDIENCE, email="anna@acme.de")

    run = sync(audience, kind=SyncKind.FULL)

    assert Contact.objects.get(email="anna@acme.de").marketing_status == "unsubscribed"
    assert run.skipped == 3
    assert members(mailchimp_emulator)["anna@acme.de"]["status"] == "unsubscribed"


def test_sync_audience_command_prints_the_summary(mailchimp_emulator, audience, partners, capsys):
    call_command("sync_audience")
    call_command("sync_audience")

    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("calls=")]
    # merge fields: one read and nine creations (FNAME, LNAME exist); one batch; two polls until it finished
    assert re.fullmatch(r"calls=13 created=3 updated=0 unchanged=0 failed=0 seconds=\d+\.\d", lines[0])
    # nothing changed: only the merge-field read
    assert re.fullmatch(r"calls=1 created=0 updated=0 unchanged=3 failed=0 seconds=\d+\.\d", lines[1])


def test_default_audience_comes_from_settings(settings, mailchimp_emulator):
    audience = services.audience_default_ensure()

    assert (audience.list_id, audience.is_default) == (settings.MAILCHIMP_AUDIENCE_ID, True)
    assert services.audience_default_ensure() == audience
    assert MailchimpAudience.objects.count() == 1


def test_issue_history_rules_select_partners(audience):
    recent = TradingPartnerFactory(name="Recent")
    CommunityIssueFactory(partner=recent, category="chargeback_dispute", status="open")
    old = TradingPartnerFactory(name="Old")
    CommunityIssueFactory(partner=old, category="chargeback_dispute", status="open",
                          raised_at=timezone.now() - timezone.timedelta(days=90))
    busy = TradingPartnerFactory(name="Busy")
    CommunityIssueFactory.create_batch(3, partner=busy, status="closed")
    segment = Segment.objects.create(name="Disputes", audience=audience, issue_categories=["chargeback_dispute"],
                                     issue_within_days=30)
    frequent = Segment.objects.create(name="Frequent", audience=audience, min_issue_count=3)

    from partners.selectors import segment_partners

    assert [p.name for p in segment_partners(segment)] == ["Recent"]
    assert [p.name for p in segment_partners(frequent)] == ["Busy"]
    assert CommunityIssue.objects.count() == 5


def test_product_lines_any_or_all(audience):
    dairy, frozen = ProductLine.objects.create(name="Dairy"), ProductLine.objects.create(name="Frozen")
    both = TradingPartnerFactory(name="Both")
    both.product_lines.set([dairy, frozen])
    one = TradingPartnerFactory(name="One")
    one.product_lines.set([dairy])
    TradingPartnerFactory(name="None")
    any_segment = Segment.objects.create(name="Any", audience=audience)
    any_segment.product_lines.set([dairy, frozen])
    all_segment = Segment.objects.create(name="All", audience=audience, product_lines_match="all")
    all_segment.product_lines.set([dairy, frozen])

    from partners.selectors import segment_partners

    assert sorted(p.name for p in segment_partners(any_segment)) == ["Both", "One"]
    assert [p.name for p in segment_partners(all_segment)] == ["Both"]


@pytest.fixture
def sent_bodies():
    from connectors.mailchimp.client import request_observers

    bodies: list[str] = []

    def record(request):
        bodies.append(request.body or "")

    request_observers.append(record)
    yield bodies
    request_observers.remove(record)


def test_an_operation_mailchimp_could_not_do_now_is_sent_again_by_the_next_sync(
    mailchimp_emulator, audience, partners, monkeypatch
):
    from connectors.mailchimp.payloads import subscriber_hash

    busy = subscriber_hash("ops@acme.de")
    real = mailchimp_emulator._run_operation

    def sometimes_busy(operation, *, base_url):
        if operation["path"].endswith(busy):
            return {"status_code": 503, "operation_id": operation["operation_id"], "response": "{}"}
        return real(operation, base_url=base_url)

    monkeypatch.setattr(mailchimp_emulator, "_run_operation", sometimes_busy)
    first = sync(audience)
    assert (first.created, first.failed) == (2, 1)
    assert not ContactSyncState.objects.filter(contact__email="ops@acme.de").exists()

    monkeypatch.undo()
    second = sync(audience)
    assert (second.created, second.unchanged, second.failed) == (1, 2, 0)
    assert "ops@acme.de" in members(mailchimp_emulator)
