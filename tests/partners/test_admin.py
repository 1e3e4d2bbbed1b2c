"""The admin partner managers work in: list, search, filters, scoping, history, import and export."""

import csv
import io

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from partners.models import Contact, ImportStatus, PartnerImport, ProductLine, TradingPartner
from tests.partners.factories import (
    AdministratorFactory,
    CommunityIssueFactory,
    ContactFactory,
    PartnerManagerFactory,
    TradingAddressFactory,
    TradingPartnerFactory,
)

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:partners_tradingpartner_changelist")


@pytest.fixture
def manager(client):
    user = PartnerManagerFactory()
    client.force_login(user)
    return user


@pytest.fixture
def administrator(client):
    user = AdministratorFactory()
    client.force_login(user)
    return user


def make_partners(count, manager):
    lines = [ProductLine.objects.get_or_create(name=f"Line {i}")[0] for i in range(3)]
    for index in range(count):
        partner = TradingPartnerFactory(partner_manager=manager)
        partner.product_lines.set(lines[: index % 3 + 1])
        ContactFactory.create_batch(2, partner=partner)
        TradingAddressFactory(partner=partner)
        CommunityIssueFactory(partner=partner, status="open" if index % 2 else "resolved")


def test_partner_list_uses_a_constant_number_of_queries(client, administrator, django_assert_max_num_queries):
    make_partners(5, administrator)
    with django_assert_max_num_queries(12) as small:
        assert client.get(CHANGELIST).status_code == 200

    make_partners(195, administrator)
    with django_assert_max_num_queries(len(small.captured_queries)) as large:
        response = client.get(CHANGELIST + "?all=")
    assert response.status_code == 200
    assert response.context["cl"].result_count == 200
    assert len(large.captured_queries) == len(small.captured_queries)


def test_list_shows_counts_and_product_lines(client, administrator):
    partner = TradingPartnerFactory(name="Acme Foods", partner_manager=administrator)
    partner.product_lines.add(ProductLine.objects.create(name="Dairy"))
    ContactFactory.create_batch(3, partner=partner)
    CommunityIssueFactory(partner=partner, status="open")
    CommunityIssueFactory(partner=partner, status="closed")

    response = client.get(CHANGELIST)

    row = response.context["cl"].result_list[0]
    assert (row.contact_count, row.open_issue_count) == (3, 1)
    assert "Dairy" in response.content.decode()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Acme", "Acme Foods"),
        ("GC00804444LX", "Acme Foods"),
        ("ZZ:ACMEFOODS", "Acme Foods"),
        ("anna@acme.de", "Acme Foods"),
    ],
)
def test_search_by_name_buid_trading_address_and_contact_email(client, administrator, query, expected):
    acme = TradingPartnerFactory(name="Acme Foods", tg_company_id="GC00804444LX")
    TradingAddressFactory(partner=acme, address="ZZ:ACMEFOODS")
    ContactFactory(partner=acme, email="anna@acme.de")
    ContactFactory(partner=acme, email="ops@acme.de")
    other = TradingPartnerFactory(name="Swift Carriers")
    ContactFactory(partner=other, email="anna@swift.com")

    response = client.get(CHANGELIST, {"q": query})

    assert [p.name for p in response.context["cl"].result_list] == [expected]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"partner_type__exact": "carrier"}, ["Carrier Co"]),
        ({"region__exact": "apac"}, ["Carrier Co"]),
        ({"onboarding_status__exact": "testing"}, ["Carrier Co"]),
        ({"tier__exact": "strategic"}, ["Supplier Co"]),
        ({"open_issues": "yes"}, ["Supplier Co"]),
        ({"open_issues": "no"}, ["Carrier Co"]),
    ],
)
def test_filters(client, administrator, params, expected):
    supplier = TradingPartnerFactory(name="Supplier Co", tier="strategic")
    CommunityIssueFactory(partner=supplier, status="awaiting_partner")
    carrier = TradingPartnerFactory(
        name="Carrier Co", partner_type="carrier", region="apac", onboarding_status="testing"
    )
    CommunityIssueFactory(partner=carrier, status="closed")

    response = client.get(CHANGELIST, params)

    assert [p.name for p in response.context["cl"].result_list] == expected


def test_filter_by_product_line_and_partner_manager(client, administrator):
    dairy = ProductLine.objects.create(name="Dairy")
    other_manager = PartnerManagerFactory()
    one = TradingPartnerFactory(name="One")
    one.product_lines.add(dairy)
    TradingPartnerFactory(name="Two", partner_manager=other_manager)

    by_line = client.get(CHANGELIST, {"product_lines__id__exact": dairy.pk})
    by_manager = client.get(CHANGELIST, {"partner_manager__id__exact": other_manager.pk})

    assert [p.name for p in by_line.context["cl"].result_list] == ["One"]
    assert [p.name for p in by_manager.context["cl"].result_list] == ["Two"]


def test_partner_page_shows_contacts_addresses_and_issue_history(client, administrator):
    partner = TradingPartnerFactory()
    ContactFactory(partner=partner, email="anna@acme.de")
    TradingAddressFactory(partner=partner, address="ZZ:ACME")
    CommunityIssueFactory(partner=partner, title="Shipment SH1 delayed at Rotterdam")

    response = client.get(reverse("admin:partners_tradingpartner_change", args=[partner.pk]))

    page = response.content.decode()
    assert response.status_code == 200
    assert "anna@acme.de" in page and "ZZ:ACME" in page and "Shipment SH1 delayed at Rotterdam" in page


def test_a_partner_manager_sees_only_their_partners(client, manager):
    mine = TradingPartnerFactory(name="Mine", partner_manager=manager)
    theirs = TradingPartnerFactory(name="Theirs", partner_manager=PartnerManagerFactory())

    listing = client.get(CHANGELIST)
    own_page = client.get(reverse("admin:partners_tradingpartner_change", args=[mine.pk]))
    other_page = client.get(reverse("admin:partners_tradingpartner_change", args=[theirs.pk]), follow=True)
    other_history = client.get(reverse("admin:partners_tradingpartner_history", args=[theirs.pk]), follow=True)

    assert [p.name for p in listing.context["cl"].result_list] == ["Mine"]
    assert own_page.status_code == 200
    assert "Theirs" not in other_page.content.decode()
    assert "doesn’t exist" in other_page.content.decode()
    assert "Theirs" not in other_history.content.decode()


def test_a_partner_manager_cannot_change_another_managers_partner(client, manager):
    theirs = TradingPartnerFactory(name="Theirs", partner_manager=PartnerManagerFactory())
    url = reverse("admin:partners_tradingpartner_change", args=[theirs.pk])

    client.post(url, {"name": "Hijacked"})

    theirs.refresh_from_db()
    assert theirs.name == "Theirs"


def test_a_partner_manager_sees_only_contacts_and_issues_of_their_partners(client, manager):
    mine = TradingPartnerFactory(partner_manager=manager)
    ContactFactory(partner=mine, email="mine@x.com")
    ContactFactory(email="theirs@x.com")
    CommunityIssueFactory(partner=mine, title="Mine")
    CommunityIssueFactory(title="Theirs")

    contacts = client.get(reverse("admin:partners_contact_changelist"))
    issues = client.get(reverse("admin:partners_communityissue_changelist"))

    assert [c.email for c in contacts.context["cl"].result_list] == ["mine@x.com"]
    assert [i.title for i in issues.context["cl"].result_list] == ["Mine"]


def test_administrators_see_every_partner(client, administrator):
    TradingPartnerFactory(name="A", partner_manager=PartnerManagerFactory())
    TradingPartnerFactory(name="B", partner_manager=None)

    response = client.get(CHANGELIST)

    assert sorted(p.name for p in response.context["cl"].result_list) == ["A", "B"]


def test_admin_changes_are_recorded_in_the_partner_history(client, administrator):
    partner = TradingPartnerFactory(name="Acme", partner_manager=administrator, tier="standard")
    url = reverse("admin:partners_tradingpartner_change", args=[partner.pk])
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(
        {
            "product_lines": [],
            "tier": "strategic",
            "partner_manager": administrator.pk,
            "country_code": "DE",
            "trading_addresses-TOTAL_FORMS": 0,
            "trading_addresses-INITIAL_FORMS": 0,
            "contacts-TOTAL_FORMS": 1,
            "contacts-INITIAL_FORMS": 0,
            "contacts-0-email": " New.Person@Acme.DE ",
            "contacts-0-role": "finance",
            "journey_triggers-TOTAL_FORMS": 0,
            "journey_triggers-INITIAL_FORMS": 0,
            "issues-TOTAL_FORMS": 0,
            "issues-INITIAL_FORMS": 0,
            "certifications-TOTAL_FORMS": 0,
            "certifications-INITIAL_FORMS": 0,
        }
    )

    response = client.post(url, data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    partner.refresh_from_db()
    assert partner.tier == "strategic"
    assert partner.contacts.get().email == "new.person@acme.de"
    entry = LogEntry.objects.get(object_id=str(partner.pk))
    assert entry.user == administrator
    assert "Tier" in entry.get_change_message()
    history = client.get(reverse("admin:partners_tradingpartner_history", args=[partner.pk]))
    assert "Tier" in history.content.decode()


# --- Import through the admin ---------------------------------------------------------------------

IMPORT_ADD = reverse("admin:partners_partnerimport_add")
GOOD = (
    "tg_company_id,partner_name,partner_type,country_code,contact_email\n"
    "GC00804444LX,Acme Foods,supplier,DE,anna@acme.de\n"
    "GC00800001US,Swift Carriers,carrier,US,dispatch@swift.com\n"
)


def upload(client, text, name="partners.csv"):
    return client.post(IMPORT_ADD, {"file": SimpleUploadedFile(name, text.encode(), "text/csv")}, follow=True)


def test_upload_previews_then_confirm_imports(client, manager):
    response = upload(client, GOOD)

    partner_import = PartnerImport.objects.get()
    assert partner_import.status == ImportStatus.PREVIEWED
    assert not TradingPartner.objects.exists()
    page = response.content.decode()
    assert "created=2 updated=0 unchanged=0 errors=0" in page
    assert page.count('class="outcome-new"') == 2

    confirm = client.post(reverse("admin:partners_partnerimport_confirm", args=[partner_import.pk]), follow=True)

    partner_import.refresh_from_db()
    assert partner_import.status == ImportStatus.DONE
    assert "Imported: created=2 updated=0 unchanged=0 errors=0." in confirm.content.decode()
    assert set(TradingPartner.objects.values_list("partner_manager", flat=True)) == {manager.pk}
    assert LogEntry.objects.filter(user=manager).count() == 2


def test_upload_with_errors_shows_every_error_and_cannot_be_confirmed(client, manager):
    text = GOOD + "bad,X,alien,DE,x@y.com\nGC00800002US,Y,carrier,US,nope\n"

    response = upload(client, text)

    partner_import = PartnerImport.objects.get()
    assert partner_import.status == ImportStatus.FAILED
    page = response.content.decode()
    for message in (
        "Row 4, column tg_company_id: &#x27;bad&#x27; is not a Trading Grid company id (like GC00804444LX).",
        "Row 4, column partner_type: &#x27;alien&#x27; is not a partner type",
        "Row 5, column contact_email: &#x27;nope&#x27; is not a valid email address.",
    ):
        assert message in page
    assert "Confirm import" not in page
    client.post(reverse("admin:partners_partnerimport_confirm", args=[partner_import.pk]))
    assert not TradingPartner.objects.exists()


def test_upload_of_a_file_that_is_not_csv(client, manager):
    response = upload(client, "%PDF-1.4 not a list", name="list.pdf")

    assert "The file is not a CSV file: it looks like a PDF document." in response.content.decode()
    assert not TradingPartner.objects.exists()


def test_large_files_are_checked_and_imported_by_a_background_job(
    client, manager, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.PARTNER_IMPORT_SYNC_MAX_ROWS = 2
    from partners import tasks

    enqueued = []
    monkeypatch.setattr(tasks.partner_import_run_task, "delay", lambda *args: enqueued.append(args))
    text = GOOD + "GC00800002US,Third,carrier,US,c@third.com\n"

    with django_capture_on_commit_callbacks(execute=True):
        response = upload(client, text)
    partner_import = PartnerImport.objects.get()
    assert partner_import.status == ImportStatus.PREVIEWING
    assert "Checking" in response.content.decode()
    assert '<meta http-equiv="refresh"' in response.content.decode()

    # what the worker does with the message
    tasks.partner_import_run_task(*enqueued.pop())
    partner_import.refresh_from_db()
    assert (partner_import.status, partner_import.created) == (ImportStatus.PREVIEWED, 3)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("admin:partners_partnerimport_confirm", args=[partner_import.pk]))
    partner_import.refresh_from_db()
    assert partner_import.status == ImportStatus.IMPORTING
    assert not TradingPartner.objects.exists()
    tasks.partner_import_run_task(*enqueued.pop())
    partner_import.refresh_from_db()
    assert partner_import.status == ImportStatus.DONE
    assert (partner_import.processed_rows, partner_import.total_rows) == (3, 3)
    assert TradingPartner.objects.count() == 3


def test_a_managers_import_list_shows_only_their_own_imports(client, manager):
    other = PartnerManagerFactory()
    PartnerImport.objects.create(file="x.csv", original_name="theirs.csv", uploaded_by=other)
    PartnerImport.objects.create(file="y.csv", original_name="mine.csv", uploaded_by=manager)

    response = client.get(reverse("admin:partners_partnerimport_changelist"))

    assert [i.original_name for i in response.context["cl"].result_list] == ["mine.csv"]


# --- Export -------------------------------------------------------------------------------------


def test_export_neutralises_spreadsheet_formulas_and_round_trips(client, administrator):
    partner = TradingPartnerFactory(name='=HYPERLINK("http://evil")', tg_company_id="GC00804444LX")
    partner.product_lines.add(ProductLine.objects.create(name="@Dairy"))
    ContactFactory(partner=partner, email="anna@acme.de", first_name="-2+3", phone="+49 30 1234", last_name="Smith")

    response = client.post(CHANGELIST, {"action": "export_partners_csv", "_selected_action": [partner.pk]})

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert rows[0]["partner_name"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["product_lines"] == "'@Dairy"
    assert rows[0]["first_name"] == "'-2+3"
    assert rows[0]["phone"] == "'+49 30 1234"
    assert rows[0]["last_name"] == "Smith"

    # the exported file imports back to the same values
    from partners.services import partner_import_file

    Contact.objects.all().delete()
    result = partner_import_file(stream=io.BytesIO(response.content))
    assert result.ok, result.problems
    contact = Contact.objects.get()
    assert (contact.first_name, contact.phone) == ("-2+3", "+49 30 1234")
    assert TradingPartner.objects.get().name == '=HYPERLINK("http://evil")'
