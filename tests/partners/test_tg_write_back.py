"""Unsubscribed and cleaned contacts are written to the partner's Trading Grid profile, custom.marketing_status."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from connectors.tradinggrid.client import get_client
from partners import services, tg_sync
from partners.models import Contact, TradingPartner
from tests.partners.conftest import acme
from tests.partners.factories import ContactFactory

pytestmark = pytest.mark.django_db

BUID = "GC00804444LX"
PROFILE = f"/community/v1/partners/{BUID}/profile"


@pytest.fixture
def partner(tg):
    """Acme, in Trading Grid and synced here, with a second contact."""
    tg.state.create_partner(acme(contacts=[*acme()["contacts"], {"email": "ops@acme.de"}]), emit=True)
    tg.deliver()
    return TradingPartner.objects.get(tg_company_id=BUID)


def mailchimp_says(tg, email, status, minute=0):
    with tg.capture(execute=True):
        return services.contact_marketing_status_apply(
            email=email, status=status, occurred_at=datetime(2026, 11, 28, 10, minute, tzinfo=UTC)
        )


def marketing_status_in_tg(tg):
    return tg.state.render_profile(BUID)["custom"].get("marketing_status")


def test_an_unsubscribe_is_written_to_the_profile_once(tg, partner):
    mailchimp_says(tg, "anna.schmidt@acme.de", "unsubscribed")

    assert marketing_status_in_tg(tg) == {"anna.schmidt@acme.de": "unsubscribed"}
    assert len(tg.requests("PATCH", PROFILE)) == 1
    assert Contact.objects.get(email="anna.schmidt@acme.de").marketing_status_in_tg == "unsubscribed"

    assert tg_sync.partner_marketing_status_write_back(partner_id=partner.pk) == {}
    assert len(tg.requests("PATCH", PROFILE)) == 1


def test_a_cleaned_address_joins_what_the_profile_already_holds(tg, partner):
    tg.state.update_profile(BUID, {"custom": {"marketing_status": {"old@acme.de": "unsubscribed"},
                                              "engagement": {"score": 7}}})

    mailchimp_says(tg, "ops@acme.de", "cleaned")

    custom = tg.state.render_profile(BUID)["custom"]
    assert custom["marketing_status"] == {"old@acme.de": "unsubscribed", "ops@acme.de": "cleaned"}
    assert custom["engagement"] == {"score": 7}


def test_nothing_is_written_when_the_profile_already_says_so(tg, partner):
    tg.state.update_profile(BUID, {"custom": {"marketing_status": {"ops@acme.de": "unsubscribed"}}})

    mailchimp_says(tg, "ops@acme.de", "unsubscribed")

    assert tg.requests("PATCH", PROFILE) == []
    assert Contact.objects.get(email="ops@acme.de").marketing_status_in_tg == "unsubscribed"


def test_a_subscribe_writes_nothing(tg, partner):
    mailchimp_says(tg, "ops@acme.de", "subscribed")

    assert tg.requests("PATCH", PROFILE) == []


def test_a_partner_trading_grid_never_showed_us_is_written_after_its_first_sync(tg):
    contact = ContactFactory(partner__tg_company_id=BUID, email="anna.schmidt@acme.de")
    tg.state.create_partner(acme())

    mailchimp_says(tg, contact.email, "unsubscribed")
    assert tg.requests("PATCH", PROFILE) == []  # not known to come from Trading Grid yet: no call

    with tg.capture(execute=True):
        tg_sync.partners_poll_from_tg()

    assert marketing_status_in_tg(tg) == {"anna.schmidt@acme.de": "unsubscribed"}


def test_the_relay_re_enqueues_a_lost_write_back(tg, partner):
    Contact.objects.filter(email="ops@acme.de").update(
        marketing_status="unsubscribed", updated_at=timezone.now() - timedelta(minutes=5)
    )

    with tg.capture(execute=True):
        assert tg_sync.partner_marketing_status_write_back_relay() == 1

    assert marketing_status_in_tg(tg) == {"ops@acme.de": "unsubscribed"}
    assert tg_sync.partner_marketing_status_write_back_relay() == 0


def test_the_relay_gives_up_after_a_day(tg, partner):
    Contact.objects.filter(email="ops@acme.de").update(
        marketing_status="unsubscribed", updated_at=timezone.now() - timedelta(days=2)
    )

    assert tg_sync.partner_marketing_status_write_back_relay() == 0


def test_a_status_that_changed_while_writing_stays_pending(tg, partner, monkeypatch):
    client = get_client()
    real = client.update_partner_profile

    def meanwhile(**kwargs):
        Contact.objects.filter(email="ops@acme.de").update(marketing_status="cleaned")
        return real(**kwargs)

    Contact.objects.filter(email="ops@acme.de").update(marketing_status="unsubscribed")
    monkeypatch.setattr(client, "update_partner_profile", meanwhile)

    tg_sync.partner_marketing_status_write_back(partner_id=partner.pk, client=client)

    contact = Contact.objects.get(email="ops@acme.de")
    assert (contact.marketing_status, contact.marketing_status_in_tg) == ("cleaned", "")
    assert tg_sync.partner_marketing_status_write_back(partner_id=partner.pk) == {"ops@acme.de": "cleaned"}
