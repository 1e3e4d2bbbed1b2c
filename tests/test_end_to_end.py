"""End to end, with real processes: both emulators on loopback, a Celery worker on Redis, PostgreSQL.

A partner created and approved through the Trading Grid emulator's control API reaches Partnerlink by signed
webhook, appears in the admin with its contacts, and each subscribed contact enters the mapped Mailchimp
journey in the Mailchimp emulator once, within 30 seconds; a replayed webhook and a poll change nothing."""

import json
import time
import urllib.request

import pytest
from django.conf import settings as django_settings
from django.urls import reverse

from campaigns.models import JourneyMapping, JourneyTrigger
from config.celery_app import app as celery_app
from connectors.tradinggrid.webhooks import webhook_headers
from partners import services, tg_sync
from partners.models import Contact, TradingPartner
from tests.celery_worker import celery_worker, wait_until
from tests.conftest import MAILCHIMP_TEST_AUDIENCE
from tests.partners.factories import AdministratorFactory
from tests.processes import control, manage_py_server

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BUID = "GC55500001EE"
JOURNEY, STEP = 4101, 41011


@pytest.fixture
def emulators(live_server):
    """The two emulators as processes; Trading Grid's webhooks go to the live server."""
    live = live_server.url.replace("localhost", "127.0.0.1")  # an IPv4 server: don't let ::1 be tried first
    # Retries compressed a hundredfold: a delivery that fails is tried again within seconds.
    tg_args = ("--webhook-url", f"{live}/webhooks/tradinggrid/", "--webhook-delay-scale", "0.01")
    with (
        manage_py_server("mailchimp_emulator", ready_path="/_emulator/stats") as mailchimp,
        manage_py_server("tradinggrid_emulator", *tg_args, ready_path="/_emulator/health") as tg,
    ):
        yield {"mailchimp": mailchimp, "tradinggrid": tg, "live": live}


def test_a_partner_approved_in_trading_grid_enters_the_onboarding_journey_once(emulators, settings, client):
    settings.MAILCHIMP_API_URL = emulators["mailchimp"] + "/3.0"
    settings.TRADINGGRID_API_URL = emulators["tradinggrid"]
    control(
        emulators["mailchimp"],
        "POST",
        "/_emulator/journeys",
        {"list_id": MAILCHIMP_TEST_AUDIENCE, "name": "Welcome", "steps": {str(STEP): "Welcome"}, "id": JOURNEY},
    )
    audience = services.audience_default_ensure()
    JourneyMapping.objects.create(
        name="Welcome", trigger="partner_approved", audience=audience, journey_id=JOURNEY, step_id=STEP
    )
    worker_env = {
        "TEST_MAILCHIMP_API_URL": settings.MAILCHIMP_API_URL,
        "TEST_TRADINGGRID_API_URL": settings.TRADINGGRID_API_URL,
    }

    with celery_worker(concurrency=2, extra_env=worker_env) as queue:
        # What the web process enqueues goes to this test's worker only.
        previous_queue = celery_app.conf.task_default_queue
        celery_app.conf.task_default_queue = queue
        try:
            started = time.monotonic()
            control(
                emulators["tradinggrid"],
                "POST",
                "/_emulator/partners",
                {
                    "company_id": BUID,
                    "name": "Zenith Parts",
                    "partner_type": "supplier",
                    "country_code": "DE",
                    "onboarding_status": "invited",
                    "contacts": [
                        {"email": "zoe@zenith.de", "first_name": "Zoe"},
                        {"email": "max@zenith.de", "first_name": "Max"},
                        {"email": "gone@zenith.de", "first_name": "Gone"},
                    ],
                },
            )
            wait_until(lambda: Contact.objects.filter(partner__tg_company_id=BUID).count() == 3, timeout=30)
            Contact.objects.filter(email="gone@zenith.de").update(marketing_status="unsubscribed")
            control(
                emulators["tradinggrid"],
                "POST",
                f"/_emulator/partners/{BUID}/status",
                {"onboarding_status": "approved"},
            )

            def journey_emails():
                triggers = control(emulators["mailchimp"], "GET", "/_emulator/journey-triggers")
                return sorted(t["email_address"] for t in triggers)

            wait_until(lambda: journey_emails() == ["max@zenith.de", "zoe@zenith.de"], timeout=30)
            elapsed = time.monotonic() - started

            # The same webhook delivered again, and the poll that would catch a missed one: nothing more.
            deliveries = control(emulators["tradinggrid"], "GET", "/_emulator/webhooks/deliveries")["deliveries"]
            replay = next(d for d in deliveries if d["event_type"] == "partner.status_changed")
            _post_again(emulators["live"], replay)
            tg_sync.partners_poll_from_tg()
            time.sleep(3)
        finally:
            celery_app.conf.task_default_queue = previous_queue

    assert elapsed < 30
    assert journey_emails() == ["max@zenith.de", "zoe@zenith.de"]
    rows = {row.email: row.status for row in JourneyTrigger.objects.all()}
    assert rows == {"zoe@zenith.de": "sent", "max@zenith.de": "sent", "gone@zenith.de": "skipped"}
    partner = TradingPartner.objects.get(tg_company_id=BUID)
    assert partner.onboarding_status == "approved"
    client.force_login(AdministratorFactory(is_superuser=True))
    page = client.get(reverse("admin:partners_tradingpartner_change", args=[partner.pk])).content.decode()
    assert "zoe@zenith.de" in page and "max@zenith.de" in page


def _post_again(live_url: str, delivery: dict) -> None:
    """Deliver one of the emulator's webhooks once more, under the same webhook-id, signed as Trading Grid would."""
    body = json.dumps(delivery["payload"]).encode()
    headers = webhook_headers(msg_id=delivery["id"], body=body, secrets=django_settings.TRADINGGRID_WEBHOOK_SECRETS[:1])
    request = urllib.request.Request(
        f"{live_url}/webhooks/tradinggrid/",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
