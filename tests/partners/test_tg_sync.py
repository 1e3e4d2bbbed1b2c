"""partner_upsert_from_tg / issue_upsert_from_tg / lens_failure_upsert_from_tg: what Trading Grid's records do to
partner records, under the conflict rule (partners/tg_sync.py)."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType

from connectors.tradinggrid.payloads import issue_from_tg, partner_from_tg
from partners import tg_sync
from partners.models import Certification, CommunityIssue, Contact, ProductLine, TradingAddress, TradingPartner
from partners.services import SYSTEM_USERNAME
from tests.partners.conftest import acme
from tests.partners.factories import (
    ContactFactory,
    PartnerManagerFactory,
    TradingAddressFactory,
    TradingPartnerFactory,
)

pytestmark = pytest.mark.django_db

BUID = "GC00804444LX"


def tg_partner(updated_at="2026-11-28T10:00:00Z", directory=None, **profile):
    return partner_from_tg(profile={**acme(**profile), "updated_at": updated_at}, directory_entry=directory)


def upsert(source_event="test", **profile):
    return tg_sync.partner_upsert_from_tg(partner=tg_partner(**profile), source_event=source_event)


def history(obj):
    return list(
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(type(obj)), object_id=str(obj.pk)
        ).order_by("pk")
    )


# --- Creating and updating ---------------------------------------------------------------------------------


def test_a_new_partner_is_created_with_everything_trading_grid_holds():
    change = upsert(onboarding_status="approved")

    partner = TradingPartner.objects.get(tg_company_id=BUID)
    assert (partner.name, partner.legal_name, partner.partner_type, partner.region, partner.country_code.code) == (
        "Acme Foods", "Acme Foods GmbH", "supplier", "emea", "DE"
    )
    assert (partner.tier, partner.onboarding_status, partner.compliance_status) == ("preferred", "approved",
                                                                                   "compliant")
    assert (partner.contract_renewal_at, partner.compliance_review_at) == (date(2027, 6, 30), date(2027, 1, 15))
    assert sorted(partner.product_lines.values_list("name", flat=True)) == ["Dairy", "Frozen foods"]
    assert list(partner.trading_addresses.values_list("address", "is_primary")) == [
        ("ZZ:ACME", True), ("01:123456789", False)
    ]
    cert = Certification.objects.get(partner=partner)
    assert (cert.type, cert.number, cert.issuer, cert.expires_at) == ("ISO 9001", "Q-1", "BSI", date(2027, 12, 31))
    contact = partner.contacts.get()
    assert (contact.email, contact.first_name, contact.role, contact.source) == (
        "anna.schmidt@acme.de", "Anna", "primary", "tradinggrid"
    )
    assert partner.partner_manager is None
    assert partner.tg_raw["profile"]["company_id"] == BUID
    assert partner.tg_updated_at == datetime(2026, 11, 28, 10, tzinfo=UTC)
    assert partner.tg_synced_at is not None

    assert change.created and change.changed and change.partner_id == partner.pk
    assert (change.status_before, change.status_after) == (None, "approved")
    assert change.became_approved and not change.profile_updated
    assert change.contacts_added == ("anna.schmidt@acme.de",)
    entry = history(partner)[0]
    assert (entry.action_flag, entry.user.username) == (ADDITION, SYSTEM_USERNAME)
    assert "created (onboarding status approved)" in entry.change_message


def test_applying_the_same_record_again_changes_nothing():
    upsert()
    partner = TradingPartner.objects.get()
    entries, updated_at = len(history(partner)), partner.updated_at

    change = upsert()

    assert not change.changed and change.changed_fields == () and not change.status_changed
    assert change.describe() == f"{BUID}: nothing changed."
    partner.refresh_from_db()
    assert partner.updated_at == updated_at
    assert len(history(partner)) == entries


def test_an_update_reports_fields_status_transition_and_contact_changes():
    upsert()
    contacts = acme()["contacts"] + [{"email": "Ops@Acme.DE", "first_name": "Omar", "role": "logistics"}]
    contacts[0] = {**contacts[0], "phone": "+49 30 9999"}

    change = upsert(
        updated_at="2026-11-28T11:00:00Z", tier="strategic", onboarding_status="approved", contacts=contacts
    )

    assert change.changed_fields == ("tier", "onboarding_status")
    assert (change.status_before, change.status_after) == ("invited", "approved")
    assert change.became_approved and change.profile_updated
    assert change.contacts_added == ("ops@acme.de",)
    assert change.contacts_changed == {"anna.schmidt@acme.de": ("phone",)}
    assert Contact.objects.filter(email="ops@acme.de").exists()
    assert "onboarding status invited → approved" in change.describe()
    assert change.as_dict()["contacts_changed"] == {"anna.schmidt@acme.de": ["phone"]}


def test_a_partner_we_hold_from_an_import_is_matched_by_buid_and_keeps_its_manager():
    manager = PartnerManagerFactory()
    existing = TradingPartnerFactory(tg_company_id=BUID, name="ACME", partner_manager=manager,
                                     onboarding_status="new")

    change = upsert(onboarding_status="approved")

    existing.refresh_from_db()
    assert not change.created
    assert (existing.name, existing.partner_manager, existing.onboarding_status) == ("Acme Foods", manager,
                                                                                     "approved")
    assert change.became_approved


def test_an_older_record_never_undoes_a_newer_one():
    upsert(updated_at="2026-11-28T11:00:00Z", tier="strategic")

    change = upsert(updated_at="2026-11-28T10:00:00Z", tier="standard")

    assert change.stale and not change.changed
    assert TradingPartner.objects.get().tier == "strategic"


def test_an_empty_value_from_trading_grid_never_clears_ours():
    upsert()

    change = upsert(tier="", region="", country_code="", product_lines=[], trading_addresses=[],
                    contract_renewal_at=None, name="")

    partner = TradingPartner.objects.get()
    assert not change.changed
    assert (partner.tier, partner.region, partner.country_code.code, partner.name) == (
        "preferred", "emea", "DE", "Acme Foods"
    )
    assert partner.contract_renewal_at == date(2027, 6, 30)
    assert partner.product_lines.count() == 2 and partner.trading_addresses.count() == 2


# --- The conflict rule -------------------------------------------------------------------------------------


def test_trading_grid_wins_for_identity_and_status_and_the_conflict_is_in_the_history():
    upsert()
    partner = TradingPartner.objects.get()
    manager = PartnerManagerFactory(username="maria")
    partner.tier, partner.name = "strategic", "Acme (our name)"
    partner.save()
    tg_sync.partner_manager_edits_record(partner=partner, fields=["tier", "name", "partner_manager"], user=manager)
    assert set(TradingPartner.objects.get().manager_edits) == {"name", "tier"}

    change = upsert(updated_at="2026-11-28T11:00:00Z", tier="standard")

    partner.refresh_from_db()
    assert (partner.tier, partner.name) == ("standard", "Acme Foods")
    assert change.conflicts == ("name", "tier")
    assert partner.manager_edits == {}  # Trading Grid's values stand now; a later change is no conflict
    notes = [e.change_message for e in history(partner) if e.change_message.startswith("Conflict")]
    assert len(notes) == 2
    assert notes[1].startswith("Conflict: Trading Grid overwrote tier 'strategic' with 'standard'. maria had "
                               "changed it in Partnerlink on ")
    assert notes[1].endswith("Trading Grid wins for tier.")
    assert all(e.user.username == SYSTEM_USERNAME for e in history(partner))


def test_a_field_trading_grid_already_agrees_with_is_no_conflict():
    upsert()
    partner = TradingPartner.objects.get()
    tg_sync.partner_manager_edits_record(partner=partner, fields=["tier"], user=PartnerManagerFactory())

    change = upsert(updated_at="2026-11-28T11:00:00Z")

    assert change.conflicts == () and TradingPartner.objects.get().manager_edits == {}


def test_a_region_set_by_a_manager_is_kept_until_the_manager_clears_it():
    upsert()
    partner = TradingPartner.objects.get()
    manager = PartnerManagerFactory()
    partner.region = "na"
    partner.save()
    tg_sync.partner_manager_edits_record(partner=partner, fields=["region"], user=manager)

    kept = upsert(updated_at="2026-11-28T11:00:00Z", region="apac")
    assert TradingPartner.objects.get().region == "na"
    assert kept.kept == ("region",) and "region" not in kept.changed_fields
    assert "kept Partnerlink's region" in kept.describe()

    partner.region = ""
    partner.save()
    tg_sync.partner_manager_edits_record(partner=partner, fields=["region"], user=manager)
    handed_back = upsert(updated_at="2026-11-28T12:00:00Z", region="apac")
    assert TradingPartner.objects.get().region == "apac"
    assert "region" in handed_back.changed_fields and handed_back.conflicts == ()


def test_a_region_nobody_set_here_follows_trading_grid():
    upsert()

    change = upsert(updated_at="2026-11-28T11:00:00Z", region="apac")

    assert TradingPartner.objects.get().region == "apac" and change.changed_fields == ("region",)


def test_product_lines_match_by_name_case_insensitively_and_a_managers_choice_is_kept():
    dairy = ProductLine.objects.create(name="dairy")
    upsert(product_lines=["DAIRY", "Frozen Foods"])
    partner = TradingPartner.objects.get()
    assert sorted(partner.product_lines.values_list("name", flat=True)) == ["Frozen Foods", "dairy"]
    assert partner.product_lines.filter(pk=dairy.pk).exists()
    assert ProductLine.objects.count() == 2

    again = upsert(updated_at="2026-11-28T11:00:00Z", product_lines=["Dairy", "frozen foods"])
    assert "product_lines" not in again.changed_fields

    partner.product_lines.set([dairy])
    tg_sync.partner_manager_edits_record(partner=partner, fields=["product_lines"], user=PartnerManagerFactory())
    kept = upsert(updated_at="2026-11-28T12:00:00Z", product_lines=["Dairy", "Toys"])
    assert list(partner.product_lines.values_list("name", flat=True)) == ["dairy"]
    assert kept.kept == ("product_lines",)


def test_the_partner_manager_is_never_taken_from_trading_grid():
    manager = PartnerManagerFactory()
    TradingPartnerFactory(tg_company_id=BUID, partner_manager=manager)

    upsert(partner_manager="someone@else.example")

    assert TradingPartner.objects.get().partner_manager == manager


def test_contact_identity_follows_trading_grid_and_a_managers_edit_is_recorded_on_the_contact():
    upsert()
    contact = Contact.objects.get()
    contact.phone, contact.marketing_status = "+49 555", "unsubscribed"
    contact.save()
    tg_sync.contact_manager_edits_record(contact=contact, fields=["phone"], user=PartnerManagerFactory(username="jo"))
    contacts = [{**acme()["contacts"][0], "phone": "+49 30 7777"}]

    change = upsert(updated_at="2026-11-28T11:00:00Z", contacts=contacts)

    contact.refresh_from_db()
    assert contact.phone == "+49 30 7777"
    assert contact.marketing_status == "unsubscribed"  # Mailchimp's state is Partnerlink's
    assert change.contacts_changed == {"anna.schmidt@acme.de": ("phone",)}
    assert history(contact)[-1].change_message.startswith("Conflict: Trading Grid overwrote phone '+49 555' with "
                                                          "'+49 30 7777'. jo had changed it")
    assert any("Conflict on contact anna.schmidt@acme.de" in e.change_message for e in history(contact.partner))


# --- Contacts -----------------------------------------------------------------------------------------------


def test_contact_emails_are_stored_lower_cased():
    tg_sync.partner_upsert_from_tg(
        partner=partner_from_tg(profile={**acme(contacts=[]), "contacts": [{"email": " Big.Boss@ACME.de "}]}),
        source_event="test",
    )

    assert list(Contact.objects.values_list("email", flat=True)) == ["big.boss@acme.de"]


def test_a_contact_missing_from_a_payload_is_not_removed():
    upsert()
    ContactFactory(partner=TradingPartner.objects.get(), email="kept@acme.de")

    change = upsert(updated_at="2026-11-28T11:00:00Z", contacts=[])

    assert change.contacts_removed == ()
    assert Contact.objects.count() == 2


def test_a_contact_is_removed_only_when_a_removal_event_names_it_and_trading_grid_no_longer_lists_it():
    upsert()
    ContactFactory(partner=TradingPartner.objects.get(), email="gone@acme.de")

    listed_again = tg_sync.partner_upsert_from_tg(
        partner=tg_partner(contacts=[*acme()["contacts"], {"email": "gone@acme.de"}]),
        source_event="webhook partner.contact.removed",
        removed_contact_emails=["gone@acme.de"],
    )
    assert listed_again.contacts_removed == () and Contact.objects.filter(email="gone@acme.de").exists()

    removed = tg_sync.partner_upsert_from_tg(
        partner=tg_partner(), source_event="webhook partner.contact.removed", removed_contact_emails=["Gone@Acme.de"]
    )
    assert removed.contacts_removed == ("gone@acme.de",)
    assert not Contact.objects.filter(email="gone@acme.de").exists()


def test_an_email_change_renames_the_contact_and_keeps_its_mailchimp_state():
    upsert()
    Contact.objects.update(marketing_status="subscribed")
    contacts = [{**acme()["contacts"][0], "email": "anna@acme.de"}]

    change = tg_sync.partner_upsert_from_tg(
        partner=tg_partner(contacts=contacts),
        source_event="webhook partner.contact.updated",
        renamed_contact_emails={"anna.schmidt@acme.de": "anna@acme.de"},
    )

    contact = Contact.objects.get()
    assert (contact.email, contact.marketing_status) == ("anna@acme.de", "subscribed")
    assert change.contacts_changed == {"anna@acme.de": ("email",)} and change.contacts_added == ()


# --- Certifications and trading addresses --------------------------------------------------------------------


def test_certifications_are_updated_added_and_removed_as_the_profile_lists_them():
    upsert()
    certifications = [
        {"type": "ISO 9001", "number": "Q-1", "issuer": "BSI", "issued_at": "2025-01-01", "expires_at": "2028-12-31"},
        {"type": "C-TPAT", "number": "", "issuer": "CBP"},
    ]

    change = upsert(updated_at="2026-11-28T11:00:00Z", certifications=certifications)
    assert "certifications" in change.changed_fields
    assert sorted(Certification.objects.values_list("type", "expires_at")) == [
        ("C-TPAT", None), ("ISO 9001", date(2028, 12, 31))
    ]

    upsert(updated_at="2026-11-28T12:00:00Z", certifications=certifications[1:])
    assert list(Certification.objects.values_list("type", flat=True)) == ["C-TPAT"]


def test_trading_addresses_follow_trading_grid_even_one_held_by_another_partner():
    other = TradingPartnerFactory()
    TradingAddressFactory(partner=other, address="ZZ:MOVED")
    upsert()

    change = upsert(updated_at="2026-11-28T11:00:00Z", trading_addresses=["ZZ:MOVED", "ZZ:ACME"])

    partner = TradingPartner.objects.get(tg_company_id=BUID)
    assert list(partner.trading_addresses.values_list("address", "is_primary")) == [
        ("ZZ:MOVED", True), ("ZZ:ACME", False)
    ]
    assert not other.trading_addresses.exists()
    assert "trading_addresses" in change.changed_fields
    assert "trading address ZZ:MOVED now belongs to GC00804444LX" in history(other)[-1].change_message


def test_a_managers_address_edit_overwritten_by_trading_grid_is_a_conflict():
    upsert()
    partner = TradingPartner.objects.get()
    TradingAddress.objects.create(partner=partner, address="ZZ:OURS")
    tg_sync.partner_manager_edits_record(partner=partner, fields=["trading_addresses"], user=PartnerManagerFactory())

    change = upsert(updated_at="2026-11-28T11:00:00Z")

    assert change.conflicts == ("trading_addresses",)
    assert not TradingAddress.objects.filter(address="ZZ:OURS").exists()
    assert any("Trading Grid replaced the trading addresses" in e.change_message for e in history(partner))


# --- Issues and Lens -----------------------------------------------------------------------------------------

ISSUE = {
    "id": "ISS-000001",
    "partner_company_id": BUID,
    "category": "asn_mismatch",
    "reason_code": "QTY_MISMATCH",
    "severity": "high",
    "status": "open",
    "title": "ASN 4711 quantity does not match PO 99",
    "po_number": "99",
    "asn_id": "4711",
    "amount": "125.50",
    "currency": "eur",
    "raised_at": "2026-11-27T09:00:00Z",
    "updated_at": "2026-11-27T09:00:00Z",
}


def test_an_issue_is_created_then_updated_with_its_status_transition():
    partner = TradingPartnerFactory(tg_company_id=BUID)

    created = tg_sync.issue_upsert_from_tg(issue=issue_from_tg(ISSUE))
    issue = CommunityIssue.objects.get()
    assert created.created and created.status_after == "open"
    assert (issue.partner, issue.category, issue.severity, str(issue.amount), issue.currency) == (
        partner, "asn_mismatch", "high", "125.50", "EUR"
    )

    resolved = tg_sync.issue_upsert_from_tg(
        issue=issue_from_tg({**ISSUE, "status": "resolved", "resolved_at": "2026-11-28T08:00:00Z",
                             "updated_at": "2026-11-28T08:00:00Z"})
    )
    assert resolved.changed_fields == ("status", "resolved_at")
    assert (resolved.status_before, resolved.status_after, resolved.status_changed) == ("open", "resolved", True)
    assert "status open → resolved" in history(issue)[-1].change_message

    again = tg_sync.issue_upsert_from_tg(issue=issue_from_tg({**ISSUE, "status": "resolved",
                                                              "resolved_at": "2026-11-28T08:00:00Z",
                                                              "updated_at": "2026-11-28T08:00:00Z"}))
    assert not again.changed

    stale = tg_sync.issue_upsert_from_tg(issue=issue_from_tg(ISSUE))
    assert stale.stale and CommunityIssue.objects.get().status == "resolved"


def test_an_issue_of_a_partner_we_dont_hold_is_unmatched_and_not_stored():
    change = tg_sync.issue_upsert_from_tg(issue=issue_from_tg(ISSUE))

    assert change.unmatched and not CommunityIssue.objects.exists()
    assert change.describe() == f"ISS-000001: no partner here for {BUID}; kept."


def lens_failure(**overrides):
    return {
        "transactionid": "T-1",
        "correlationid": "C-42",
        "status": "F",
        "statusdate": "2026-11-28T09:30:00Z",
        "arrivaltime": "2026-11-28T09:29:00Z",
        "senderaddress": "ZZ:PARTNERLINK",
        "receiveraddress": "ZZ:ACME",
        "sendername": "Us",
        "receivername": "Acme",
        "editype": "850",
        "errorcode": "E42",
        "externalerrormessage": "Mailbox unreachable",
        "contentkeys": [{"key": "purchase order number", "value": "PO-7"}],
        **overrides,
    }


def test_a_failed_lens_transaction_becomes_an_issue_of_the_partner_with_that_trading_address():
    partner = TradingPartnerFactory(tg_company_id=BUID)
    TradingAddressFactory(partner=partner, address="ZZ:ACME")

    change = tg_sync.lens_failure_upsert_from_tg(transaction_record=lens_failure(),
                                                 our_trading_addresses=["ZZ:PARTNERLINK"])

    issue = CommunityIssue.objects.get()
    assert change.created and issue.tg_issue_id == "lens:C-42"
    assert (issue.partner, issue.category, issue.severity, issue.po_number, issue.reason_code) == (
        partner, "edi_transaction_failure", "high", "PO-7", "E42"
    )
    # The issue's status is the community's to move: a later sighting of the failure does not reopen it.
    CommunityIssue.objects.update(status="resolved")
    again = tg_sync.lens_failure_upsert_from_tg(transaction_record=lens_failure(),
                                                our_trading_addresses=["ZZ:PARTNERLINK"])
    assert not again.changed and CommunityIssue.objects.get().status == "resolved"


def test_a_lens_failure_no_partner_here_has_the_address_of_is_unmatched():
    change = tg_sync.lens_failure_upsert_from_tg(transaction_record=lens_failure(receiveraddress="ZZ:NOBODY"),
                                                 our_trading_addresses=["ZZ:PARTNERLINK"])

    assert change.unmatched and not CommunityIssue.objects.exists()
    assert "ZZ:NOBODY" in change.describe()


def test_a_lens_transaction_that_did_not_fail_is_nothing():
    assert tg_sync.lens_failure_upsert_from_tg(transaction_record=lens_failure(status="C"),
                                               our_trading_addresses=[]) is None


def test_sync_cursors_only_move_forward():
    later = datetime(2026, 11, 28, 10, tzinfo=UTC)

    tg_sync.sync_cursor_advance(stream="s", value=later.isoformat())
    kept = tg_sync.sync_cursor_advance(stream="s", value=(later - timedelta(hours=1)).isoformat())

    assert kept == later.isoformat() == tg_sync.sync_cursor_get(stream="s")
