"""/webhooks/mailchimp/<secret>/: authenticated by the URL secret, stored raw under a dedupe key, answered
at once, processed by a task into partner records."""

from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from connectors.mailchimp.webhooks import encode_bracketed_form
from connectors.models import EventStatus, InboundEvent
from partners.models import Contact
from tests.partners.factories import ContactFactory, TradingPartnerFactory

pytestmark = pytest.mark.django_db

SECRET = "test-mailchimp-secret-new"
OLD_SECRET = "test-mailchimp-secret-old"


def url(secret=SECRET):
    return reverse("mailchimp-webhook", args=[secret])


def urlencoded(client, target, payload):
    """As Mailchimp sends it: application/x-www-form-urlencoded."""
    return client.post(target, urlencode(payload), content_type="application/x-www-form-urlencoded")


def form(event_type, fired_at="2026-11-28 10:00:00", **data):
    return dict(encode_bracketed_form({"type": event_type, "fired_at": fired_at, "data": data}))


@pytest.fixture
def post(client, eager_tasks, django_capture_on_commit_callbacks):
    def send(payload, secret=SECRET):
        with django_capture_on_commit_callbacks(execute=True):
            return urlencoded(client, url(secret), payload)

    return send


# --- The security suite: every refusal stores nothing ---------------------------------------------------


def test_get_answers_200_for_mailchimps_url_check(client):
    assert client.get(url()).status_code == 200
    assert client.get(url(OLD_SECRET)).status_code == 200


@pytest.mark.parametrize("secret", ["wrong", SECRET + "x", SECRET[:-1], "%20", SECRET.upper()])
def test_wrong_secret_is_404_and_stores_nothing(client, secret):
    response = urlencoded(client, f"/webhooks/mailchimp/{secret}/", form("unsubscribe", email="a@b.com"))

    assert response.status_code == 404
    assert not InboundEvent.objects.exists()


def test_both_secrets_are_accepted_during_rotation(post):
    assert post(form("unsubscribe", email="a@b.com"), secret=OLD_SECRET).status_code == 200
    assert post(form("cleaned", email="a@b.com"), secret=SECRET).status_code == 200
    assert InboundEvent.objects.count() == 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"type": "explode", "fired_at": "2026-11-28 10:00:00"}, "unknown or missing type 'explode'"),
        ({"type": "unsubscribe", "fired_at": "yesterday", "data[email]": "a@b.com"}, "fired_at 'yesterday'"),
        ({"type": "unsubscribe", "fired_at": "2026-11-28 10:00:00"}, "data[email] is missing"),
        ({"type": "unsubscribe", "fired_at": "2026-11-28 10:00:00", "data[email]": "nobody"}, "is not an email"),
        ({"type": "profile", "fired_at": "2026-11-28 10:00:00", "data][": "x"}, "malformed form key"),
    ],
)
def test_malformed_posts_are_400_and_store_nothing(client, payload, message):
    response = urlencoded(client, url(), payload)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not InboundEvent.objects.exists()


def test_a_body_over_one_mebibyte_is_refused(client):
    response = urlencoded(client, url(), form("profile", email="a@b.com", merges={"FNAME": "x" * (1024 * 1024)}))

    assert response.status_code == 413
    assert not InboundEvent.objects.exists()


def test_a_replayed_post_changes_nothing(post):
    contact = ContactFactory(email="anna@acme.de")
    payload = form("unsubscribe", email="anna@acme.de", reason="manual")

    first = post(payload)
    contact.refresh_from_db()
    changed_at = contact.updated_at
    second = post(payload)

    assert first.json()["stored"] is True and second.json()["stored"] is False
    assert InboundEvent.objects.count() == 1
    contact.refresh_from_db()
    assert contact.updated_at == changed_at
    assert LogEntry.objects.count() == 1


def test_the_raw_body_and_the_normalized_event_are_kept(post):
    post(form("unsubscribe", email="Anna@Acme.DE", reason="manual", action="unsub", list_id="test0aud1e"))

    event = InboundEvent.objects.get()
    assert "data%5Bemail%5D=Anna%40Acme.DE" in event.raw
    assert event.payload == {
        "type": "unsubscribe",
        "fired_at": "2026-11-28T10:00:00+00:00",
        "list_id": "test0aud1e",
        "email": "anna@acme.de",
        "merges": {},
        "reason": "manual",
        "action": "unsub",
    }


# --- What each event does to partner records --------------------------------------------------------------


def test_unsubscribe_marks_every_contact_with_the_address(post):
    one = ContactFactory(email="anna@acme.de", marketing_status="subscribed")
    two = ContactFactory(email="anna@acme.de", marketing_status="subscribed")

    post(form("unsubscribe", email="anna@acme.de", reason="manual"))

    assert set(Contact.objects.filter(pk__in=[one.pk, two.pk]).values_list("marketing_status", flat=True)) == {
        "unsubscribed"
    }
    event = InboundEvent.objects.get()
    assert event.status == EventStatus.PROCESSED
    assert event.outcome == "anna@acme.de unsubscribed: 2 of 2 contact(s) changed."
    assert "Mailchimp: anna@acme.de is now unsubscribed (manual)." in LogEntry.objects.first().change_message


def test_cleaned_marks_the_address_invalid(post):
    contact = ContactFactory(email="gone@acme.de", marketing_status="subscribed")

    post(form("cleaned", email="gone@acme.de", reason="hard", campaign_id="c1"))

    contact.refresh_from_db()
    assert (contact.marketing_status, contact.email_invalid) == ("cleaned", True)


def test_upemail_changes_the_contacts_address(post):
    contact = ContactFactory(email="old@acme.de")

    post(form("upemail", old_email="old@acme.de", new_email="New@acme.de", new_id="x", list_id="l"))

    contact.refresh_from_db()
    assert contact.email == "new@acme.de"


def test_upemail_onto_an_existing_contact_is_recorded_not_applied(post):
    partner = TradingPartnerFactory()
    old = ContactFactory(partner=partner, email="old@acme.de")
    ContactFactory(partner=partner, email="new@acme.de")

    post(form("upemail", old_email="old@acme.de", new_email="new@acme.de"))

    old.refresh_from_db()
    assert old.email == "old@acme.de"
    event = InboundEvent.objects.get()
    assert event.status == EventStatus.CONFLICT
    assert f"{partner.tg_company_id} already has a contact new@acme.de" in event.outcome
    assert "not applied" in LogEntry.objects.get().change_message


def test_profile_applies_mapped_name_phone_and_language(post):
    contact = ContactFactory(email="anna@acme.de", first_name="Ana", last_name="S", phone="", language="en")

    post(form("profile", email="anna@acme.de", merges={"FNAME": "Anna", "LNAME": "Schmidt", "PHONE": "+49 1",
                                                        "BUID": "ignored"}, language="de"))

    contact.refresh_from_db()
    assert (contact.first_name, contact.last_name, contact.phone, contact.language) == (
        "Anna", "Schmidt", "+49 1", "de"
    )


def test_an_unknown_address_is_kept_as_unmatched(post):
    post(form("unsubscribe", email="stranger@nowhere.example"))

    event = InboundEvent.objects.get()
    assert event.status == EventStatus.UNMATCHED
    assert event.outcome == "No contact has the address stranger@nowhere.example; kept for review."


def test_an_older_event_arriving_late_does_not_undo_a_newer_one(post):
    contact = ContactFactory(email="anna@acme.de", marketing_status="subscribed")

    post(form("unsubscribe", fired_at="2026-11-28 10:05:00", email="anna@acme.de"))
    post(form("subscribe", fired_at="2026-11-28 10:00:00", email="anna@acme.de"))

    contact.refresh_from_db()
    assert contact.marketing_status == "unsubscribed"
