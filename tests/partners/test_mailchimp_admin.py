"""Audiences, segments (with preview), sync runs and mailchimp_setup, as partner managers and operators use them."""

import pytest
from django.core.management import call_command
from django.urls import reverse

from partners import services
from partners.models import MailchimpAudience, ProductLine, Segment, SyncRun
from tests.conftest import MAILCHIMP_TEST_AUDIENCE
from tests.partners.factories import AdministratorFactory, ContactFactory, TradingPartnerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def administrator(client):
    user = AdministratorFactory(is_superuser=True)
    client.force_login(user)
    return user


@pytest.fixture
def audience():
    return MailchimpAudience.objects.create(name="Partners", list_id=MAILCHIMP_TEST_AUDIENCE, is_default=True)


def segment_form(audience, **overrides):
    data = {
        "name": "EMEA suppliers",
        "audience": audience.pk,
        "description": "",
        "partner_types": ["supplier"],
        "regions": ["emea"],
        "product_lines_match": "any",
        "issue_within_days": "",
        "min_issue_count": "",
    }
    data.update(overrides)
    return data


def test_segment_preview_counts_and_samples_without_saving(client, administrator, audience):
    acme = TradingPartnerFactory(name="Acme Foods", partner_type="supplier", region="emea")
    ContactFactory(partner=acme, email="anna@acme.de")
    ContactFactory(partner=acme, email="gone@acme.de", marketing_status="unsubscribed")
    TradingPartnerFactory(name="Swift", partner_type="carrier", region="emea")

    response = client.post(reverse("admin:partners_segment_add"), {**segment_form(audience), "_preview": "1"})

    assert response.status_code == 200
    preview = response.context["segment_preview"]
    assert (preview["partners"], preview["contacts"]) == (1, 1)
    assert preview["sample"] == [("Acme Foods", acme.tg_company_id, "anna@acme.de")]
    assert "1</strong> partner and" in response.content.decode()
    assert not Segment.objects.exists()


def test_segment_is_saved_with_its_rules(client, administrator, audience):
    dairy = ProductLine.objects.create(name="Dairy")
    response = client.post(
        reverse("admin:partners_segment_add"),
        segment_form(audience, product_lines=[dairy.pk], countries=["DE", "FR"], tiers=["strategic"]),
    )

    assert response.status_code == 302
    segment = Segment.objects.get()
    assert (segment.partner_types, segment.regions, segment.countries, segment.tiers) == (
        ["supplier"], ["emea"], ["DE", "FR"], ["strategic"]
    )
    assert list(segment.product_lines.all()) == [dairy]
    assert segment.created_by == administrator


def test_sync_actions_queue_one_run_per_audience(client, administrator, audience, django_capture_on_commit_callbacks,
                                                  monkeypatch):
    from partners import tasks

    queued = []
    monkeypatch.setattr(tasks.audience_sync_task, "delay", lambda run_id: queued.append(run_id))
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("admin:partners_mailchimpaudience_changelist"),
            {"action": "sync_now", "_selected_action": [audience.pk]},
        )
        client.post(
            reverse("admin:partners_mailchimpaudience_changelist"),
            {"action": "sync_now", "_selected_action": [audience.pk]},
        )

    assert SyncRun.objects.count() == 1
    assert queued == [SyncRun.objects.get().pk]


def test_partner_action_syncs_only_those_partners(client, administrator, audience, monkeypatch,
                                                   django_capture_on_commit_callbacks):
    from partners import tasks

    monkeypatch.setattr(tasks.audience_sync_task, "delay", lambda run_id: None)
    one, _ = TradingPartnerFactory(), TradingPartnerFactory()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("admin:partners_tradingpartner_changelist"),
            {"action": "sync_partners_to_mailchimp", "_selected_action": [one.pk]},
        )

    assert SyncRun.objects.get().partner_ids == [one.pk]


def test_sync_runs_are_listed_with_progress(client, administrator, audience):
    SyncRun.objects.create(audience=audience, contacts_total=10, contacts_done=4, calls=3)

    response = client.get(reverse("admin:partners_syncrun_changelist"))

    assert "4/10 contacts" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_mailchimp_setup_registers_one_webhook_and_is_idempotent(
    live_server, settings, mailchimp_emulator, mailchimp_contract, capsys
):
    settings.PARTNERLINK_PUBLIC_URL = live_server.url

    call_command("mailchimp_setup")
    call_command("mailchimp_setup")

    hooks = mailchimp_emulator.state.snapshot()["lists"][MAILCHIMP_TEST_AUDIENCE]["webhooks"]
    assert len(hooks) == 1
    hook = hooks[0]
    assert hook["url"] == f"{live_server.url}/webhooks/mailchimp/test-mailchimp-secret-new/"
    assert hook["sources"] == {"user": True, "admin": True, "api": False}
    assert all(hook["events"].values())
    out = capsys.readouterr().out
    assert "registered the webhook" in out and f"{MAILCHIMP_TEST_AUDIENCE}: already set up" in out
    assert MailchimpAudience.objects.get().webhook_id == hook["id"]

    # rotation: the new first secret gets a webhook, the retired one's is removed
    settings.MAILCHIMP_WEBHOOK_SECRETS = ["rotated-secret", "test-mailchimp-secret-new"]
    call_command("mailchimp_setup")
    hooks = mailchimp_emulator.state.snapshot()["lists"][MAILCHIMP_TEST_AUDIENCE]["webhooks"]
    assert [h["url"] for h in hooks] == [f"{live_server.url}/webhooks/mailchimp/rotated-secret/"]
    assert services.audience_default_ensure().webhook_id == hooks[0]["id"]
