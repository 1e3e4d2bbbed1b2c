"""Helpers and fixtures for the community post tests (flow F1): sent campaigns in the Mailchimp emulator, the
Trading Grid emulator with a client that never really sleeps, and posts in each state built through the services."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.urls import reverse

from campaigns import posts
from campaigns.models import CommunityPost, PostOrigin
from connectors.mailchimp.webhooks import encode_bracketed_form
from connectors.tradinggrid.client import TradingGridClient
from tests.conftest import MAILCHIMP_TEST_AUDIENCE

HTML_DIR = Path(__file__).parent / "mailchimp_html"
WEBHOOK_URL = reverse("mailchimp-webhook", args=["test-mailchimp-secret-new"])


def email(name: str) -> str:
    return (HTML_DIR / f"{name}.html").read_text()


def sent_campaign(
    emulator,
    *,
    html: str | None = None,
    subject: str = "Partner news: Q3 highlights",
    title: str = "Q3 newsletter",
    list_id: str = MAILCHIMP_TEST_AUDIENCE,
    ago: dt.timedelta = dt.timedelta(minutes=5),
    source: str = "admin",
) -> str:
    """A campaign sent in Mailchimp (by default in its web app, as an admin), as Mailchimp holds it after."""
    emulator.add_member(list_id=list_id, email="reader@partner.example")
    campaign = emulator.state.create_campaign(
        body={
            "type": "regular",
            "recipients": {"list_id": list_id},
            "settings": {
                "title": title,
                "subject_line": subject,
                "from_name": "Partner team",
                "reply_to": "partners@partnerlink.example",
            },
        }
    )
    campaign.html = email("newsletter_template") if html is None else html
    emulator.send_campaign_now(campaign_id=campaign.id, send_time=emulator.state.now() - ago, source=source)
    return campaign.id


def campaign_webhook_form(campaign_id: str, *, status: str = "sent", subject: str = "Partner news") -> dict[str, str]:
    """The form Mailchimp POSTs for a `campaign` event (what the emulator sends)."""
    data = {"id": campaign_id, "subject": subject, "status": status, "reason": "", "list_id": MAILCHIMP_TEST_AUDIENCE}
    return dict(encode_bracketed_form({"type": "campaign", "fired_at": "2026-11-28 10:00:00", "data": data}))


def tg_posts(tg_emulator) -> list[dict]:
    return list(tg_emulator.state.posts.values())


def tg_calls(tg_emulator, method: str, prefix: str = "/community/v1/posts") -> list[dict]:
    return [
        entry
        for entry in list(tg_emulator.state.requests)
        if entry["method"] == method and entry["path"].startswith(prefix) and not entry["fault"]
    ]


def reload(post) -> CommunityPost:
    return CommunityPost.objects.get(pk=post.pk)


@pytest.fixture
def tg_fast(tg_settings, tg_emulator, monkeypatch):
    """Trading Grid's emulator, and a client for it whose backoff sleeps return at once."""
    client = TradingGridClient.from_settings(sleep=lambda seconds: None)
    monkeypatch.setattr(posts, "_tradinggrid", lambda given=None: given or client)
    yield tg_emulator
    client.close()


@pytest.fixture
def imported(db, mailchimp_emulator, audience, eager_tasks, django_capture_on_commit_callbacks):
    """A newsletter sent in Mailchimp's web app, captured and fetched: a draft."""
    campaign_id = sent_campaign(mailchimp_emulator)
    with django_capture_on_commit_callbacks(execute=True):
        post, _ = posts.community_post_capture(campaign_id=campaign_id, origin=PostOrigin.WEBHOOK)
    return reload(post)


@pytest.fixture
def submitted_post(imported, author):
    return posts.community_post_submit(post_id=imported.pk, actor=author)


@pytest.fixture
def approve_post(approver, django_capture_on_commit_callbacks):
    """Approve (and run the publish task eagerly); returns the post reloaded."""

    def approve(post, actor=None):
        with django_capture_on_commit_callbacks(execute=True):
            posts.community_post_approve(post_id=post.pk, actor=actor or approver)
        return reload(post)

    return approve
