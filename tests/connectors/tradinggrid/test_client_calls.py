"""Every client call against the in-process emulator."""

from datetime import UTC, datetime, timedelta

import pytest

from connectors.tradinggrid.errors import TradingGridAPIError, TradingGridNotFoundError
from connectors.tradinggrid.payloads import directory_entry_from_tg, partner_from_tg

SUPPLIER = {
    "company_id": "GC00804444LX",
    "name": "Verona Vittles",
    "legal_name": "Verona Vittles S.r.l.",
    "trading_addresses": ["ZZ:DEMOSUPPLIER5", "01:123456789"],
    "partner_type": "supplier",
    "region": "emea",
    "country_code": "IT",
    "tier": "preferred",
    "onboarding_status": "testing",
    "contacts": [{"email": "Giulia.Rossi@verona.example", "first_name": "Giulia", "role": "primary"}],
}
CARRIER = {"company_id": "GC00900001AB", "name": "Tailspin Freight", "trading_addresses": ["ZZ:TAILSPIN"],
           "partner_type": "carrier"}


@pytest.fixture
def partners(tg_emulator):
    tg_emulator.state.create_partner(SUPPLIER)
    tg_emulator.state.create_partner(CARRIER)


def _issue(state, **fields):
    return state.create_issue({"partner_company_id": "GC00804444LX", "title": "ASN mismatch",
                               "category": "asn_mismatch", **fields})


# --- Community Management [doc] --------------------------------------------------------------------


def test_get_company(tg_client):
    company = tg_client.get_company()
    assert company["companyId"] == "GC00000001PL"
    assert {a["address"] for a in company["tradingAddresses"]} >= {"ZZ:PARTNERLINK"}


def test_partner_directory_with_filters(tg_client, partners):
    everyone = list(tg_client.iter_partner_directory())
    assert {e["partnerCompanyId"] for e in everyone} == {"GC00804444LX", "GC00900001AB"}
    by_id = list(tg_client.iter_partner_directory(partner_company_id="GC00900001AB"))
    by_name = list(tg_client.iter_partner_directory(partner_company_name="verona"))
    by_address = list(tg_client.iter_partner_directory(trading_address="ZZ:DEMOSUPPLIER5"))
    assert [e["partnerCompanyName"] for e in by_id] == ["Tailspin Freight"]
    assert [e["partnerCompanyId"] for e in by_name] == [e["partnerCompanyId"] for e in by_address] == ["GC00804444LX"]
    entry = directory_entry_from_tg(by_address[0])
    assert entry.trading_addresses == ("ZZ:DEMOSUPPLIER5", "01:123456789")
    assert entry.raw == by_address[0]


def test_users_list_get_create_update_delete(tg_client):
    created = tg_client.create_user(user={
        "loginId": "herman.munster@partnerlink.example",
        "firstName": "Herman",
        "lastName": "Munster",
        "contactInformation": {"email": "herman.munster@partnerlink.example", "phoneNumber": "5551212"},
        "address": {"city": "Hollywood", "countryCode": "US"},
        "preferredLanguage": "en",
        "preferredTimezone": "America/New_York",
    })
    user_id = created["userId"]
    assert created["uniqueId"] == user_id
    assert [u["userId"] for u in tg_client.iter_users()] == [user_id]
    assert [u["userId"] for u in tg_client.iter_users(login_id="HERMAN.MUNSTER@partnerlink.example")] == [user_id]
    assert list(tg_client.iter_users(login_id="nobody@partnerlink.example")) == []
    assert tg_client.get_user(user_id=user_id)["firstName"] == "Herman"
    updated = tg_client.update_user(user_id=user_id, changes={"address": {"city": "Latham", "state": "NY"}})
    assert updated["address"] == {"city": "Latham", "countryCode": "US", "state": "NY"}
    tg_client.delete_user(user_id=user_id)
    with pytest.raises(TradingGridNotFoundError):
        tg_client.get_user(user_id=user_id)
    tg_client.delete_user(user_id=user_id, missing_ok=True)
    with pytest.raises(TradingGridNotFoundError):
        tg_client.delete_user(user_id=user_id)


# --- Profiles --------------------------------------------------------------------------------------


def test_partner_profile_get_and_patch(tg_client, partners):
    profile = tg_client.get_partner_profile(company_id="GC00804444LX")
    assert profile["onboarding_status"] == "testing"
    assert profile["contacts"][0]["email"] == "giulia.rossi@verona.example"
    tg_client.update_partner_profile(company_id="GC00804444LX", changes={"custom": {"engagement_score": 71}})
    patched = tg_client.update_partner_profile(
        company_id="GC00804444LX",
        changes={"custom": {"consent": "granted"}, "product_lines": ["Grocery"],
                 "contract_renewal_at": "2027-03-31"},
    )
    assert patched["custom"] == {"engagement_score": 71, "consent": "granted"}  # custom keys merge
    assert patched["product_lines"] == ["Grocery"]
    assert patched["updated_at"] > profile["updated_at"]
    partner = partner_from_tg(profile=patched)
    assert partner.contract_renewal_at.isoformat() == "2027-03-31"
    with pytest.raises(TradingGridAPIError) as caught:
        tg_client.update_partner_profile(company_id="GC00804444LX", changes={"tier": "platinum"})
    assert caught.value.details[0]["field"] == "tier"
    with pytest.raises(TradingGridNotFoundError):
        tg_client.get_partner_profile(company_id="GC00000000XX")


# --- Issues ----------------------------------------------------------------------------------------


def test_issues_list_with_filters(tg_client, tg_emulator, partners):
    state = tg_emulator.state
    first = _issue(state)
    second = _issue(state, category="shipment_exception", status="acknowledged", title="Late delivery")
    third = state.create_issue({"partner_company_id": "GC00900001AB", "title": "Missed pickup",
                                "category": "shipment_exception"})
    ids = lambda **kw: [i["id"] for i in tg_client.iter_issues(**kw)]  # noqa: E731
    assert ids() == [first["id"], second["id"], third["id"]]
    assert ids(status="acknowledged") == [second["id"]]
    assert ids(status=["open", "acknowledged"], category="shipment_exception") == [second["id"], third["id"]]
    assert ids(partner="GC00900001AB") == [third["id"]]
    since = datetime.fromisoformat(second["updated_at"].replace("Z", "+00:00"))
    assert ids(updated_since=since) == [second["id"], third["id"]]  # inclusive


def test_issue_get_patch_and_comments(tg_client, tg_emulator, partners):
    issue = _issue(tg_emulator.state, po_number="PO4500012345", amount=1250.5, currency="eur")
    fetched = tg_client.get_issue(issue_id=issue["id"])
    assert fetched["po_number"] == "PO4500012345" and fetched["currency"] == "EUR"
    patched = tg_client.update_issue(issue_id=issue["id"], changes={"status": "resolved"})
    assert patched["status"] == "resolved" and patched["resolved_at"]
    comment = tg_client.create_issue_comment(issue_id=issue["id"], body="Credit note issued.", author="Partnerlink")
    assert [c["id"] for c in tg_client.iter_issue_comments(issue_id=issue["id"])] == [comment["id"]]
    with pytest.raises(TradingGridAPIError):
        tg_client.update_issue(issue_id=issue["id"], changes={"partner_company_id": "GC00900001AB"})


# --- Posts -----------------------------------------------------------------------------------------


def test_posts_create_get_patch(tg_client):
    post = tg_client.create_post(post={
        "title": "Routing guide 2026",
        "body_html": "<h1>Routing guide</h1>",
        "summary": "New carrier routing rules from March.",
        "source": {"type": "mailchimp", "campaign_id": "a1b2c3", "archive_url": "https://mailchi.mp/x"},
        "audience": {"partner_types": ["carrier", "3pl"], "regions": ["na"]},
        "published_at": datetime(2026, 3, 1, 9, tzinfo=UTC),
    })
    assert post["url"].endswith(f"/community/posts/{post['id']}")
    assert post["published_at"] == "2026-03-01T09:00:00.000000Z"
    assert tg_client.get_post(post_id=post["id"])["audience"]["partner_types"] == ["carrier", "3pl"]
    patched = tg_client.update_post(post_id=post["id"], changes={"summary": "Updated summary"})
    assert patched["summary"] == "Updated summary" and patched["title"] == "Routing guide 2026"


# --- Documents and acknowledgements ----------------------------------------------------------------


def test_documents_versions_and_acknowledgements(tg_client, tg_emulator, partners):
    document = tg_client.create_document(document={"kind": "trading_terms", "title": "Trading terms"})
    assert document["latest"] is None
    version = {"file_name": "terms.pdf", "sha256": "a" * 64, "content_url": "https://files.example/terms.pdf"}
    tg_client.add_document_version(document_id=document["id"], version={"version": "1", **version})
    tg_client.add_document_version(document_id=document["id"],
                                   version={"version": "2-draft", "status": "draft", **version})
    fetched = tg_client.get_document(document_id=document["id"])
    assert [v["version"] for v in fetched["versions"]] == ["1", "2-draft"]
    assert fetched["latest"]["version"] == "1"  # the newest *approved* version

    state = tg_emulator.state
    state.acknowledge_document(document["id"], {"partner_company_id": "GC00804444LX",
                                                "contact_email": "giulia.rossi@verona.example"})
    latest = state.acknowledge_document(document["id"], {"partner_company_id": "GC00900001AB",
                                                         "contact_email": "ops@tailspin.example"})
    checkpoint = latest["updated_at"]
    everything = list(tg_client.iter_acknowledgements(document_id=document["id"]))
    recent = list(tg_client.iter_acknowledgements(document_id=document["id"], updated_since=checkpoint))
    assert [a["partner_company_id"] for a in everything] == ["GC00804444LX", "GC00900001AB"]
    assert [a["contact_email"] for a in recent] == ["ops@tailspin.example"]
    assert recent[0]["version"] == "1"


# --- Events ----------------------------------------------------------------------------------------


def test_events_create_patch_and_their_records(tg_client, tg_emulator, partners):
    starts = datetime(2026, 4, 14, 15, tzinfo=UTC)
    event = tg_client.create_event(event={
        "kind": "webinar", "title": "EDI onboarding clinic", "starts_at": starts,
        "ends_at": starts + timedelta(hours=1), "timezone": "America/Toronto", "join_url": "https://meet.example/1",
    })
    patched = tg_client.update_event(event_id=event["id"], changes={
        "agenda_html": "<ol><li>ASN basics</li></ol>",
        "materials": [{"title": "Slides", "url": "https://files.example/slides.pdf"}],
    })
    assert patched["materials"][0]["title"] == "Slides" and patched["title"] == "EDI onboarding clinic"

    state = tg_emulator.state
    person = {"partner_company_id": "GC00804444LX", "contact_email": "giulia.rossi@verona.example"}
    state.register_for_event(event["id"], person)
    state.record_attendance(event["id"], {**person, "attended": True, "minutes": 52})
    state.add_question(event["id"], {**person, "question": "Do you support 856 v5010?"})
    assert [r["contact_email"] for r in tg_client.iter_event_registrations(event_id=event["id"])] == [
        "giulia.rossi@verona.example"]
    assert [a["minutes"] for a in tg_client.iter_event_attendance(event_id=event["id"])] == [52]
    assert [q["question"] for q in tg_client.iter_event_questions(event_id=event["id"])] == [
        "Do you support 856 v5010?"]
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert list(tg_client.iter_event_attendance(event_id=event["id"], updated_since=later)) == []
    with pytest.raises(TradingGridAPIError):
        tg_client.update_event(event_id=event["id"], changes={"ends_at": "2020-01-01T00:00:00Z"})


# --- Webhook subscriptions -------------------------------------------------------------------------


def test_webhook_subscriptions_create_list_delete(tg_client, settings):
    mine = tg_client.create_webhook_subscription(url="https://partnerlink.example/webhooks/tradinggrid/",
                                                 event_types=["partner.created", "issue.created"],
                                                 secret=settings.TRADINGGRID_WEBHOOK_SECRETS[0])
    generated = tg_client.create_webhook_subscription(url="https://partnerlink.example/other/", event_types=[])
    assert generated["secret"].startswith("whsec_")
    listed = list(tg_client.iter_webhook_subscriptions())
    assert [s["id"] for s in listed] == [mine["id"], generated["id"]]
    assert all("secret" not in s for s in listed)  # shown once, at creation
    tg_client.delete_webhook_subscription(subscription_id=mine["id"])
    assert [s["id"] for s in tg_client.iter_webhook_subscriptions()] == [generated["id"]]
    tg_client.delete_webhook_subscription(subscription_id=mine["id"], missing_ok=True)
    with pytest.raises(TradingGridAPIError) as caught:
        tg_client.create_webhook_subscription(url="ftp://nope", event_types=["partner.created"])
    assert caught.value.details[0]["field"] == "url"
