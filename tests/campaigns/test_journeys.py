"""Onboarding journeys (F2): Trading Grid reports a partner approved, a profile updated or a contact added;
the mapped Mailchimp journey step is triggered for each subscribed contact, exactly once."""

import pytest
from django.urls import reverse

from campaigns import journeys
from campaigns.models import JourneyMapping, JourneyStage, JourneyTrigger, JourneyTriggerStatus
from connectors.mailchimp.emulator import Fault
from connectors.mailchimp.errors import MailchimpTransientError
from partners import services, tg_sync
from partners.models import Contact, TradingPartner
from tests.conftest import MAILCHIMP_TEST_AUDIENCE
from tests.partners.conftest import acme

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("mailchimp_contract")]

BUID = "GC00804444LX"
JOURNEY, STEP = 7001, 70011
TWO_CONTACTS = [
    {"email": "anna@acme.de", "first_name": "Anna", "last_name": "Schmidt", "role": "primary"},
    {"email": "ops@acme.de", "first_name": "Omar", "last_name": "Ops", "role": "logistics"},
]


@pytest.fixture
def journey(mailchimp_emulator):
    mailchimp_emulator.add_journey(
        list_id=MAILCHIMP_TEST_AUDIENCE, name="Welcome", steps={STEP: "Welcome"}, journey_id=JOURNEY
    )
    audience = services.audience_default_ensure()
    return JourneyMapping.objects.create(
        name="Welcome approved suppliers",
        trigger="partner_approved",
        partner_types=["supplier"],
        audience=audience,
        journey_id=JOURNEY,
        step_id=STEP,
        tags=["onboarding"],
        member_event="partner_approved",
    )


def triggered(emulator):
    return sorted(t["email_address"] for t in emulator.journey_triggers())


def test_an_approved_partner_enters_its_contacts_into_the_journey_once(tg, mailchimp_emulator, journey):
    tg.state.create_partner(acme(contacts=TWO_CONTACTS), emit=True)
    tg.deliver()
    assert not JourneyTrigger.objects.exists()  # invited, not approved yet

    tg.state.set_partner_status(BUID, "approved", emit=True)
    tg.deliver()

    assert triggered(mailchimp_emulator) == ["anna@acme.de", "ops@acme.de"]
    rows = JourneyTrigger.objects.order_by("email")
    assert [(r.email, r.status, r.stage) for r in rows] == [
        ("anna@acme.de", "sent", JourneyStage.TRIGGERED),
        ("ops@acme.de", "sent", JourneyStage.TRIGGERED),
    ]
    members = mailchimp_emulator.members(list_id=MAILCHIMP_TEST_AUDIENCE)
    assert members["anna@acme.de"]["status"] == "subscribed"
    assert [t["name"] for t in members["anna@acme.de"]["tags"]] == ["onboarding"]


def test_a_webhook_delivered_twice_and_a_poll_trigger_nothing_more(tg, mailchimp_emulator, journey):
    tg.state.create_partner(acme(contacts=TWO_CONTACTS), emit=True)
    tg.deliver()
    tg.state.set_partner_status(BUID, "approved", emit=True)
    webhooks = tg.take()

    for webhook in webhooks + webhooks:
        tg.post(webhook)
    tg_sync.partners_poll_from_tg()

    assert triggered(mailchimp_emulator) == ["anna@acme.de", "ops@acme.de"]
    assert JourneyTrigger.objects.count() == 2


def test_conditions_and_opted_out_contacts(tg, mailchimp_emulator, journey):
    tg.state.create_partner(acme(contacts=TWO_CONTACTS), emit=True)
    tg.deliver()
    Contact.objects.filter(email="ops@acme.de").update(marketing_status="unsubscribed")
    tg.state.create_partner(
        acme(
            company_id="GC00800001US",
            name="Swift",
            partner_type="carrier",
            trading_addresses=["ZZ:SWIFT"],
            contacts=[{"email": "d@swift.com"}],
        ),
        emit=True,
    )
    tg.deliver()

    tg.state.set_partner_status(BUID, "approved", emit=True)
    tg.state.set_partner_status("GC00800001US", "approved", emit=True)
    tg.deliver()

    assert triggered(mailchimp_emulator) == ["anna@acme.de"]
    skipped = JourneyTrigger.objects.get(email="ops@acme.de")
    assert skipped.status == JourneyTriggerStatus.SKIPPED
    assert "unsubscribed" in skipped.reason
    assert not JourneyTrigger.objects.filter(email="d@swift.com").exists()  # carriers are not mapped


def test_profile_updated_fires_only_when_a_watched_field_changed(tg, mailchimp_emulator, journey):
    journey.trigger, journey.watched_fields = "profile_updated", ["tier"]
    journey.save()
    tg.state.create_partner(acme(contacts=TWO_CONTACTS[:1]), emit=True)
    tg.deliver()

    tg.state.update_profile(BUID, {"compliance_review_at": "2028-01-01"}, emit=True)
    tg.deliver()
    assert not JourneyTrigger.objects.exists()

    tg.state.update_profile(BUID, {"tier": "strategic"}, emit=True)
    tg.deliver()
    tg.state.update_profile(BUID, {"tier": "standard"}, emit=True)
    tg.deliver()

    assert JourneyTrigger.objects.filter(status="sent").count() == 2  # two changes of tier, two occurrences
    assert len(mailchimp_emulator.journey_triggers()) == 2


def test_contact_added_triggers_for_each_new_contact_once(tg, mailchimp_emulator, journey):
    journey.trigger = "contact_added"
    journey.save()
    tg.state.create_partner(acme(contacts=TWO_CONTACTS[:1]), emit=True)
    tg.deliver()
    assert triggered(mailchimp_emulator) == ["anna@acme.de"]  # a new partner's contacts are added contacts too

    tg.state.add_contact(BUID, {"email": "new@acme.de", "first_name": "New"}, emit=True)
    tg.deliver()
    tg.state.update_contact(BUID, "new@acme.de", {"phone": "+49 2"}, emit=True)
    tg.deliver()

    assert sorted(JourneyTrigger.objects.values_list("email", flat=True)) == ["anna@acme.de", "new@acme.de"]
    assert triggered(mailchimp_emulator) == ["anna@acme.de", "new@acme.de"]


def test_a_worker_dying_halfway_resumes_from_the_last_stage(mailchimp_emulator, journey, monkeypatch):
    change = tg_sync.partner_upsert_from_tg(
        partner=_partner(onboarding_status="approved", contacts=TWO_CONTACTS[:1]), source_event="test"
    )
    assert change.became_approved
    row = JourneyTrigger.objects.get()

    from connectors.mailchimp import client as client_module

    def die(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(client_module.MailchimpClient, "trigger_journey_step", die)
    with pytest.raises(SystemExit):
        journeys.journey_trigger_dispatch(trigger_id=row.pk)
    monkeypatch.undo()
    row.refresh_from_db()
    assert (row.status, row.stage) == ("pending", JourneyStage.EVENT)

    assert journeys.journey_trigger_dispatch(trigger_id=row.pk) is None  # the dead worker's lease still holds
    JourneyTrigger.objects.filter(pk=row.pk).update(next_attempt_at=row.created_at)  # the lease expired
    upserts_before = _puts(mailchimp_emulator)
    journeys.journey_trigger_dispatch(trigger_id=row.pk)

    row.refresh_from_db()
    assert (row.status, row.attempts) == ("sent", 2)
    assert _puts(mailchimp_emulator) == upserts_before  # the member was not upserted again
    assert triggered(mailchimp_emulator) == ["anna@acme.de"]


def test_transient_failure_releases_the_row_and_a_refusal_fails_it(mailchimp_emulator, journey):
    tg_sync.partner_upsert_from_tg(
        partner=_partner(onboarding_status="approved", contacts=TWO_CONTACTS), source_event="test"
    )
    anna, ops = JourneyTrigger.objects.order_by("email")
    mailchimp_emulator.faults.add(Fault(status=503, path="/customer-journeys/", times=1))
    with pytest.raises(MailchimpTransientError):
        journeys.journey_trigger_dispatch(trigger_id=anna.pk)
    anna.refresh_from_db()
    assert anna.status == "pending"
    journeys.journey_trigger_dispatch(trigger_id=anna.pk)
    anna.refresh_from_db()
    assert anna.status == "sent"

    JourneyMapping.objects.update(journey_id=999)  # no such journey in Mailchimp
    journeys.journey_trigger_dispatch(trigger_id=ops.pk)
    ops.refresh_from_db()
    assert ops.status == "failed"
    assert ops.reason.startswith("Mailchimp refused: Resource Not Found")


def test_relay_enqueues_rows_whose_task_was_lost(mailchimp_emulator, journey, monkeypatch):
    tg_sync.partner_upsert_from_tg(
        partner=_partner(onboarding_status="approved", contacts=TWO_CONTACTS[:1]), source_event="test"
    )
    from campaigns import tasks

    sent = []
    monkeypatch.setattr(tasks.journey_trigger_dispatch_task, "delay", lambda trigger_id: sent.append(trigger_id))
    JourneyTrigger.objects.update(created_at=JourneyTrigger.objects.get().created_at - journeys.UNCLAIMED_GRACE * 2)

    assert journeys.journey_triggers_relay() == 1
    assert sent == [JourneyTrigger.objects.get().pk]


def test_the_partner_page_shows_what_was_triggered(client, mailchimp_emulator, journey):
    from tests.partners.factories import AdministratorFactory

    client.force_login(AdministratorFactory(is_superuser=True))
    tg_sync.partner_upsert_from_tg(
        partner=_partner(onboarding_status="approved", contacts=TWO_CONTACTS[:1]), source_event="test"
    )
    row = JourneyTrigger.objects.get()
    JourneyTrigger.objects.filter(pk=row.pk).update(status="failed", reason="Mailchimp refused: nope")

    page = client.get(reverse("admin:partners_tradingpartner_change", args=[TradingPartner.objects.get().pk]))

    assert "onboarding journeys" in page.content.decode().lower()
    assert "Mailchimp refused: nope" in page.content.decode()


def test_mapping_form_requires_watched_fields_for_profile_updates(client, journey):
    from tests.partners.factories import AdministratorFactory

    client.force_login(AdministratorFactory(is_superuser=True))
    response = client.post(
        reverse("admin:campaigns_journeymapping_add"),
        {
            "name": "Profile",
            "is_active": "on",
            "trigger": "profile_updated",
            "audience": journey.audience.pk,
            "journey_id": 1,
            "step_id": 2,
            "tags": "a, b",
            "member_event": "",
        },
    )

    assert "fires only when a field it names changes" in response.content.decode()
    assert "customer-journeys/journeys/{journey id}/steps/{step id}" in response.content.decode()


def _partner(**profile):
    from connectors.tradinggrid.payloads import partner_from_tg

    return partner_from_tg(profile={**acme(**profile), "updated_at": "2026-11-28T10:00:00Z"})


def _puts(emulator):
    return [e for e in emulator.request_log if e["method"] == "PUT" and "/members/" in e["path"]]
