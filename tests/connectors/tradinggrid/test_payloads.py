"""Pure mapping from Trading Grid records to normalized values, raw records kept."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from connectors.tradinggrid.payloads import (
    acknowledgement_from_tg,
    attendance_from_tg,
    contact_from_tg,
    directory_entry_from_tg,
    issue_from_tg,
    lens_content_keys,
    lens_transaction_to_issue,
    normalize_email,
    parse_date,
    parse_datetime,
    partner_from_tg,
    registration_from_tg,
    trading_addresses_from_tg,
    webhook_event_from_tg,
)

PROFILE = {
    "company_id": "gc00804444lx",
    "partner_type": "Supplier",
    "region": "EMEA",
    "country_code": "it",
    "product_lines": ["Grocery", "grocery", " Frozen foods "],
    "tier": "preferred",
    "onboarding_status": "approved",
    "compliance_status": "Non-Compliant",
    "certifications": [
        {"type": "ISO 9001", "number": "ISO-1", "issuer": "BSI", "issued_at": "2024-01-15",
         "expires_at": "2027-01-14"},
        {"type": "", "number": "ignored"},
        "not a certification",
    ],
    "contract_renewal_at": "2026-12-31",
    "compliance_review_at": "2026-06-30T10:00:00Z",
    "contacts": [
        {"email": "  Giulia.Rossi@Verona.EXAMPLE ", "first_name": "Giulia", "last_name": "Rossi", "role": "primary",
         "language": "it", "timezone": "Europe/Rome"},
        {"email": "giulia.rossi@verona.example", "first_name": "Duplicate"},
        {"email": "not-an-email", "first_name": "Nobody"},
        {"email": "ops@verona.example", "role": "night shift"},
    ],
    "custom": {"engagement_score": 71},
    "updated_at": "2026-01-05T08:30:00.000001Z",
}
DIRECTORY_ENTRY = {
    "partnerCompanyId": "GC00804444LX",
    "partnerCompanyName": "Verona Vittles",
    "legalName": "Verona Vittles S.r.l.",
    "status": "Active",
    "tradingAddresses": [{"qualifier": "zz", "id": "demosupplier5"}, {"address": "01:123456789"}, "ZZ:DEMOSUPPLIER5"],
}


def test_a_partner_from_profile_and_directory_entry():
    partner = partner_from_tg(profile=PROFILE, directory_entry=DIRECTORY_ENTRY)
    assert partner.tg_company_id == "GC00804444LX"
    assert (partner.name, partner.legal_name) == ("Verona Vittles", "Verona Vittles S.r.l.")
    assert (partner.partner_type, partner.region, partner.country_code, partner.tier) == (
        "supplier", "emea", "IT", "preferred")
    assert (partner.onboarding_status, partner.compliance_status) == ("approved", "non_compliant")
    assert partner.product_lines == ("Grocery", "Frozen foods")
    assert partner.trading_addresses == ("ZZ:DEMOSUPPLIER5", "01:123456789")
    assert [c.type for c in partner.certifications] == ["ISO 9001"]
    assert partner.certifications[0].expires_at == date(2027, 1, 14)
    assert partner.contract_renewal_at == date(2026, 12, 31)
    assert partner.compliance_review_at == date(2026, 6, 30)
    assert [c.email for c in partner.contacts] == ["giulia.rossi@verona.example", "ops@verona.example"]
    assert partner.contacts[0].first_name == "Giulia" and partner.contacts[1].role is None
    assert partner.custom == {"engagement_score": 71}
    assert partner.updated_at == datetime(2026, 1, 5, 8, 30, 0, 1, tzinfo=UTC)
    assert partner.raw == {"profile": PROFILE, "directory": DIRECTORY_ENTRY}


def test_unknown_values_become_none_rather_than_garbage():
    partner = partner_from_tg(profile={"partner_type": "wizard", "region": "mars", "tier": "platinum",
                                       "onboarding_status": "???", "country_code": "Italy",
                                       "contract_renewal_at": "next spring", "certifications": None,
                                       "contacts": None, "custom": "not an object"},
                              company_id="GC00804444LX")
    assert partner.tg_company_id == "GC00804444LX"
    assert (partner.partner_type, partner.region, partner.tier, partner.onboarding_status,
            partner.country_code, partner.contract_renewal_at) == (None, None, None, None, None, None)
    assert partner.contacts == () and partner.certifications == () and partner.custom == {}


@pytest.mark.parametrize(("raw", "expected"), [("third_party_logistics", "3pl"), ("3PL", "3pl"),
                                               ("Vendor", "supplier"), ("retailer", "customer")])
def test_partner_type_aliases(raw, expected):
    assert partner_from_tg(profile={"partner_type": raw}, company_id="GC00804444LX").partner_type == expected


def test_a_profile_without_any_company_id_is_refused():
    with pytest.raises(ValueError):
        partner_from_tg(profile={"partner_type": "supplier"})


@pytest.mark.parametrize(
    "record",
    [
        {"partnerCompanyId": "GC00804444LX", "partnerCompanyName": "Verona Vittles"},
        {"companyId": "gc00804444lx", "companyName": "Verona Vittles"},
        {"buid": "GC00804444LX", "name": "Verona Vittles"},
    ],
)
def test_directory_entries_in_several_spellings(record):
    entry = directory_entry_from_tg(record)
    assert (entry.tg_company_id, entry.name) == ("GC00804444LX", "Verona Vittles")
    assert entry.raw == record


def test_a_directory_entry_without_an_id_is_skipped():
    assert directory_entry_from_tg({"partnerCompanyName": "Nameless"}) is None


def test_trading_addresses_in_every_shape():
    assert trading_addresses_from_tg("zz:abc, 01:123456789") == ("ZZ:ABC", "01:123456789")
    assert trading_addresses_from_tg([{"ediQualifier": "14", "ediId": "0614141000005"}, "bad", "ZZ:"]) == (
        "14:0614141000005",)
    assert trading_addresses_from_tg(None) == ()


def test_a_community_management_user_is_a_contact():
    contact = contact_from_tg({"userId": "GCP6U3F660I61", "loginId": "herman", "firstName": "Herman",
                               "lastName": "Munster", "preferredLanguage": "en",
                               "preferredTimezone": "America/New_York",
                               "contactInformation": {"email": " Herman@Example.COM", "phoneNumber": "5551212"}})
    assert (contact.email, contact.first_name, contact.phone, contact.timezone) == (
        "herman@example.com", "Herman", "5551212", "America/New_York")
    assert contact_from_tg({"firstName": "No email"}) is None


def test_a_community_issue():
    issue = issue_from_tg({
        "id": "ISS-000042", "partner_company_id": "GC00804444LX", "category": "invoice_po_mismatch",
        "reason_code": "PRICE_VARIANCE", "severity": "high", "status": "awaiting_partner",
        "title": "Invoice INV-1 does not match PO PO1", "amount": "1250.50", "currency": "eur",
        "raised_at": "2026-01-10T09:00:00Z", "due_at": "2026-01-17T09:00:00Z", "resolved_at": None,
    })
    assert (issue.tg_issue_id, issue.category, issue.status, issue.severity) == (
        "ISS-000042", "invoice_po_mismatch", "awaiting_partner", "high")
    assert issue.amount == Decimal("1250.50") and issue.currency == "EUR"
    assert issue.raised_at == datetime(2026, 1, 10, 9, tzinfo=UTC) and issue.resolved_at is None
    assert issue.source == "community"
    odd = issue_from_tg({"id": "ISS-1", "category": "alien", "status": "weird", "amount": "lots"})
    assert (odd.category, odd.status, odd.amount, odd.title) == ("other", "open", None, "Issue ISS-1")


LENS = {
    "transactionid": "6c1c", "correlationid": "60e20a6e-c1bb-48d4-98c3-90cb8823fc8a",
    "arrivaltime": "2026-02-01T10:00:00Z", "statusdate": "2026-02-01T10:05:00Z",
    "sendername": "Verona Vittles", "senderaddress": "zz:verona", "receivername": "Partnerlink",
    "receiveraddress": "ZZ:PARTNERLINK", "editype": "856", "errorcode": "X12-ISA-13", "errortype": "Validation",
    "externalerrormessage": "ISA13 is not numeric", "fastatus": "", "fastatusdate": None,
    "contentkeys": [{"key": "Purchase Order Number", "value": "PO4500012345"},
                    {"key": "shipment identification", "value": "ASN778"}],
}


@pytest.mark.parametrize(
    ("fields", "severity", "raised_at"),
    [
        ({"status": "V"}, "medium", "2026-02-01T10:05:00Z"),
        ({"status": "F"}, "high", "2026-02-01T10:05:00Z"),
        ({"status": "H"}, "medium", "2026-02-01T10:05:00Z"),
        ({"status": "C", "fastatus": "R", "fastatusdate": "2026-02-01T12:00:00Z"}, "high", "2026-02-01T12:00:00Z"),
        ({"status": "C", "fastatus": "E", "fastatusdate": "2026-02-01T12:00:00Z"}, "low", "2026-02-01T12:00:00Z"),
        ({"status": "C", "fastatus": "T", "fastatusdate": "2026-02-01T12:00:00Z"}, "medium", "2026-02-01T12:00:00Z"),
    ],
)
def test_failed_lens_transactions_are_edi_failure_issues(fields, severity, raised_at):
    issue = lens_transaction_to_issue({**LENS, **fields}, our_trading_addresses=["zz:partnerlink"])
    assert issue.tg_issue_id == "lens:60e20a6e-c1bb-48d4-98c3-90cb8823fc8a"
    assert issue.correlation_id == "60e20a6e-c1bb-48d4-98c3-90cb8823fc8a"
    assert (issue.category, issue.status, issue.severity, issue.source) == (
        "edi_transaction_failure", "open", severity, "lens")
    assert issue.raised_at == parse_datetime(raised_at)
    assert issue.partner_trading_addresses == ("ZZ:VERONA",)
    assert (issue.po_number, issue.asn_id) == ("PO4500012345", "ASN778")
    assert issue.reason_code == "X12-ISA-13"
    assert "ISA13 is not numeric" in issue.description
    assert issue.raw["transactionid"] == "6c1c"


@pytest.mark.parametrize("fields", [{"status": "C"}, {"status": "U"}, {"status": "C", "fastatus": "A"},
                                    {"status": "F", "correlationid": "", "transactionid": ""}])
def test_other_transactions_are_not_issues(fields):
    assert lens_transaction_to_issue({**LENS, **fields}) is None


def test_content_keys_as_list_or_mapping():
    assert lens_content_keys(LENS) == {"purchase order number": "PO4500012345", "shipment identification": "ASN778"}
    assert lens_content_keys({"contentkeys": {"SCAC": "ABCD"}}) == {"scac": "ABCD"}
    assert lens_content_keys({}) == {}


def test_acknowledgements_registrations_attendance():
    ack = acknowledgement_from_tg({"partner_company_id": "gc00804444lx", "contact_email": " A@B.example",
                                   "version": 3, "acknowledged_at": "2026-02-01T10:00:00Z"}, document_id="DOC-1")
    assert (ack.partner_company_id, ack.contact_email, ack.version) == ("GC00804444LX", "a@b.example", "3")
    registration = registration_from_tg({"contact_email": "A@B.example", "registered_at": "2026-02-01"},
                                        event_id="EVT-1")
    assert registration.registered_at == datetime(2026, 2, 1, tzinfo=UTC)
    attendance = attendance_from_tg({"contact_email": "a@b.example", "attended": "true", "minutes": "45"},
                                    event_id="EVT-1")
    assert (attendance.attended, attendance.minutes) == (True, 45)
    no_show = attendance_from_tg({"contact_email": "a@b.example", "attended": False}, event_id="EVT-1")
    assert (no_show.attended, no_show.minutes) == (False, 0)


def test_webhook_bodies():
    event = webhook_event_from_tg({"type": "issue.created", "timestamp": "2026-02-01T10:00:00Z",
                                   "data": {"issue": {"id": "ISS-1"}}})
    assert event.type == "issue.created" and event.data == {"issue": {"id": "ISS-1"}}
    assert event.occurred_at == datetime(2026, 2, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError):
        webhook_event_from_tg({"data": {}})


def test_scalars():
    assert normalize_email("  Mixed.Case@Example.COM\n") == "mixed.case@example.com"
    assert normalize_email("no at sign") is None and normalize_email(None) is None
    assert parse_datetime("2026-02-01T10:00:00+02:00") == datetime(2026, 2, 1, 8, tzinfo=UTC)
    assert parse_datetime(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_datetime("garbage") is None
    assert parse_date("2026-02-01T23:30:00-05:00") == date(2026, 2, 2)
    assert parse_date("2026-13-01") is None
