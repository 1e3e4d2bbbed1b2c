"""In a real browser (Playwright driving Debian's Chromium): a partner manager drafts and submits a
communication, an approver approves it, and it is sent through the Mailchimp emulator.

Screenshots of the key pages go to var/screenshots/; with PARTNERLINK_UPDATE_SCREENSHOTS=1 they also replace
the ones in docs/screenshots/ that the README shows."""

import os
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from campaigns.models import Communication, CommunicationState
from partners import services as partner_services
from partners.models import Segment
from partners.selectors import APPROVERS_GROUP, PARTNER_MANAGERS_GROUP
from tests.conftest import MAILCHIMP_TEST_AUDIENCE
from tests.partners.factories import ContactFactory, TradingAddressFactory, TradingPartnerFactory, UserFactory

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "var" / "screenshots"
DOCS_SHOTS = ROOT / "docs" / "screenshots"

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - requirements/local.txt installs it
    sync_playwright = None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        sync_playwright is None or not Path(CHROMIUM).exists(),
        reason="needs Playwright and Debian's chromium (apt-get install chromium; .ci/run installs it)",
    ),
]
PASSWORD = "browser-test-pw"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def person(username, *groups):
    user = UserFactory(username=username, email=f"{username}@partnerlink.example", first_name=username.title())
    user.set_password(PASSWORD)
    user.save()
    user.groups.add(*Group.objects.filter(name__in=groups))
    return user


@pytest.fixture
def world(mailchimp_emulator, settings, eager_tasks):
    """Two people, partners with contacts, a segment already synced to the Mailchimp emulator."""
    maria = person("maria", PARTNER_MANAGERS_GROUP)
    olivia = person("olivia", PARTNER_MANAGERS_GROUP, APPROVERS_GROUP)
    for index, (name, kind) in enumerate(
        [("Acme Foods", "supplier"), ("Nordic Packaging", "supplier"), ("Swift Freight", "carrier")]
    ):
        partner = TradingPartnerFactory(name=name, partner_type=kind, partner_manager=maria, region="emea")
        TradingAddressFactory(partner=partner, address=f"ZZ:{name.upper().replace(' ', '')}")
        for contact in range(2):
            ContactFactory(partner=partner, email=f"c{contact}@{name.split()[0].lower()}{index}.example")
    audience = partner_services.audience_default_ensure()
    Segment.objects.create(name="EMEA suppliers", audience=audience, partner_types=["supplier"], regions=["emea"])
    run = partner_services.audience_sync_start(audience=audience, enqueue=False)
    partner_services.audience_sync_execute(run_id=run.pk, poll_interval=0, sleep=lambda seconds: None)
    return {"maria": maria, "olivia": olivia}


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    if os.environ.get("PARTNERLINK_UPDATE_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHOTS / f"{name}.png", DOCS_SHOTS / f"{name}.png")


def log_in(page, base, username):
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username.title())


def test_draft_submit_approve_and_send_in_a_browser(world, live_server, mailchimp_emulator, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the ORM calls below are still plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = live_server.url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})

            # The partner manager: her partners, then a new communication.
            log_in(page, base, "maria")
            page.goto(f"{base}/partners/tradingpartner/")
            expect(page.locator("#result_list")).to_contain_text("Acme Foods")
            shot(page, "01-partner-list")

            page.goto(f"{base}/campaigns/communication/add/")
            page.select_option("#id_kind", "policy_update")
            page.select_option("#id_audience", label=page.locator("#id_audience option").nth(1).inner_text())
            page.select_option("#id_segments_from", label="EMEA suppliers")
            page.click("#id_segments_add")
            page.fill("#id_subject", "New trading terms from 1 January")
            page.fill("#id_preview_text", "What changes for suppliers")
            page.fill("#id_from_name", "Partner team")
            page.fill("#id_reply_to", "partners@example.com")
            page.fill(
                "#id_html_body",
                "<h1>New trading terms</h1><p>Dear *|FNAME|*, our trading terms change on 1 January.</p>"
                '<p><a href="https://community.example/documents/terms">Read and confirm them</a></p>',
            )
            preview = page.frame_locator("iframe").first
            expect(preview.locator("h1")).to_have_text("New trading terms")
            shot(page, "02-communication-draft-with-live-preview")
            page.click("input[name=_save]")
            communication = Communication.objects.get()
            page.goto(f"{base}/campaigns/communication/{communication.pk}/change/")
            page.click("input[name=_submit]")
            expect(page.locator(".communication-state")).to_contain_text("Submitted")
            shot(page, "03-submitted-with-checklist-and-recipients")
            page.context.clear_cookies()  # signed out

            # The approver: what waits for her, then approval, and the send.
            log_in(page, base, "olivia")
            page.goto(f"{base}/campaigns/communication/waiting-for-me/")
            expect(page.locator("#result_list")).to_contain_text("New trading terms from 1 January")
            shot(page, "04-waiting-for-my-approval")
            page.click("text=New trading terms from 1 January")
            page.click("input[name=_approve]")
            expect(page.locator(".communication-state")).to_contain_text("Sent")
            shot(page, "05-approved-and-sent")
        finally:
            browser.close()

    communication.refresh_from_db()
    assert communication.state == CommunicationState.SENT
    assert (communication.submitted_by, communication.approved_by) == (world["maria"], world["olivia"])
    campaign = mailchimp_emulator.state.snapshot()["campaigns"]
    sent = [c for c in campaign if c["id"] == communication.mailchimp_campaign_id]
    assert sent and sent[0]["status"] == "sent"
    assert sent[0]["recipients"]["list_id"] == MAILCHIMP_TEST_AUDIENCE
