"""Each Trading Grid webhook, as the emulator sends it, through /webhooks/tradinggrid/ and the inbox into partner
records. Handlers treat the webhook as a hint and re-read Trading Grid."""

import pytest

from connectors.models import EventStatus, InboundEvent
from partners.models import CommunityIssue, Contact, TradingPartner
from tests.partners.conftest import acme

pytestmark = pytest.mark.django_db

BUID = "GC00804444LX"


def events(event_type=None):
    found = InboundEvent.objects.order_by("pk")
    return list(found.filter(event_type=event_type) if event_type else found)


def test_partner_created_creates_the_partner_from_the_reread_profile_and_directory(tg):
    tg.state.create_partner(acme(), emit=True)

    tg.deliver()

    partner = TradingPartner.objects.get(tg_company_id=BUID)
    assert (partner.name, partner.legal_name, partner.tier) == ("Acme Foods", "Acme Foods GmbH", "preferred")
    assert sorted(partner.trading_addresses.values_list("address", flat=True)) == ["01:123456789", "ZZ:ACME"]
    assert partner.certifications.get().type == "ISO 9001"
    assert partner.contacts.get().email == "anna.schmidt@acme.de"
    assert partner.tg_raw["directory"]["partnerCompanyId"] == BUID
    (event,) = events()
    assert (event.event_type, event.status) == ("partner.created", EventStatus.PROCESSED)
    assert event.outcome.startswith(f"{BUID}: created (onboarding status invited)")
    # The webhook was a hint: the handler read the profile and the directory entry itself.
    assert tg.requests("GET", f"/community/v1/partners/{BUID}/profile")
    assert tg.requests("GET", "/TGCommunityServices/v1/companies/GC00000001PL/partnerDirectory")


def test_partner_updated_and_status_changed(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()

    tg.state.update_profile(BUID, {"tier": "strategic", "onboarding_status": "approved"}, emit=True)
    tg.deliver()

    partner = TradingPartner.objects.get()
    assert (partner.tier, partner.onboarding_status) == ("strategic", "approved")
    updated, status_changed = events("partner.updated")[0], events("partner.status_changed")[0]
    assert updated.outcome == (f"{BUID}: changed tier, onboarding_status; onboarding status invited → approved.")
    # Both webhooks describe the same change: the second re-read finds it applied.
    assert status_changed.outcome == f"{BUID}: nothing changed."


def test_partner_status_changed_alone(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()

    tg.state.set_partner_status(BUID, "suspended", emit=True)
    tg.deliver()

    assert TradingPartner.objects.get().onboarding_status == "suspended"
    assert "onboarding status invited → suspended" in events("partner.status_changed")[0].outcome


def test_contact_created_updated_and_removed(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()

    tg.state.add_contact(BUID, {"email": "Ops@Acme.de", "first_name": "Omar", "role": "logistics"}, emit=True)
    tg.deliver()
    assert Contact.objects.get(email="ops@acme.de").first_name == "Omar"
    assert "contacts added: ops@acme.de" in events("partner.contact.created")[0].outcome

    tg.state.update_contact(BUID, "ops@acme.de", {"email": "omar@acme.de", "phone": "+49 1"}, emit=True)
    tg.deliver()
    renamed = Contact.objects.get(email="omar@acme.de")
    assert renamed.phone == "+49 1"
    assert not Contact.objects.filter(email="ops@acme.de").exists()
    assert "contacts changed: omar@acme.de (email, phone)" in events("partner.contact.updated")[0].outcome

    tg.state.remove_contact(BUID, "omar@acme.de", emit=True)
    tg.deliver()
    assert list(Contact.objects.values_list("email", flat=True)) == ["anna.schmidt@acme.de"]
    assert "contacts removed: omar@acme.de" in events("partner.contact.removed")[0].outcome


def test_a_stale_webhook_applies_what_trading_grid_holds_now(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()
    tg.state.update_profile(BUID, {"tier": "standard"}, emit=True)
    (stale,) = tg.take()  # arrives late, after a change that sent no webhook (or whose webhook is lost)
    tg.state.update_profile(BUID, {"tier": "strategic"})

    tg.post(stale)

    assert TradingPartner.objects.get().tier == "strategic"


def test_reordered_webhooks_end_in_trading_grids_current_state(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()
    tg.state.update_profile(BUID, {"tier": "standard"}, emit=True)
    tg.state.update_profile(BUID, {"tier": "strategic", "region": "na"}, emit=True)
    first, second = tg.take()

    tg.post(second)
    tg.post(first)

    partner = TradingPartner.objects.get()
    assert (partner.tier, partner.region) == ("strategic", "na")
    assert events()[-1].outcome == f"{BUID}: nothing changed."


def test_a_removal_webhook_for_a_contact_trading_grid_lists_again_keeps_it(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()
    tg.state.remove_contact(BUID, "anna.schmidt@acme.de", emit=True)
    (removed,) = tg.take()
    tg.state.add_contact(BUID, acme()["contacts"][0])  # re-added before the removal webhook was handled

    tg.post(removed)

    assert Contact.objects.filter(email="anna.schmidt@acme.de").exists()


def test_a_webhook_for_a_partner_trading_grid_no_longer_has_is_kept_unmatched(tg):
    tg.state.create_partner(acme(), emit=True)
    (created,) = tg.take()
    tg.state.partners.clear()

    tg.post(created)

    (event,) = events()
    assert event.status == EventStatus.UNMATCHED
    assert event.outcome == f"Trading Grid has no partner {BUID} (any more); kept."
    assert not TradingPartner.objects.exists()


def test_issue_created_updated_and_status_changed(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()

    tg.state.create_issue(
        {"partner_company_id": BUID, "category": "shipment_exception", "severity": "high", "title": "Late truck"},
        emit=True,
    )
    tg.deliver()
    issue = CommunityIssue.objects.get()
    assert (issue.partner.tg_company_id, issue.category, issue.status) == (BUID, "shipment_exception", "open")
    assert "created for GC00804444LX (status open)" in events("issue.created")[0].outcome

    tg.state.update_issue(issue.tg_issue_id, {"title": "Late truck at Rotterdam", "severity": "critical"}, emit=True)
    tg.deliver()
    issue.refresh_from_db()
    assert (issue.title, issue.severity) == ("Late truck at Rotterdam", "critical")

    tg.state.update_issue(issue.tg_issue_id, {"status": "resolved"}, emit=True)
    tg.deliver()
    issue.refresh_from_db()
    assert issue.status == "resolved" and issue.resolved_at is not None
    assert "status open → resolved" in events("issue.status_changed")[0].outcome


def test_an_issue_of_a_partner_we_dont_hold_stays_unmatched_in_the_inbox(tg):
    tg.state.create_partner(acme())  # no webhook: we don't know this partner
    tg.state.create_issue({"partner_company_id": BUID, "title": "Invoice short"}, emit=True)

    tg.deliver()

    (event,) = events()
    assert (event.event_type, event.status) == ("issue.created", EventStatus.UNMATCHED)
    assert not CommunityIssue.objects.exists()


def test_a_new_partner_brings_its_issue_history_with_it(tg):
    tg.state.create_partner(acme())
    tg.state.create_issue({"partner_company_id": BUID, "title": "Raised before we knew them"}, emit=True)
    tg.deliver()  # unmatched: the partner is not here yet

    tg.state.update_profile(BUID, {"tier": "strategic"}, emit=True)
    tg.deliver()

    assert CommunityIssue.objects.get().title == "Raised before we knew them"


def test_later_flows_webhooks_are_kept_and_ignored(tg):
    tg.state.create_partner(acme(), emit=True)
    tg.deliver()
    event = tg.state.create_event(
        {"kind": "webinar", "title": "EDI 101", "starts_at": "2027-01-10T15:00:00Z", "ends_at": "2027-01-10T16:00:00Z"}
    )
    tg.state.register_for_event(event["id"], {"contact_email": "anna.schmidt@acme.de", "partner_company_id": BUID},
                                emit=True)

    tg.deliver()

    (registration,) = events("event.registration.created")
    assert registration.status == EventStatus.IGNORED
