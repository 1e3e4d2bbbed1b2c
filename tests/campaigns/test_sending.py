"""Approved communications handed to the Mailchimp emulator by the real tasks (run eagerly): exactly one
campaign per communication whatever runs twice, retries on transient failures, Mailchimp's reason on
refusals, quarter-hour scheduling, cancellation, test emails, the relay and the delivery check."""

import datetime as dt

import pytest
from celery.exceptions import Retry
from django.utils import timezone

from campaigns import services, tasks
from campaigns.models import (
    CampaignSend,
    Communication,
    CommunicationState,
    CommunicationTestEmail,
    EmailTestStatus,
    SendStatus,
)
from connectors.mailchimp.emulator import Fault
from partners.models import Segment, SyncRun
from tests.conftest import MAILCHIMP_TEST_AUDIENCE
from tests.partners.factories import ContactFactory, TradingPartnerFactory

from .conftest import new_communication, sync_audience

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("mailchimp_contract", "eager_tasks")]
S = CommunicationState


@pytest.fixture
def synced(mailchimp_emulator, audience, suppliers, carriers, partners):
    """Contacts and both segments in Mailchimp."""
    run = sync_audience(audience)
    assert run.status == "succeeded", run.errors
    return suppliers, carriers


def campaigns(emulator) -> list:
    return list(emulator.state.campaigns.values())


def api_calls(emulator, method: str, suffix: str) -> list[str]:
    return [e["path"] for e in emulator.request_log if e["method"] == method and e["path"].endswith(suffix)]


def submit(communication, author, capture):
    with capture(execute=True):
        return services.communication_submit(communication_id=communication.pk, actor=author)


def approve(communication, approver, capture):
    with capture(execute=True):
        return services.communication_approve(communication_id=communication.pk, actor=approver)


def reload(communication) -> Communication:
    return Communication.objects.select_related("send").get(pk=communication.pk)


# --- submit: the Mailchimp draft for the approver -------------------------------------------------------------


def test_submit_creates_the_draft_with_the_combined_segment_checklist_and_rendering(
    mailchimp_emulator, synced, author, audience, django_capture_on_commit_callbacks
):
    suppliers, carriers = synced
    communication = new_communication(author, audience, [suppliers, carriers])

    submit(communication, author, django_capture_on_commit_callbacks)

    send = reload(communication).send
    [campaign] = campaigns(mailchimp_emulator)
    assert campaign.status == "save"
    assert (send.mailchimp_campaign_id, reload(communication).mailchimp_campaign_id) == (campaign.id, campaign.id)
    assert campaign.settings["subject_line"] == "New trading terms"
    assert campaign.settings["title"] == f"Partnerlink #{communication.pk}: New trading terms"
    # One static segment for the communication: both segments' members, each address once.
    segment = mailchimp_emulator.state.audiences[MAILCHIMP_TEST_AUDIENCE].segments[send.mailchimp_segment_id]
    assert campaign.segment_id == send.mailchimp_segment_id
    assert segment.name == f"Partnerlink communication #{communication.pk}"
    emails = sorted(m.email for m in mailchimp_emulator.state.recipients(campaign))
    assert emails == ["anna@acme.example", "dispatch@swift.example", "ops@dairy.example"]
    assert send.recipient_count == 3
    assert send.checklist["is_ready"] is True
    assert "Read them" in send.rendered_html
    assert send.status == SendStatus.IDLE


def test_a_refused_draft_is_shown_without_changing_the_state(
    mailchimp_emulator, synced, author, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    Communication.objects.filter(pk=communication.pk).update(reply_to="partners at example")  # Mailchimp says no

    submit(communication, author, django_capture_on_commit_callbacks)

    communication = reload(communication)
    assert communication.state == S.SUBMITTED
    assert "settings.reply_to: This value should be a valid email." in communication.send.last_error


# --- approve: exactly one campaign, sent --------------------------------------------------------------------


def test_approve_sends_exactly_one_campaign_to_the_segments(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, list(synced))
    submit(communication, author, django_capture_on_commit_callbacks)

    approve(communication, approver, django_capture_on_commit_callbacks)

    communication = reload(communication)
    [campaign] = campaigns(mailchimp_emulator)
    assert communication.state == S.SENT
    assert communication.sent_at is not None
    assert campaign.status == "sent"
    assert len(campaign.report.recipients) == 3
    assert communication.send.status == SendStatus.DONE
    assert communication.send.attempts == 1
    assert len(api_calls(mailchimp_emulator, "POST", "/actions/send")) == 1
    assert [t.to_state for t in communication.transitions.all()][-1] == S.SENT
    assert communication.transitions.last().actor is None  # Partnerlink did it


def test_a_communication_never_submitted_through_prepare_is_created_at_send(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    services.communication_submit(communication_id=communication.pk, actor=author)  # prepare task never ran

    approve(communication, approver, django_capture_on_commit_callbacks)

    assert reload(communication).state == S.SENT
    assert len(campaigns(mailchimp_emulator)) == 1


def test_running_the_send_task_twice_still_makes_one_campaign(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    submit(communication, author, django_capture_on_commit_callbacks)
    approve(communication, approver, django_capture_on_commit_callbacks)
    send = reload(communication).send

    tasks.communication_send_task.apply(args=[send.pk])
    tasks.communication_send_task.apply(args=[send.pk])

    assert len(campaigns(mailchimp_emulator)) == 1
    assert len(api_calls(mailchimp_emulator, "POST", "/actions/send")) == 1
    assert reload(communication).state == S.SENT


def test_a_crash_after_mailchimp_sent_but_before_it_was_recorded_does_not_send_again(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    submit(communication, author, django_capture_on_commit_callbacks)
    approve(communication, approver, django_capture_on_commit_callbacks)
    # As if the worker died between Mailchimp's 204 and our commit: the ledger still says pending.
    Communication.objects.filter(pk=communication.pk).update(state=S.APPROVED, sent_at=None)
    CampaignSend.objects.filter(communication=communication).update(status=SendStatus.PENDING)

    tasks.communication_send_task.apply(args=[reload(communication).send.pk])

    assert len(campaigns(mailchimp_emulator)) == 1
    assert len(api_calls(mailchimp_emulator, "POST", "/actions/send")) == 1  # Mailchimp's status was checked
    assert reload(communication).state == S.SENT


def test_a_transient_failure_retries_and_reuses_the_campaign(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    services.communication_submit(communication_id=communication.pk, actor=author)
    # The campaign is created, then setting its content answers 503 once.
    mailchimp_emulator.faults.add(Fault(status=503, method="PUT", path="/campaigns/", times=1))

    with pytest.raises(Retry):
        approve(communication, approver, django_capture_on_commit_callbacks)

    communication = reload(communication)
    assert communication.state == S.APPROVED
    assert communication.send.last_error.startswith("will retry: PUT /3.0/campaigns/")
    assert communication.send.next_attempt_at > timezone.now()
    assert len(campaigns(mailchimp_emulator)) == 1

    tasks.communication_send_task.apply(args=[communication.send.pk], retries=1)  # the worker, after the countdown

    communication = reload(communication)
    assert communication.state == S.SENT
    assert len(campaigns(mailchimp_emulator)) == 1
    assert len(api_calls(mailchimp_emulator, "POST", "/campaigns")) == 1
    assert communication.send.attempts == 2
    assert communication.send.last_error == ""


def test_a_429_with_retry_after_is_honoured_in_the_countdown(monkeypatch, approved):
    from connectors.mailchimp.errors import MailchimpTransientError

    send = CampaignSend.objects.get(communication=approved)
    countdowns = []

    def fail(**kwargs):
        raise MailchimpTransientError("busy", status=429, retry_after=120)

    monkeypatch.setattr(services, "communication_send_execute", fail)
    monkeypatch.setattr(
        tasks.communication_send_task, "retry", lambda **kw: countdowns.append(kw["countdown"]) or Retry()
    )

    with pytest.raises(Retry):
        tasks.communication_send_task.run(send.pk)

    assert countdowns and countdowns[0] >= 120
    assert CampaignSend.objects.get(pk=send.pk).next_attempt_at > timezone.now() + dt.timedelta(seconds=100)


def test_giving_up_after_the_retries_marks_it_failed(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    services.communication_submit(communication_id=communication.pk, actor=author)
    mailchimp_emulator.faults.add(Fault(status=503, method="POST", path="/lists/", times=None))
    with pytest.raises(Retry):
        approve(communication, approver, django_capture_on_commit_callbacks)

    last = tasks.communication_send_task.max_retries
    tasks.communication_send_task.apply(args=[reload(communication).send.pk], retries=last)

    communication = reload(communication)
    assert communication.state == S.FAILED
    assert communication.failure_reason.startswith(f"Gave up after {last} retries")
    assert communication.send.status == SendStatus.FAILED
    assert campaigns(mailchimp_emulator) == []


def test_a_permanent_failure_marks_it_failed_with_mailchimps_reason(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    services.communication_submit(communication_id=communication.pk, actor=author)
    Communication.objects.filter(pk=communication.pk).update(reply_to="partners at example")

    approve(communication, approver, django_capture_on_commit_callbacks)

    communication = reload(communication)
    assert communication.state == S.FAILED
    reason = communication.failure_reason
    assert "400 Invalid Resource" in reason
    assert "The resource submitted could not be validated" in reason
    assert "settings.reply_to: This value should be a valid email." in reason
    assert communication.send.status == SendStatus.FAILED
    assert communication.send.attempts == 1  # a refusal is not retried
    step = communication.transitions.last()
    assert (step.from_state, step.to_state, step.comment) == (S.APPROVED, S.FAILED, reason)


def test_mailchimp_refusing_to_send_an_empty_segment_is_a_failure_and_a_retry_reuses_the_campaign(
    mailchimp_emulator, synced, author, approver, second_approver, audience, django_capture_on_commit_callbacks
):
    nobody = Segment.objects.create(name="Nobody", audience=audience, partner_types=["reseller"])
    sync_audience(audience)
    communication = new_communication(author, audience, [nobody])
    submit(communication, author, django_capture_on_commit_callbacks)

    approve(communication, approver, django_capture_on_commit_callbacks)

    communication = reload(communication)
    assert communication.state == S.FAILED
    assert "not ready to send" in communication.failure_reason
    assert "no subscribed contacts" in communication.failure_reason

    # Fix it in Mailchimp's terms (someone joins the segment), then an approver retries.
    Communication.objects.filter(pk=communication.pk).update(submitted_by=author)
    nobody.partner_types = ["supplier"]
    nobody.save()
    sync_audience(audience)
    with django_capture_on_commit_callbacks(execute=True):
        services.communication_retry(communication_id=communication.pk, actor=second_approver)

    assert reload(communication).state == S.SENT
    assert len(campaigns(mailchimp_emulator)) == 1


def test_a_segment_never_synced_starts_a_sync_and_the_send_waits_for_it(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    late = Segment.objects.create(name="Dairy suppliers", audience=audience, partner_types=["supplier"])
    communication = new_communication(author, audience, [late])
    services.communication_submit(communication_id=communication.pk, actor=author)

    with pytest.raises(Retry):
        approve(communication, approver, django_capture_on_commit_callbacks)

    communication = reload(communication)
    assert communication.state == S.APPROVED
    assert "Dairy suppliers (never synced)" in communication.send.last_error
    run = SyncRun.objects.get(triggered_by=f"communication #{communication.pk}")
    assert campaigns(mailchimp_emulator) == []

    assert sync_audience(audience).pk == run.pk  # the worker runs the sync the send started
    tasks.communication_send_task.apply(args=[communication.send.pk], retries=1)

    communication = reload(communication)
    assert communication.state == S.SENT
    [campaign] = campaigns(mailchimp_emulator)
    assert len(campaign.report.recipients) == 2


def test_a_campaign_someone_cancelled_in_mailchimp_is_a_failure_not_a_send(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    submit(communication, author, django_capture_on_commit_callbacks)
    [campaign] = campaigns(mailchimp_emulator)
    campaign.status = "canceled"

    approve(communication, approver, django_capture_on_commit_callbacks)

    communication = reload(communication)
    assert communication.state == S.FAILED
    assert f"Mailchimp holds campaign {campaign.id} as “canceled”" in communication.failure_reason
    assert api_calls(mailchimp_emulator, "POST", "/actions/send") == []


# --- scheduling ----------------------------------------------------------------------------------------


def test_a_schedule_time_is_rounded_up_to_the_quarter_hour_and_scheduled(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    wanted = (timezone.now() + dt.timedelta(days=2)).replace(hour=9, minute=7, second=30, microsecond=0)
    communication = new_communication(author, audience, [synced[0]], schedule_time=wanted)
    submit(communication, author, django_capture_on_commit_callbacks)

    approve(communication, approver, django_capture_on_commit_callbacks)

    communication = reload(communication)
    slot = wanted.replace(minute=15, second=0)
    [campaign] = campaigns(mailchimp_emulator)
    assert (communication.state, communication.scheduled_for) == (S.SCHEDULED, slot)
    assert (campaign.status, campaign.schedule_time) == ("schedule", slot)
    assert "rounded up to the quarter hour" in communication.transitions.last().comment
    assert api_calls(mailchimp_emulator, "POST", "/actions/send") == []

    # Mailchimp sends it when the slot comes; the delivery check records it.
    mailchimp_emulator.send_campaign_now(campaign_id=campaign.id, send_time=slot)
    assert services.communications_refresh_delivery(now=slot + dt.timedelta(minutes=5)) == 1
    communication = reload(communication)
    assert (communication.state, communication.sent_at) == (S.SENT, slot)


def test_a_schedule_time_already_past_is_sent_at_once(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(
        author, audience, [synced[0]], schedule_time=timezone.now() - dt.timedelta(hours=1)
    )
    services.communication_submit(communication_id=communication.pk, actor=author)

    approve(communication, approver, django_capture_on_commit_callbacks)

    assert reload(communication).state == S.SENT


def test_cancelling_a_scheduled_one_unschedules_it_in_mailchimp(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    wanted = timezone.now() + dt.timedelta(days=1)
    communication = new_communication(author, audience, [synced[0]], schedule_time=wanted)
    services.communication_submit(communication_id=communication.pk, actor=author)
    approve(communication, approver, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        services.communication_cancel(communication_id=communication.pk, actor=author, comment="Date moved")

    communication = reload(communication)
    [campaign] = campaigns(mailchimp_emulator)
    assert communication.state == S.CANCELLED
    assert campaign.status == "save"
    step = communication.transitions.last()
    assert (step.actor, step.comment) == (author, "Unscheduled in Mailchimp. Date moved")
    assert communication.send.status == SendStatus.CANCELLED


def test_cancelling_too_late_records_that_mailchimp_sent_it(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(
        author, audience, [synced[0]], schedule_time=timezone.now() + dt.timedelta(days=1)
    )
    services.communication_submit(communication_id=communication.pk, actor=author)
    approve(communication, approver, django_capture_on_commit_callbacks)
    mailchimp_emulator.send_campaign_now(campaign_id=reload(communication).mailchimp_campaign_id)

    with django_capture_on_commit_callbacks(execute=True):
        services.communication_cancel(communication_id=communication.pk, actor=author)

    communication = reload(communication)
    assert communication.state == S.SENT
    assert "Too late to cancel" in communication.transitions.last().comment


def test_the_delivery_check_records_a_send_mailchimp_finished_later(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks, monkeypatch
):
    communication = new_communication(author, audience, [synced[0]])
    services.communication_submit(communication_id=communication.pk, actor=author)
    # Right after the send, Mailchimp's status can't be read: the communication stays `sending`.
    monkeypatch.setattr(services, "_status_after_send", lambda client, campaign_id: ("sending", None))

    approve(communication, approver, django_capture_on_commit_callbacks)
    assert reload(communication).state == S.SENDING

    assert services.communications_refresh_delivery() == 1
    assert reload(communication).state == S.SENT
    assert services.communications_refresh_delivery() == 0


# --- the relay --------------------------------------------------------------------------------------------


def test_the_relay_re_enqueues_an_approved_send_whose_message_was_lost(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    services.communication_submit(communication_id=communication.pk, actor=author)
    services.communication_approve(communication_id=communication.pk, actor=approver)  # message never delivered
    later = timezone.now() + dt.timedelta(minutes=5)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.campaign_sends_relay_stuck(now=later) == 1

    assert reload(communication).state == S.SENT
    assert services.campaign_sends_relay_stuck(now=later + dt.timedelta(minutes=5)) == 0


def test_the_relay_leaves_fresh_rows_rows_waiting_for_a_retry_and_leased_rows_alone(approved):
    send = CampaignSend.objects.get(communication=approved)
    now = timezone.now()
    assert services.campaign_sends_relay_stuck(now=now) == 0  # just queued

    CampaignSend.objects.filter(pk=send.pk).update(next_attempt_at=now + dt.timedelta(minutes=10))
    assert services.campaign_sends_relay_stuck(now=now + dt.timedelta(minutes=5)) == 0

    CampaignSend.objects.filter(pk=send.pk).update(
        next_attempt_at=None, lease_owner="w", lease_expires_at=now + dt.timedelta(minutes=30)
    )
    assert services.campaign_sends_relay_stuck(now=now + dt.timedelta(minutes=5)) == 0

    CampaignSend.objects.filter(pk=send.pk).update(lease_owner="", lease_expires_at=None)
    assert services.campaign_sends_relay_stuck(now=now + dt.timedelta(minutes=5)) == 1


def test_the_relay_gives_up_test_emails_older_than_an_hour(approved, author):
    test_email = CommunicationTestEmail.objects.create(
        communication=approved, email="me@example.com", requested_by=author, queued_at=timezone.now()
    )
    CommunicationTestEmail.objects.filter(pk=test_email.pk).update(
        created_at=timezone.now() - dt.timedelta(hours=2), queued_at=timezone.now() - dt.timedelta(hours=2)
    )
    services.campaign_sends_relay_stuck()
    test_email.refresh_from_db()
    assert test_email.status == EmailTestStatus.FAILED


# --- test emails ------------------------------------------------------------------------------------------


def test_a_test_email_goes_to_the_person_asking_through_mailchimp(
    mailchimp_emulator, synced, author, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])  # a draft: Mailchimp's draft made now

    with django_capture_on_commit_callbacks(execute=True):
        test_email = services.communication_test_email_request(communication_id=communication.pk, actor=author)

    test_email.refresh_from_db()
    assert test_email.status == EmailTestStatus.SENT
    [campaign] = campaigns(mailchimp_emulator)
    assert [s["emails"] for s in mailchimp_emulator.test_sends(campaign_id=campaign.id)] == [[author.email]]
    assert campaign.status == "save"
    assert reload(communication).state == S.DRAFT


def test_a_test_email_mailchimp_refuses_shows_why(
    mailchimp_emulator, synced, author, audience, django_capture_on_commit_callbacks
):
    communication = new_communication(author, audience, [synced[0]])
    mailchimp_emulator.faults.add(Fault(status=400, method="POST", path="/campaigns/", times=None))

    with django_capture_on_commit_callbacks(execute=True):
        test_email = services.communication_test_email_request(communication_id=communication.pk, actor=author)

    test_email.refresh_from_db()
    assert test_email.status == EmailTestStatus.FAILED
    assert "Mailchimp refused (400" in test_email.error


def test_template_content_is_sent_as_a_template_with_its_sections(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    template = mailchimp_emulator.add_template(name="Partner news", html='<div mc:edit="body">x</div>')
    communication = new_communication(
        author, audience, [synced[0]], html_body="", template_id=template["id"], template_sections={"body": "Hi"}
    )
    submit(communication, author, django_capture_on_commit_callbacks)
    assert reload(communication).send.rendered_html == '<div mc:edit="body">Hi</div>'

    approve(communication, approver, django_capture_on_commit_callbacks)

    [campaign] = campaigns(mailchimp_emulator)
    assert (campaign.template_id, campaign.status) == (template["id"], "sent")


def test_resubmitting_after_an_edit_updates_the_same_mailchimp_draft(
    mailchimp_emulator, synced, author, approver, audience, django_capture_on_commit_callbacks
):
    suppliers, carriers = synced
    communication = new_communication(author, audience, [suppliers])
    submit(communication, author, django_capture_on_commit_callbacks)
    services.communication_update(
        communication_id=communication.pk,
        actor=author,
        changes={"subject": "Trading terms 2031", "html_body": "<p>v2</p>"},
        segments=[carriers],
    )

    submit(communication, author, django_capture_on_commit_callbacks)

    [campaign] = campaigns(mailchimp_emulator)
    assert campaign.settings["subject_line"] == "Trading terms 2031"
    assert campaign.html == "<p>v2</p>"
    assert [m.email for m in mailchimp_emulator.state.recipients(campaign)] == [
        "anna@acme.example",
        "dispatch@swift.example",
    ]


# --- two workers at once (PostgreSQL: real concurrent connections) ------------------------------------------


def _groups_after_a_flush():
    """Another transactional test may have flushed the groups the data migrations made: make them again."""
    from importlib import import_module

    from django.contrib.auth.models import Group, Permission

    granted = import_module("campaigns.migrations.0002_group_permissions").GROUP_PERMISSIONS
    permissions = Permission.objects.filter(content_type__app_label="campaigns")
    for name, codenames in granted.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*(permissions if codenames == "__all__" else permissions.filter(codename__in=codenames)))


@pytest.mark.django_db(transaction=True)
def test_two_workers_running_the_same_send_at_once_make_one_campaign(mailchimp_emulator, monkeypatch):
    import threading

    from django.conf import settings
    from django.db import connection

    from partners.services import audience_default_ensure

    from .conftest import make_user

    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        pytest.skip("needs PostgreSQL: concurrent connections to one test database")
    _groups_after_a_flush()
    author, approver = make_user("Partner managers"), make_user("Approvers")
    audience = audience_default_ensure()
    suppliers = Segment.objects.create(name="Suppliers", audience=audience, partner_types=["supplier"])
    ContactFactory(partner=TradingPartnerFactory(partner_type="supplier"), email="anna@acme.example")
    sync_audience(audience)
    monkeypatch.setattr(services, "_enqueue_prepare", lambda send: None)
    monkeypatch.setattr(services, "_enqueue_send", lambda send: None)
    communication = new_communication(author, audience, [suppliers])
    services.communication_submit(communication_id=communication.pk, actor=author)
    services.communication_approve(communication_id=communication.pk, actor=approver)
    send_id = CampaignSend.objects.get(communication=communication).pk
    outcomes = {}

    def worker(name):
        try:
            outcomes[name] = services.communication_send_execute(send_id=send_id)
        except services.CommunicationBusy as exc:
            outcomes[name] = exc
        finally:
            connection.close()

    mailchimp_emulator.hold()  # the first worker parks inside its first Mailchimp call, holding the lease
    first = threading.Thread(target=worker, args=("first",))
    first.start()
    deadline = timezone.now() + dt.timedelta(seconds=10)
    while mailchimp_emulator.stats()["in_flight"] < 1 and timezone.now() < deadline:
        threading.Event().wait(0.02)
    second = threading.Thread(target=worker, args=("second",))
    second.start()
    second.join(timeout=10)
    mailchimp_emulator.release()
    first.join(timeout=20)

    assert isinstance(outcomes["second"], services.CommunicationBusy)
    assert outcomes["first"].status == SendStatus.DONE
    assert services.communication_send_execute(send_id=send_id).status == SendStatus.DONE  # the second one's retry
    assert len(campaigns(mailchimp_emulator)) == 1
    assert len(api_calls(mailchimp_emulator, "POST", "/actions/send")) == 1
    assert reload(communication).state == S.SENT
