"""The partner page shows what the Trading Grid sync brings (certifications, deadlines) and records partner
managers' edits, so the sync can respect them or report overwriting them."""

from datetime import date

import pytest
from django.urls import reverse

from connectors.tradinggrid.payloads import partner_from_tg
from partners import tg_sync
from partners.models import Certification, Contact, TradingPartner
from tests.partners.conftest import acme
from tests.partners.factories import AdministratorFactory, ContactFactory, TradingPartnerFactory

pytestmark = pytest.mark.django_db

BUID = "GC00804444LX"


@pytest.fixture
def administrator(client):
    user = AdministratorFactory(username="olivia")
    client.force_login(user)
    return user


def change_url(partner):
    return reverse("admin:partners_tradingpartner_change", args=[partner.pk])


def form_data(client, partner, **changes):
    """The partner page's form as the browser would post it, with `changes` applied."""
    form = client.get(change_url(partner)).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data["product_lines"] = [line.pk for line in partner.product_lines.all()]
    data["partner_manager"] = partner.partner_manager_id or ""
    data["country_code"] = partner.country_code.code
    contacts = list(partner.contacts.order_by("pk"))
    data.update({
        "trading_addresses-TOTAL_FORMS": 0, "trading_addresses-INITIAL_FORMS": 0,
        "certifications-TOTAL_FORMS": 0, "certifications-INITIAL_FORMS": 0,
        "issues-TOTAL_FORMS": 0, "issues-INITIAL_FORMS": 0,
        "journey_triggers-TOTAL_FORMS": 0, "journey_triggers-INITIAL_FORMS": 0,
        "contacts-TOTAL_FORMS": len(contacts), "contacts-INITIAL_FORMS": len(contacts),
    })
    for index, contact in enumerate(contacts):
        for name in ("email", "first_name", "last_name", "role", "phone", "language", "timezone"):
            data[f"contacts-{index}-{name}"] = getattr(contact, name)
        data[f"contacts-{index}-id"] = contact.pk
        data[f"contacts-{index}-partner"] = partner.pk
    data.update(changes)
    return data


def test_the_partner_page_shows_certifications_and_deadlines(client, administrator):
    partner = TradingPartnerFactory(contract_renewal_at=date(2027, 6, 30), compliance_review_at=date(2027, 1, 15))
    Certification.objects.create(partner=partner, type="C-TPAT", number="CT-9", issuer="CBP",
                                 expires_at=date(2027, 3, 1))

    page = client.get(change_url(partner)).content.decode()

    assert "C-TPAT" in page and "CT-9" in page and "March 1, 2027" in page
    assert "Contract renewal" in page and 'name="contract_renewal_at" value="2027-06-30"' in page
    assert "Compliance review" in page and 'name="compliance_review_at" value="2027-01-15"' in page


def test_a_managers_edit_is_recorded_and_a_later_overwrite_shows_in_the_history(client, administrator):
    tg_sync.partner_upsert_from_tg(partner=partner_from_tg(profile=acme()), source_event="test")
    partner = TradingPartner.objects.get()

    response = client.post(change_url(partner), form_data(client, partner, tier="strategic", region="na"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    partner.refresh_from_db()
    assert set(partner.manager_edits) == {"region", "tier"}
    assert partner.manager_edits["tier"]["by"] == "olivia"

    change = tg_sync.partner_upsert_from_tg(
        partner=partner_from_tg(profile={**acme(), "updated_at": "2030-01-01T00:00:00Z"}), source_event="poll"
    )
    partner.refresh_from_db()
    assert (partner.tier, partner.region) == ("preferred", "na")
    assert (change.conflicts, change.kept) == (("tier",), ("region",))
    history = client.get(reverse("admin:partners_tradingpartner_history", args=[partner.pk])).content.decode()
    assert "Conflict: Trading Grid overwrote tier &#x27;strategic&#x27; with &#x27;preferred&#x27;. olivia had" in history


def test_a_contact_edited_on_the_partner_page_is_recorded_on_the_contact(client, administrator):
    partner = TradingPartnerFactory(partner_manager=administrator)
    ContactFactory(partner=partner, email="anna@acme.de", phone="")

    response = client.post(change_url(partner), form_data(client, partner, **{"contacts-0-phone": "+49 30 1"}))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert set(Contact.objects.get().manager_edits) == {"phone"}


def test_an_unchanged_save_records_no_edit(client, administrator):
    partner = TradingPartnerFactory(partner_manager=administrator)
    ContactFactory(partner=partner)

    client.post(change_url(partner), form_data(client, partner))

    assert TradingPartner.objects.get().manager_edits == {}
    assert Contact.objects.get().manager_edits == {}
