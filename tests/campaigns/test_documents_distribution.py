# ruff: noqa: F811 - fixtures imported from documents_support are redefined as test arguments
"""Distribution emails of an approved version (through the communications' approval and the Mailchimp emulator),
per-reader link keys and clicks, coverage, and reminders with the alert after the last one."""

import csv
import datetime as dt
import io
from types import SimpleNamespace

import pytest
from celery.exceptions import Retry
from django.contrib.admin.models import LogEntry
from django.core import mail
from django.urls import reverse

from campaigns import document_selectors, documents, services
from campaigns.models import (
    Communication,
    CommunicationState,
    DocumentLinkKey,
    DocumentPublication,
    DocumentRecipient,
    DocumentReminder,
    PublicationStatus,
    ReminderStatus,
)
from connectors.tradinggrid.payloads import TGAcknowledgement
from partners.models import Contact
from tests.conftest import MAILCHIMP_TEST_AUDIENCE
from tests.partners.factories import ContactFactory

from .conftest import sync_audience
from .documents_support import approve_version, document, new_version, private_documents  # noqa: F401

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("mailchimp_contract", "eager_tasks", "tg_settings"),
]
JOURNEY, STEP = 4201, 11
DAY = dt.timedelta(days=1)


def send_distribution(version, author, approver, audience, segments, capture, **overrides):
    distribution = documents.document_distribution_create(
        version_id=version.pk,
        actor=author,
        audience=audience,
        segments=segments,
        subject=f"New {version.document.title}",
        from_name="Partner team",
        reply_to="partners@example.com",
        **overrides,
    )
    with capture(execute=True):
        services.communication_submit(communication_id=distribution.communication_id, actor=author)
    with capture(execute=True):
        services.communication_approve(communication_id=distribution.communication_id, actor=approver)
    return distribution


@pytest.fixture
def world(
    mailchimp_emulator, tg_emulator, audience, suppliers, partners, document, author, approver, second_approver,
    django_capture_on_commit_callbacks,
):
    """Acme (anna; gone@ unsubscribed) managed by maria, Dairy (ops, buyer) by james; version 2026.1 approved,
    published and emailed to the suppliers."""
    acme, dairy, swift = partners
    acme.partner_manager = author
    acme.save()
    dairy.partner_manager = second_approver
    dairy.save()
    ContactFactory(partner=dairy, email="buyer@dairy.example", first_name="=HYPERLINK(\"http://evil\")")
    assert sync_audience(audience).status == "succeeded"
    mailchimp_emulator.state.add_journey(
        list_id=MAILCHIMP_TEST_AUDIENCE, name="Policy reminder", steps={STEP: "Remind"}, journey_id=JOURNEY
    )
    documents.document_update(
        document_id=document.pk, actor=author, changes={"reminder_journey_id": JOURNEY, "reminder_step_id": STEP}
    )
    capture = django_capture_on_commit_callbacks
    version = approve_version(new_version(document, author), author, approver, capture)
    distribution = send_distribution(version, author, approver, audience, [suppliers], capture)
    communication = Communication.objects.get(pk=distribution.communication_id)
    assert communication.state == CommunicationState.SENT, communication.failure_reason
    return SimpleNamespace(
        mc=mailchimp_emulator, tg=tg_emulator, audience=audience, suppliers=suppliers, acme=acme, dairy=dairy,
        document=version.document, version=version, distribution=distribution, communication=communication,
        sent_at=communication.sent_at, capture=capture, author=author, approver=approver,
    )


def member(world, email):
    return world.mc.state.audiences[MAILCHIMP_TEST_AUDIENCE].members[_hash(email)]


def _hash(email):
    import hashlib

    return hashlib.md5(email.lower().encode()).hexdigest()  # noqa: S324 - Mailchimp's subscriber hash


def link_of(world, email):
    """The link as Mailchimp renders it for this member: the template with their DOCKEY filled in."""
    return documents.document_link_template(world.version).replace("*|DOCKEY|*", member(world, email).merge_fields["DOCKEY"])


def sweep(world, days, execute=True):
    with world.capture(execute=execute):
        return documents.document_reminders_sweep(now=world.sent_at + days * DAY)


def journey_triggers(world, email=None):
    return [t for t in world.mc.state.journey_triggers if email is None or t["email_address"] == email]


def confirm(world, email, buid, version=None):
    version = version or world.version
    return documents.document_acknowledgement_record(
        tg_document_id=world.document.tg_document_id,
        acknowledgement=TGAcknowledgement(
            document_id=world.document.tg_document_id, partner_company_id=buid, contact_email=email,
            version=version.version, acknowledged_at=world.sent_at + DAY,
        ),
        source="webhook",
    )


# --- the send: recipients and link keys ------------------------------------------------------------------


def test_the_send_records_each_recipient_and_puts_their_key_in_mailchimp(world):
    recipients = {r.email: r for r in DocumentRecipient.objects.filter(version=world.version)}
    assert sorted(recipients) == ["anna@acme.example", "buyer@dairy.example", "ops@dairy.example"]
    assert recipients["ops@dairy.example"].partner == world.dairy
    keys = dict(DocumentLinkKey.objects.values_list("email", "key"))
    for email in recipients:
        assert member(world, email).merge_fields["DOCKEY"] == keys[email]
        assert len(keys[email]) >= 32
    assert len(set(keys.values())) == 3
    [campaign] = world.mc.state.campaigns.values()
    assert f"/d/{world.version.pk}/*|DOCKEY|*" in campaign.html
    assert world.distribution.__class__.objects.get(pk=world.distribution.pk).links_ready_at is not None


def test_a_second_distribution_reuses_the_keys(world, django_capture_on_commit_callbacks):
    second = approve_version(new_version(world.document, world.author, "2026.2"), world.author, world.approver,
                             world.capture)
    keys_before = dict(DocumentLinkKey.objects.values_list("email", "key"))
    upserts_before = len([e for e in world.mc.request_log if e["method"] == "POST"
                          and e["path"].endswith(f"/lists/{MAILCHIMP_TEST_AUDIENCE}")])

    send_distribution(second, world.author, world.approver, world.audience, [world.suppliers], world.capture)

    assert dict(DocumentLinkKey.objects.values_list("email", "key")) == keys_before
    upserts_after = len([e for e in world.mc.request_log if e["method"] == "POST"
                         and e["path"].endswith(f"/lists/{MAILCHIMP_TEST_AUDIENCE}")])
    assert upserts_after == upserts_before  # nothing new to push
    assert DocumentRecipient.objects.filter(version=second).count() == 3


def test_a_distribution_of_a_superseded_version_fails_with_the_reason(world):
    old = world.version
    distribution = documents.document_distribution_create(
        version_id=old.pk, actor=world.author, audience=world.audience, segments=[world.suppliers],
        subject="Old terms", from_name="Partner team", reply_to="partners@example.com",
    )
    approve_version(new_version(world.document, world.author, "2026.2"), world.author, world.approver, world.capture)
    with world.capture(execute=True):
        services.communication_submit(communication_id=distribution.communication_id, actor=world.author)
    with world.capture(execute=True):
        services.communication_approve(communication_id=distribution.communication_id, actor=world.approver)

    communication = Communication.objects.get(pk=distribution.communication_id)
    assert communication.state == CommunicationState.FAILED
    assert communication.failure_reason == (
        "“Trading terms” version 2026.1 was superseded by version 2026.2: distribute that one instead; nothing was sent."
    )


def test_the_send_waits_while_the_version_is_being_published(
    mailchimp_emulator, tg_emulator, audience, suppliers, partners, document, author, approver,
    django_capture_on_commit_callbacks,
):
    assert sync_audience(audience).status == "succeeded"
    version = new_version(document, author)
    documents.document_version_submit(version_id=version.pk, actor=author)
    with django_capture_on_commit_callbacks(execute=False):  # the publication's task has not run yet
        documents.document_version_approve(version_id=version.pk, actor=approver)
    distribution = documents.document_distribution_create(
        version_id=version.pk, actor=author, audience=audience, segments=[suppliers], subject="Terms",
        from_name="Partner team", reply_to="partners@example.com",
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.communication_submit(communication_id=distribution.communication_id, actor=author)

    with pytest.raises(Retry), django_capture_on_commit_callbacks(execute=True):
        services.communication_approve(communication_id=distribution.communication_id, actor=approver)

    assert Communication.objects.get(pk=distribution.communication_id).state == CommunicationState.APPROVED
    assert DocumentPublication.objects.get(version=version).status == PublicationStatus.PENDING
    assert not mailchimp_emulator.state.campaigns or all(
        c.status == "save" for c in mailchimp_emulator.state.campaigns.values()
    )


def test_the_email_must_keep_the_link(world):
    with pytest.raises(Exception) as caught:
        documents.document_distribution_create(
            version_id=world.version.pk, actor=world.author, audience=world.audience, segments=[world.suppliers],
            subject="Terms", from_name="Partner team", reply_to="partners@example.com",
            html_body="<p>No link here</p>",
        )
    assert "The email must link to" in str(caught.value)


# --- clicks ------------------------------------------------------------------------------------------------


def test_following_the_link_records_the_click_and_redirects_to_the_community_page(world, client):
    url = link_of(world, "anna@acme.example")

    first = client.get(url)
    client.get(url)

    assert first.status_code == 302
    assert first["Location"] == world.document.tg_url
    assert first["Referrer-Policy"] == "no-referrer"
    anna = DocumentRecipient.objects.get(version=world.version, email="anna@acme.example")
    assert anna.click_count == 2
    assert anna.first_clicked_at is not None and anna.last_clicked_at >= anna.first_clicked_at
    assert not DocumentRecipient.objects.filter(version=world.version, click_count__gt=0).exclude(pk=anna.pk).exists()


def test_unknown_keys_and_missing_keys_redirect_without_counting(world, client):
    assert client.get(f"/d/{world.version.pk}/not-a-key").status_code == 302
    assert client.get(f"/d/{world.version.pk}/").status_code == 302  # a member without a key
    assert client.get(f"/d/{world.version.pk + 999}/whatever").status_code == 404
    assert not DocumentRecipient.objects.filter(click_count__gt=0).exists()


# --- coverage -----------------------------------------------------------------------------------------------


def test_coverage_counts_contacts_and_partners(world, client):
    client.get(link_of(world, "anna@acme.example"))  # opened, not confirmed
    client.get(link_of(world, "ops@dairy.example"))
    confirm(world, "ops@dairy.example", world.dairy.tg_company_id)  # confirmed
    swift = world.acme.__class__.objects.get(name="Swift")
    confirm(world, "dispatch@swift.example", swift.tg_company_id)  # confirmed without having been emailed

    coverage = document_selectors.version_coverage(world.version)

    assert coverage.contacts == {"confirmed": 2, "opened": 1, "not_opened": 1}
    assert coverage.partners == {"confirmed": 2, "opened": 1, "not_opened": 0}  # Dairy, Swift; Acme opened
    rows = {row.email: row for row in coverage.rows}
    assert (rows["buyer@dairy.example"].status, rows["dispatch@swift.example"].emailed) == ("not_opened", False)


def test_the_coverage_page_and_its_csv_export_are_formula_safe(world, client, approver):
    confirm(world, "ops@dairy.example", world.dairy.tg_company_id)
    client.force_login(approver)
    url = reverse("admin:campaigns_documentversion_coverage", args=[world.version.pk])

    page = client.get(url)
    export = client.get(url + "?format=csv")

    assert page.status_code == 200
    assert page.context["coverage"].contacts["confirmed"] == 1
    assert export["Content-Type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert [r["contact_email"] for r in rows] == ["anna@acme.example", "buyer@dairy.example", "ops@dairy.example"]
    buyer = next(r for r in rows if r["contact_email"] == "buyer@dairy.example")
    assert buyer["contact_name"].startswith("'=HYPERLINK")
    assert buyer["status"] == "not_opened"
    assert next(r for r in rows if r["contact_email"] == "ops@dairy.example")["confirmed_at"].endswith("UTC")


# --- reminders ----------------------------------------------------------------------------------------------


def reminders(world, **filters):
    return list(DocumentReminder.objects.filter(version=world.version, **filters).select_related("recipient"))


def test_nothing_is_due_before_n_days(world):
    result = sweep(world, 6.9)

    assert (result.scheduled, result.reminders) == (3, 0)
    assert not DocumentReminder.objects.exists()


def test_reminders_are_due_after_n_days_and_happen_once_when_the_sweep_runs_twice(world):
    first = sweep(world, 7)
    second = sweep(world, 7)

    assert (first.reminders, second.reminders) == (3, 0)
    rows = reminders(world)
    assert sorted((r.recipient.email, r.stage, r.status) for r in rows) == [
        ("anna@acme.example", 1, "sent"), ("buyer@dairy.example", 1, "sent"), ("ops@dairy.example", 1, "sent"),
    ]
    assert "policy-reminder" in member(world, "anna@acme.example").tags
    assert len(journey_triggers(world, "anna@acme.example")) == 1
    assert len(journey_triggers(world)) == 3


def test_a_dispatch_run_twice_reminds_once(world):
    sweep(world, 7)
    [row] = reminders(world, recipient__email="ops@dairy.example")

    documents.document_reminder_dispatch(reminder_id=row.pk)

    assert len(journey_triggers(world, "ops@dairy.example")) == 1


def test_at_most_m_reminders_then_one_alert_to_the_partner_manager(world):
    for days in (7, 14, 21, 28, 60):
        sweep(world, days)

    anna = reminders(world, recipient__email="anna@acme.example")
    assert sorted((r.kind, r.stage, r.status) for r in anna) == [
        ("alert", 3, "sent"), ("reminder", 1, "sent"), ("reminder", 2, "sent"),
    ]
    assert len(journey_triggers(world, "anna@acme.example")) == 2
    # One email per partner, to its partner manager, naming its contacts.
    assert sorted(m.to[0] for m in mail.outbox) == ["james@partnerlink.example", "maria@partnerlink.example"]
    dairy_mail = next(m for m in mail.outbox if m.to == ["james@partnerlink.example"])
    assert dairy_mail.subject == "Not confirmed: Trading terms v2026.1 (Dairy Co)"
    assert "buyer@dairy.example" in dairy_mail.body and "ops@dairy.example" in dairy_mail.body
    history = LogEntry.objects.filter(object_id=str(world.dairy.pk), content_type__model="tradingpartner")
    assert [e.change_message for e in history] == [
        "Did not confirm receipt of “Trading terms” version 2026.1 after the last reminder: buyer@dairy.example, "
        "ops@dairy.example. james@partnerlink.example was alerted."
    ]
    recipient = DocumentRecipient.objects.get(version=world.version, email="anna@acme.example")
    assert (recipient.reminders_sent, recipient.next_reminder_at) == (2, None)


def test_a_partner_without_a_manager_alerts_the_document_owner(world):
    world.dairy.__class__.objects.filter(pk=world.dairy.pk).update(partner_manager=None)
    for days in (7, 14, 21):
        sweep(world, days)

    assert sorted(m.to[0] for m in mail.outbox) == ["maria@partnerlink.example", "maria@partnerlink.example"]


def test_an_acknowledgement_stops_that_contacts_reminders(world):
    sweep(world, 7)
    confirm(world, "ops@dairy.example", world.dairy.tg_company_id)

    for days in (14, 21):
        sweep(world, days)

    ops = reminders(world, recipient__email="ops@dairy.example")
    assert [(r.kind, r.stage) for r in ops] == [("reminder", 1)]
    assert len(journey_triggers(world, "ops@dairy.example")) == 1
    assert mail.outbox and all("ops@dairy.example" not in m.body for m in mail.outbox)
    assert DocumentRecipient.objects.get(version=world.version, email="ops@dairy.example").reminders_stopped == (
        f"Confirmed receipt on {(world.sent_at + DAY):%Y-%m-%d}."
    )


def test_an_acknowledgement_between_sweep_and_dispatch_cancels_the_pending_reminder(world):
    sweep(world, 7, execute=False)  # rows made, tasks not run yet
    confirm(world, "ops@dairy.example", world.dairy.tg_company_id)

    [row] = reminders(world, recipient__email="ops@dairy.example")
    assert (row.status, row.reason) == (ReminderStatus.CANCELLED, f"Confirmed receipt on {(world.sent_at + DAY):%Y-%m-%d}.")
    assert documents.document_reminder_dispatch(reminder_id=row.pk) is None
    assert not journey_triggers(world, "ops@dairy.example")


def test_a_newer_approved_version_stops_the_old_versions_reminders(world):
    sweep(world, 7, execute=False)
    approve_version(new_version(world.document, world.author, "2026.2"), world.author, world.approver, world.capture)

    for days in (14, 21, 28):
        sweep(world, days)

    assert {r.status for r in reminders(world)} == {ReminderStatus.CANCELLED}
    assert {r.reason for r in reminders(world)} == {f"Superseded by version 2026.2 on {dt.date.today():%Y-%m-%d}."}
    assert not journey_triggers(world)
    assert not mail.outbox


def test_unsubscribed_and_cleaned_contacts_are_never_reminded(world):
    Contact.objects.filter(email="buyer@dairy.example").update(marketing_status="unsubscribed")
    Contact.objects.filter(email="ops@dairy.example").update(email_invalid=True, marketing_status="cleaned")

    sweep(world, 7)

    buyer, = reminders(world, recipient__email="buyer@dairy.example")
    ops, = reminders(world, recipient__email="ops@dairy.example")
    assert (buyer.status, buyer.reason) == (
        ReminderStatus.SKIPPED,
        "buyer@dairy.example is unsubscribed in Mailchimp; Partnerlink never reminds opted-out or cleaned addresses.",
    )
    assert ops.status == ReminderStatus.SKIPPED
    assert not journey_triggers(world, "buyer@dairy.example") and not journey_triggers(world, "ops@dairy.example")
    assert "policy-reminder" not in member(world, "buyer@dairy.example").tags


def test_a_member_mailchimp_holds_unsubscribed_is_skipped_at_dispatch(world):
    audience = world.mc.state.audiences[MAILCHIMP_TEST_AUDIENCE]
    audience.members[_hash("anna@acme.example")].status = "unsubscribed"

    sweep(world, 7)

    anna, = reminders(world, recipient__email="anna@acme.example")
    assert (anna.status, anna.reason) == (
        ReminderStatus.SKIPPED,
        "Mailchimp holds anna@acme.example as unsubscribed; only subscribed members are reminded.",
    )


def test_the_relay_reenqueues_reminders_whose_task_was_lost(world):
    sweep(world, 7, execute=False)

    with world.capture(execute=True):
        count = documents.document_reminders_relay(now=world.sent_at + 7 * DAY + dt.timedelta(minutes=5))

    assert count == 3
    assert {r.status for r in reminders(world)} == {ReminderStatus.SENT}


def test_pushing_a_key_never_subscribes_an_address_mailchimp_no_longer_holds(
    mailchimp_emulator, tg_emulator, audience, suppliers, partners, document, author, approver,
    django_capture_on_commit_callbacks,
):
    assert sync_audience(audience).status == "succeeded"
    del mailchimp_emulator.state.audiences[MAILCHIMP_TEST_AUDIENCE].members[_hash("ops@dairy.example")]
    capture = django_capture_on_commit_callbacks
    version = approve_version(new_version(document, author), author, approver, capture)

    send_distribution(version, author, approver, audience, [suppliers], capture)

    ops = mailchimp_emulator.state.audiences[MAILCHIMP_TEST_AUDIENCE].members[_hash("ops@dairy.example")]
    assert ops.status == "transactional"
    [campaign] = mailchimp_emulator.state.campaigns.values()
    assert "ops@dairy.example" not in {m.email for m in mailchimp_emulator.state.recipients(campaign)}
