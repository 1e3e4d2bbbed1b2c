"""The CSV import engine through its service: messy real files accepted, bad input refused with exact
messages and nothing written."""

import io

import pytest
from django.contrib.admin.models import LogEntry

from partners.models import Contact, ContactSource, ProductLine, TradingAddress, TradingPartner
from partners.services import partner_import_file
from tests.partners.factories import PartnerManagerFactory, TradingPartnerFactory

pytestmark = pytest.mark.django_db

HEADER = (
    "tg_company_id,partner_name,partner_type,region,country_code,tier,product_lines,"
    "contact_email,first_name,last_name,role,phone,language"
)
ROWS = [
    "GC00804444LX,Acme Foods,supplier,EMEA,DE,strategic,Frozen Foods|Dairy,anna@acme.de,Anna,Schmidt,primary,+49 30 1234,de",
    "GC00804444LX,Acme Foods,supplier,EMEA,DE,strategic,Frozen Foods|Dairy,ops@acme.de,Olaf,Weber,logistics,,de",
    "GC00800001US,Swift Carriers,carrier,NA,US,standard,,dispatch@swift.com,Dan,Lee,logistics,,en",
]


def csv_bytes(*rows, header=HEADER, newline="\n", encoding="utf-8") -> bytes:
    return newline.join([header, *rows, ""]).encode(encoding)


def run(data: bytes, **kwargs):
    return partner_import_file(stream=io.BytesIO(data), **kwargs)


def nothing_written():
    return not TradingPartner.objects.exists() and not Contact.objects.exists() and not ProductLine.objects.exists()


def test_import_creates_partners_contacts_and_product_lines():
    result = run(csv_bytes(*ROWS))

    assert result.ok, result.problems
    assert result.summary == "created=3 updated=0 unchanged=0 errors=0"
    acme = TradingPartner.objects.get(tg_company_id="GC00804444LX")
    assert (acme.name, acme.partner_type, acme.region, acme.country_code, acme.tier) == (
        "Acme Foods",
        "supplier",
        "emea",
        "DE",
        "strategic",
    )
    assert sorted(acme.product_lines.values_list("name", flat=True)) == ["Dairy", "Frozen Foods"]
    anna = acme.contacts.get(email="anna@acme.de")
    assert (anna.first_name, anna.role, anna.phone, anna.language, anna.source) == (
        "Anna",
        "primary",
        "+49 30 1234",
        "de",
        ContactSource.IMPORT,
    )
    assert Contact.objects.count() == 3
    assert acme.partner_manager is None


def test_reimporting_the_same_file_changes_nothing_and_says_so():
    run(csv_bytes(*ROWS))
    before = list(Contact.objects.values_list("pk", "updated_at").order_by("pk"))

    result = run(csv_bytes(*ROWS))

    assert result.summary == "created=0 updated=0 unchanged=3 errors=0"
    assert result.changed_nothing
    assert "Nothing to change: every row matches what Partnerlink already holds." in result.notices
    assert list(Contact.objects.values_list("pk", "updated_at").order_by("pk")) == before


def test_changed_rows_are_updated_and_counted():
    run(csv_bytes(*ROWS))
    changed = [
        ROWS[0].replace("strategic", "preferred").replace("Frozen Foods|Dairy", "Dairy|Beverages"),
        ROWS[1]
        .replace("strategic", "preferred")
        .replace("Frozen Foods|Dairy", "Dairy|Beverages")
        .replace("Olaf", "Olav"),
        ROWS[2],
        "GC00800001US,Swift Carriers,carrier,NA,US,standard,,night@swift.com,Nia,Park,logistics,,en",
    ]

    result = run(csv_bytes(*changed), preview_limit=10)

    assert result.summary == "created=1 updated=2 unchanged=1 errors=0"
    acme = TradingPartner.objects.get(tg_company_id="GC00804444LX")
    assert acme.tier == "preferred"
    assert sorted(acme.product_lines.values_list("name", flat=True)) == ["Beverages", "Dairy"]
    assert acme.contacts.get(email="ops@acme.de").first_name == "Olav"
    outcomes = {(o.row, o.status) for o in result.preview}
    assert outcomes == {(2, "updated"), (3, "updated"), (4, "unchanged"), (5, "new")}


def test_empty_optional_cells_keep_what_is_stored():
    run(csv_bytes(*ROWS))
    sparse = "GC00804444LX,Acme Foods,supplier,,DE,,,anna@acme.de,,,,,"

    result = run(csv_bytes(sparse))

    assert result.summary == "created=0 updated=0 unchanged=1 errors=0"
    anna = Contact.objects.get(email="anna@acme.de")
    assert (anna.first_name, anna.phone) == ("Anna", "+49 30 1234")
    assert TradingPartner.objects.get(tg_company_id="GC00804444LX").tier == "strategic"


def test_dry_run_counts_exactly_and_writes_nothing():
    result = run(csv_bytes(*ROWS), dry_run=True)

    assert result.summary == "created=3 updated=0 unchanged=0 errors=0"
    assert nothing_written()


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda text: text.encode("utf-8-sig"), id="utf8-bom"),
        pytest.param(lambda text: text.encode("cp1252"), id="windows-1252"),
        pytest.param(lambda text: text.encode("utf-16"), id="utf16-bom"),
        pytest.param(lambda text: text.encode("utf-8"), id="utf8"),
    ],
)
def test_encodings_excel_writes_are_read_correctly(encode):
    text = HEADER + "\r\nGC00804444LX,Müller Frischdienst,supplier,EMEA,DE,,,jörg@müller.de,Jörg,Müller,,,de\r\n"
    text = text.replace("jörg@müller.de", "joerg@mueller.de")

    result = run(encode(text))

    assert result.ok, result.problems
    partner = TradingPartner.objects.get()
    assert partner.name == "Müller Frischdienst"
    assert partner.contacts.get().first_name == "Jörg"


def test_semicolons_crlf_header_case_spaces_blank_lines_and_trailing_columns():
    header = " TG_Company_ID ; Partner Name;PARTNER_TYPE; country_code ;Contact_Email ;;"
    rows = [
        "",
        "GC00804444LX;Acme Foods;Supplier; de ; Anna@Acme.DE ;;",
        "   ",
        ";;;;;;",
        "GC00800001US;Swift Carriers;3PL;US;dispatch@swift.com;;",
    ]

    result = run(csv_bytes(*rows, header=header, newline="\r\n"))

    assert result.ok, result.problems
    assert result.summary == "created=2 updated=0 unchanged=0 errors=0"
    assert Contact.objects.filter(email="anna@acme.de", partner__country_code="DE").exists()
    assert TradingPartner.objects.get(tg_company_id="GC00800001US").partner_type == "3pl"


def test_quoted_cells_with_commas_and_newlines():
    row = 'GC00804444LX,"Acme Foods, Inc.",supplier,NA,US,,"Dairy|Frozen Foods",anna@acme.com,"Anna ""AJ""",Smith,,,en'
    result = run(csv_bytes(row))

    assert result.ok, result.problems
    assert TradingPartner.objects.get().name == "Acme Foods, Inc."
    assert Contact.objects.get().first_name == 'Anna "AJ"'


def test_unknown_columns_are_ignored_and_reported():
    result = run(
        csv_bytes(
            "GC00804444LX,Acme,supplier,DE,a@acme.de,call back",
            header=("tg_company_id,partner_name,partner_type,country_code,contact_email,notes"),
        )
    )

    assert result.ok
    assert "Ignored unknown columns: notes." in result.notices


# --- Bad input: exact messages, nothing written -----------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            "GC00804444LX,Acme,supplier,EMEA,DE,,,anna@,Anna,,,,",
            "Row 2, column contact_email: 'anna@' is not a valid email address.",
        ),
        (
            "GC00804444LX,Acme,wholesaler,EMEA,DE,,,anna@acme.de,Anna,,,,",
            "Row 2, column partner_type: 'wholesaler' is not a partner type; use one of supplier, distributor, "
            "carrier, 3pl, customer, reseller.",
        ),
        (
            "GC0080,Acme,supplier,EMEA,DE,,,anna@acme.de,Anna,,,,",
            "Row 2, column tg_company_id: 'GC0080' is not a Trading Grid company id (like GC00804444LX).",
        ),
        (
            "GC00804444LX,Acme,supplier,EMEA,XX,,,anna@acme.de,Anna,,,,",
            "Row 2, column country_code: 'XX' is not an ISO 3166-1 alpha-2 country code (like DE or US).",
        ),
        (
            "GC00804444LX,Acme,supplier,Mars,DE,,,anna@acme.de,Anna,,,,",
            "Row 2, column region: 'Mars' is not a region; use one of na, latam, emea, apac.",
        ),
        (
            "GC00804444LX,Acme,supplier,EMEA,DE,,,anna@acme.de,Anna,,boss,,",
            "Row 2, column role: 'boss' is not a contact role; use one of primary, technical, compliance, finance, "
            "logistics, sales.",
        ),
        (
            "GC00804444LX,,supplier,EMEA,DE,,,anna@acme.de,Anna,,,,",
            "Row 2, column partner_name: a value is required.",
        ),
        (
            "GC00804444LX,Acme,supplier,EMEA,DE,,,anna@acme.de,Anna,,,call me,",
            "Row 2, column phone: 'call me' is not a phone number.",
        ),
        (
            "GC00804444LX,Acme,supplier,EMEA,DE,,,anna@acme.de,Anna,,,,klingon",
            "Row 2, column language: 'klingon' is not a language code (like en, de or pt-BR).",
        ),
    ],
)
def test_bad_cell_is_named_by_row_and_column_and_nothing_is_written(row, expected):
    good = "GC00800001US,Swift Carriers,carrier,NA,US,standard,,dispatch@swift.com,Dan,Lee,logistics,,en"

    result = run(csv_bytes(good, row))

    assert [str(p) for p in result.problems] == [expected.replace("Row 2", "Row 3")]
    assert result.error_rows == 1
    assert nothing_written()


def test_every_error_in_the_file_is_reported_at_once():
    rows = [
        "GC00804444LX,Acme,supplier,EMEA,DE,,,anna@,Anna,,,,",
        "GC00800001US,Swift,carrier,NA,US,,,ok@swift.com,,,,,",
        "bad,Other,alien,EMEA,ZZ,,,x@y.com,,,,,",
    ]

    result = run(csv_bytes(*rows))

    assert [str(p) for p in result.problems] == [
        "Row 2, column contact_email: 'anna@' is not a valid email address.",
        "Row 4, column tg_company_id: 'bad' is not a Trading Grid company id (like GC00804444LX).",
        "Row 4, column partner_type: 'alien' is not a partner type; use one of supplier, distributor, carrier, 3pl, "
        "customer, reseller.",
        "Row 4, column country_code: 'ZZ' is not an ISO 3166-1 alpha-2 country code (like DE or US).",
    ]
    assert result.summary == "created=0 updated=0 unchanged=0 errors=2"
    assert nothing_written()


def test_the_same_contact_twice_in_one_file():
    rows = [ROWS[0], ROWS[2], ROWS[0].replace("anna@acme.de", " ANNA@acme.de ")]

    result = run(csv_bytes(*rows))

    assert [str(p) for p in result.problems] == [
        "Row 4, column contact_email: contact anna@acme.de of GC00804444LX already appears in row 2."
    ]
    assert nothing_written()


def test_row_numbers_count_blank_lines_like_a_spreadsheet():
    result = run(csv_bytes("", "", ROWS[0].replace("anna@acme.de", "nope")))

    assert [str(p) for p in result.problems] == ["Row 4, column contact_email: 'nope' is not a valid email address."]


def test_partner_columns_that_disagree_between_rows():
    rows = [ROWS[0], ROWS[1].replace("Acme Foods", "ACME Foods AG")]

    result = run(csv_bytes(*rows))

    assert [str(p) for p in result.problems] == [
        "Row 3, column partner_name: 'ACME Foods AG' differs from 'Acme Foods' given for GC00804444LX in row 2."
    ]
    assert nothing_written()


def test_missing_required_columns_are_named_before_any_row_is_read():
    header = "tg_company_id,partner_name,country_code,email"

    result = run(csv_bytes("GC00804444LX,Acme,DE,anna@", header=header))

    assert [str(p) for p in result.problems] == [
        "Missing required columns: partner_type, contact_email. The header row has: tg_company_id, partner_name, "
        "country_code, email."
    ]
    assert nothing_written()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"PK\x03\x04\x14\x00\x06\x00" + bytes(200),
            "The file is not a CSV file: it looks like a ZIP archive or an "
            "Excel/Word file (.xlsx, .docx). Save it as CSV and try again.",
        ),
        (
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
            "The file is not a CSV file: it looks like a PDF document. Save it as CSV and try again.",
        ),
        (b"\x00\x01\x02\x03binary\x00junk", "The file is not a CSV file: it contains binary data."),
        (b"", "The file is empty."),
        (HEADER.encode() + b"\n", "The file has a header but no data rows."),
        (
            b"tg_company_id\x81,partner\x8d\n",
            "The file is not a CSV file: it cannot be read as UTF-8 or Windows-1252 text.",
        ),
    ],
)
def test_files_that_are_not_partner_lists(data, expected):
    result = run(data)

    assert [str(p) for p in result.problems] == [expected]
    assert not result.ok
    assert nothing_written()


def test_a_text_file_that_is_not_csv_names_the_missing_columns():
    result = run(b"Dear partner,\nplease find attached our list.\n")

    assert str(result.problems[0]).startswith(
        "Missing required columns: tg_company_id, partner_name, partner_type, country_code, contact_email."
    )


def test_row_with_more_values_than_the_header():
    result = run(csv_bytes(ROWS[0] + ",extra,values"))

    assert [str(p) for p in result.problems] == ["Row 2: the row has 15 values but the header has 13 columns."]
    assert nothing_written()


# --- Who may change what ---------------------------------------------------------------------------


def test_partner_manager_column_assigns_a_staff_user_by_email():
    manager = PartnerManagerFactory(email="Maria.Chen@example.com")
    header = HEADER + ",partner_manager"

    result = run(csv_bytes(ROWS[2] + ",maria.chen@EXAMPLE.com", header=header))

    assert result.ok, result.problems
    assert TradingPartner.objects.get().partner_manager == manager


def test_unknown_partner_manager_is_an_error():
    result = run(csv_bytes(ROWS[2] + ",nobody@example.com", header=HEADER + ",partner_manager"))

    assert [str(p) for p in result.problems] == [
        "Row 2, column partner_manager: 'nobody@example.com' is not the email of a Partnerlink staff user."
    ]


def test_new_partners_go_to_the_default_manager_and_existing_ones_keep_theirs():
    keeper = PartnerManagerFactory()
    TradingPartnerFactory(tg_company_id="GC00800001US", partner_manager=keeper)
    importer = PartnerManagerFactory(is_superuser=True)

    result = run(csv_bytes(*ROWS), actor=importer, default_manager=importer)

    assert result.ok, result.problems
    assert TradingPartner.objects.get(tg_company_id="GC00804444LX").partner_manager == importer
    assert TradingPartner.objects.get(tg_company_id="GC00800001US").partner_manager == keeper


def test_a_partner_manager_cannot_change_another_managers_partner_by_import():
    owner = PartnerManagerFactory(first_name="Jane", last_name="Doe")
    TradingPartnerFactory(tg_company_id="GC00800001US", partner_manager=owner, name="Swift Carriers")
    intruder = PartnerManagerFactory()

    result = run(csv_bytes(*ROWS), actor=intruder, default_manager=intruder)

    assert [str(p) for p in result.problems] == [
        "Row 4, column tg_company_id: GC00800001US is managed by Jane Doe; only its partner manager or an "
        "administrator can change it."
    ]
    assert not TradingPartner.objects.filter(tg_company_id="GC00804444LX").exists()


def test_an_import_by_a_person_is_recorded_in_each_partners_history():
    importer = PartnerManagerFactory(is_superuser=True)

    run(csv_bytes(*ROWS), actor=importer, default_manager=importer, source_label="list.csv")

    entries = LogEntry.objects.filter(user=importer).order_by("object_repr")
    assert [(e.object_repr, e.change_message) for e in entries] == [
        ("GC00800001US", "Created by CSV import of list.csv."),
        ("GC00804444LX", "Created by CSV import of list.csv."),
    ]


def test_exported_formula_guard_apostrophe_is_removed_on_import():
    row = "GC00804444LX,Acme,supplier,EMEA,DE,,,anna@acme.de,'=Anna,,,'+49 30 1234,de"

    result = run(csv_bytes(row))

    assert result.ok, result.problems
    contact = Contact.objects.get()
    assert (contact.first_name, contact.phone) == ("=Anna", "+49 30 1234")


def test_trading_addresses_are_left_alone():
    partner = TradingPartnerFactory(tg_company_id="GC00804444LX")
    TradingAddress.objects.create(partner=partner, address="ZZ:ACME")

    run(csv_bytes(ROWS[0]))

    assert list(partner.trading_addresses.values_list("address", flat=True)) == ["ZZ:ACME"]


def test_partner_plans_spilled_to_disk_keep_merges_and_conflicts(monkeypatch):
    """With a tiny in-memory cache every partner plan is written out and read back between its rows."""
    from partners.imports import ScratchStore

    monkeypatch.setattr(ScratchStore, "CACHED_PLANS", 1)
    header = "tg_company_id,partner_name,partner_type,country_code,tier,contact_email"
    rows = [
        "GC00000001AA,One,supplier,DE,,a@one.de",
        "GC00000002AA,Two,carrier,US,standard,a@two.com",
        "GC00000001AA,One,supplier,DE,strategic,b@one.de",  # fills One's blank tier after eviction
        "GC00000002AA,Two,carrier,US,standard,b@two.com",
    ]

    result = run(csv_bytes(*rows, header=header))

    assert result.summary == "created=4 updated=0 unchanged=0 errors=0"
    assert TradingPartner.objects.get(tg_company_id="GC00000001AA").tier == "strategic"

    conflicting = rows + ["GC00000001AA,One,supplier,DE,preferred,c@one.de"]
    result = run(csv_bytes(*conflicting, header=header))
    assert [str(p) for p in result.problems] == [
        "Row 6, column tier: 'preferred' differs from 'strategic' given for GC00000001AA in row 4."
    ]
