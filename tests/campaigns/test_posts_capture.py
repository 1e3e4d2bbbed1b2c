"""Sent campaigns become community post drafts (flow F1), once per campaign, whichever way Partnerlink hears of
them: Mailchimp's `campaign` webhook, the beat sweep of recently sent campaigns, a communication Partnerlink sent,
or the import of past campaigns. The Mailchimp emulator holds the campaigns; tasks run eagerly."""

import datetime as dt

import pytest
from django.utils import timezone

from campaigns import posts, tasks
from campaigns.models import (
    CommunicationKind,
    CommunityPost,
    PostOrigin,
    PostState,
    PostStyle,
    PostStylePerKind,
)
from connectors.mailchimp.emulator import Fault
from connectors.models import EventStatus, InboundEvent
from partners.models import SyncCursor
from tests.conftest import MAILCHIMP_TEST_AUDIENCE

from .conftest import new_communication, sync_audience
from .posts_support import WEBHOOK_URL, campaign_webhook_form, email, imported, reload, sent_campaign  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("mailchimp_contract", "eager_tasks")]
P = PostState


@pytest.fixture
def post_webhook(client, django_capture_on_commit_callbacks):
    def send(form):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(WEBHOOK_URL, form)

    return send


def emulator_webhook_forms(emulator, monkeypatch) -> list:
    """Register our webhook in the emulator and keep the forms it would POST (the test client delivers them)."""
    forms: list = []
    emulator.state.add_webhook(
        list_id=MAILCHIMP_TEST_AUDIENCE,
        url="http://testserver" + WEBHOOK_URL,
        events={"campaign": True},
        sources={"user": True, "admin": True},
    )
    monkeypatch.setattr(emulator.state, "webhook_sink", lambda url, form, event_type, list_id: forms.append(form))
    return forms


# --- the webhook --------------------------------------------------------------------------------------------------


def test_a_campaign_sent_in_mailchimp_arrives_by_webhook_as_a_cleaned_draft(
    mailchimp_emulator, audience, post_webhook, monkeypatch
):
    forms = emulator_webhook_forms(mailchimp_emulator, monkeypatch)
    campaign_id = sent_campaign(mailchimp_emulator, subject="Partner news: Q3 highlights")
    assert len(forms) == 1  # what Mailchimp POSTs when an admin sends from its web app

    response = post_webhook(dict(forms[0]))

    assert response.status_code == 200
    event = InboundEvent.objects.get(event_type="campaign")
    assert event.status == EventStatus.PROCESSED
    post = CommunityPost.objects.get()
    assert event.outcome == f"Community post #{post.pk} recorded; fetching its content."
    assert post.mailchimp_campaign_id == campaign_id
    assert post.state == P.DRAFT
    assert post.origin == PostOrigin.WEBHOOK
    assert post.kind == "external" and post.communication is None
    assert post.style == PostStyle.SUMMARY  # the default for campaigns not sent from Partnerlink
    assert post.title == "Partner news: Q3 highlights"
    assert post.summary.startswith("This quarter 42 new suppliers joined the Trading Grid community")
    assert post.campaign_subject == "Partner news: Q3 highlights"
    assert post.archive_url == f"https://us21.campaign-archive.com/?u=0e1d2c3b4a5f&id={campaign_id}"
    assert post.mailchimp_list_id == MAILCHIMP_TEST_AUDIENCE
    assert post.campaign_sent_at is not None
    for gone in ("*|", "unsubscribe", "track/open", "in your browser", "<script"):
        assert gone not in post.body_html.lower()
    assert f'<a href="{post.archive_url.replace("&", "&amp;")}">Read the full email</a>' in post.body_html
    assert post.source_html == email("newsletter_template")
    assert [t.to_state for t in post.transitions.all()] == [P.IMPORTING, P.DRAFT]
    assert "Removed for the community:" in post.transitions.last().comment


def test_the_same_webhook_twice_makes_one_post(mailchimp_emulator, audience, post_webhook, monkeypatch):
    forms = emulator_webhook_forms(mailchimp_emulator, monkeypatch)
    sent_campaign(mailchimp_emulator)

    post_webhook(dict(forms[0]))
    post_webhook(dict(forms[0]))  # Mailchimp retries: the same POST, stored once

    assert CommunityPost.objects.count() == 1
    assert InboundEvent.objects.filter(event_type="campaign").count() == 1


def test_two_different_webhooks_for_one_campaign_make_one_post(mailchimp_emulator, audience, post_webhook):
    campaign_id = sent_campaign(mailchimp_emulator)

    post_webhook(campaign_webhook_form(campaign_id, subject="first"))
    post_webhook(campaign_webhook_form(campaign_id, subject="second"))  # a different body: another event

    assert InboundEvent.objects.filter(event_type="campaign").count() == 2
    post = CommunityPost.objects.get()
    second = InboundEvent.objects.filter(event_type="campaign").order_by("pk").last()
    assert second.outcome == f"Campaign {campaign_id} already has community post #{post.pk}."
    assert len([e for e in mailchimp_emulator.request_log if e["path"].endswith("/content")]) == 1


def test_a_campaign_webhook_other_than_sent_is_kept_and_ignored(mailchimp_emulator, audience, post_webhook):
    post_webhook(campaign_webhook_form("abc123", status="canceled"))

    event = InboundEvent.objects.get(event_type="campaign")
    assert event.status == EventStatus.IGNORED
    assert "only sent campaigns become community posts" in event.outcome
    assert not CommunityPost.objects.exists()


def test_webhook_then_sweep_makes_one_post(mailchimp_emulator, audience, post_webhook):
    campaign_id = sent_campaign(mailchimp_emulator)
    post_webhook(campaign_webhook_form(campaign_id))

    result = posts.community_posts_sweep_sent()

    assert (result.seen, result.created) == (1, 0)
    assert CommunityPost.objects.get().origin == PostOrigin.WEBHOOK


# --- the sweep ----------------------------------------------------------------------------------------------------


def test_a_campaign_sent_directly_in_mailchimp_with_no_webhook_becomes_a_draft_through_the_sweep(
    mailchimp_emulator, audience, django_capture_on_commit_callbacks
):
    campaign_id = sent_campaign(mailchimp_emulator, subject="Carrier update", html=email("policy_custom_code"))

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.community_posts_sweep_task.apply().get() == 1

    post = CommunityPost.objects.get()
    assert (post.mailchimp_campaign_id, post.origin, post.state) == (campaign_id, PostOrigin.SWEEP, P.DRAFT)
    assert post.title == "Updated trading terms take effect on 1 January"
    with django_capture_on_commit_callbacks(execute=True):
        assert posts.community_posts_sweep_sent().created == 0  # twice: nothing new
    assert CommunityPost.objects.count() == 1


def test_the_sweep_reads_only_recent_campaigns_of_partnerlinks_audiences_and_remembers_where_it_was(
    mailchimp_emulator, audience, django_capture_on_commit_callbacks
):
    recent = sent_campaign(mailchimp_emulator, ago=dt.timedelta(hours=3))
    old = sent_campaign(mailchimp_emulator, ago=dt.timedelta(days=30))  # before Partnerlink: import it by hand
    mailchimp_emulator.state.create_audience(list_id="other0list", name="Consumer newsletter")
    elsewhere = sent_campaign(mailchimp_emulator, list_id="other0list")

    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        result = posts.community_posts_sweep_sent(now=now)

    assert result.since == now - posts.SWEEP_OVERLAP
    assert set(CommunityPost.objects.values_list("mailchimp_campaign_id", flat=True)) == {recent}
    assert old and elsewhere
    assert SyncCursor.objects.get(stream=posts.SENT_CAMPAIGNS_STREAM).value == now.isoformat()
    # The next sweep starts a day before this one did: a long send that finishes late is still seen.
    later = now + dt.timedelta(hours=6)
    assert posts.community_posts_sweep_sent(now=later).since == now - posts.SWEEP_OVERLAP


def test_a_sweep_mailchimp_cannot_answer_moves_no_cursor(mailchimp_emulator, audience):
    mailchimp_emulator.faults.add(Fault(status=503, method="GET", path="/campaigns", times=None))

    with pytest.raises(Exception, match="503"):
        posts.community_posts_sweep_sent()

    assert not SyncCursor.objects.filter(stream=posts.SENT_CAMPAIGNS_STREAM).exists()


# --- communications sent from Partnerlink -------------------------------------------------------------------------


def test_a_communication_partnerlink_sends_becomes_a_draft_linked_to_it_with_its_kinds_style_and_audience(
    mailchimp_emulator, audience, suppliers, partners, author, approver, django_capture_on_commit_callbacks
):
    from campaigns import services

    suppliers.regions = ["emea"]
    suppliers.save()
    sync_audience(audience)
    communication = new_communication(
        author, audience, [suppliers], kind=CommunicationKind.POLICY_UPDATE, html_body=email("policy_custom_code")
    )
    services.communication_submit(communication_id=communication.pk, actor=author)
    with django_capture_on_commit_callbacks(execute=True):
        services.communication_approve(communication_id=communication.pk, actor=approver)

    post = CommunityPost.objects.get()
    communication.refresh_from_db()
    assert communication.state == "sent"
    assert post.communication == communication
    assert post.mailchimp_campaign_id == communication.mailchimp_campaign_id
    assert post.origin == PostOrigin.PARTNERLINK
    assert post.kind == CommunicationKind.POLICY_UPDATE
    assert post.style == PostStyle.FULL  # policy updates go in full by default
    assert post.state == P.DRAFT
    assert (post.partner_types, post.regions) == (["supplier"], ["emea"])
    assert "We have revised the trading terms" in post.body_html and "Unsubscribe" not in post.body_html
    # The sweep sees the same campaign and adds nothing.
    assert posts.community_posts_sweep_sent().created == 0


def test_the_style_for_a_kind_is_what_the_admin_chose(mailchimp_emulator, audience, django_capture_on_commit_callbacks):
    PostStylePerKind.objects.update_or_create(kind="external", defaults={"style": PostStyle.FULL})
    campaign_id = sent_campaign(mailchimp_emulator)

    with django_capture_on_commit_callbacks(execute=True):
        post, _ = posts.community_post_capture(campaign_id=campaign_id, origin=PostOrigin.SWEEP)

    post = reload(post)
    assert post.style == PostStyle.FULL
    assert "mcnTextContent" in post.body_html  # the email's own layout, cleaned


def test_styles_fall_back_to_the_shipped_defaults():
    PostStylePerKind.objects.all().delete()
    assert posts.post_style_for(CommunicationKind.NEWSLETTER) == PostStyle.SUMMARY
    assert posts.post_style_for(CommunicationKind.POLICY_UPDATE) == PostStyle.FULL
    assert posts.post_style_for("external") == PostStyle.SUMMARY


def test_the_migration_ships_a_style_for_every_kind():
    assert set(PostStylePerKind.objects.values_list("kind", flat=True)) >= {*CommunicationKind.values, "external"}


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([], ([], [])),
        ([{"partner_types": ["supplier"], "regions": ["emea"]}], (["supplier"], ["emea"])),
        (
            [{"partner_types": ["carrier"], "regions": ["apac"]}, {"partner_types": ["supplier"], "regions": []}],
            (["supplier", "carrier"], []),
        ),
        ([{"partner_types": [], "regions": ["na"]}, {"partner_types": ["3pl"], "regions": ["na"]}], ([], ["na"])),
    ],
)
def test_the_audience_from_segments_is_their_union_and_empty_means_everyone(segments, expected, audience):
    from partners.models import Segment

    built = [Segment(name=f"s{i}", audience=audience, **rules) for i, rules in enumerate(segments)]
    assert posts.post_audience_from_segments(built) == expected


# --- fetching: failures and retries -------------------------------------------------------------------------------


def test_a_transient_mailchimp_failure_retries_the_fetch(
    mailchimp_emulator, audience, django_capture_on_commit_callbacks
):
    from celery.exceptions import Retry

    campaign_id = sent_campaign(mailchimp_emulator)
    mailchimp_emulator.faults.add(Fault(status=503, method="GET", path=f"/campaigns/{campaign_id}/content", times=1))

    with pytest.raises(Retry), django_capture_on_commit_callbacks(execute=True):
        posts.community_post_capture(campaign_id=campaign_id, origin=PostOrigin.SWEEP)

    post = CommunityPost.objects.get()
    assert post.state == P.IMPORTING
    assert post.last_error.startswith("will retry:") and post.next_attempt_at > timezone.now()

    tasks.community_post_import_task.apply(args=[post.pk], retries=1)  # the worker, after the countdown

    assert reload(post).state == P.DRAFT


def test_a_campaign_mailchimp_no_longer_has_is_an_import_failure_with_its_reason_and_can_be_fetched_again(
    mailchimp_emulator, audience, author, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        post, _ = posts.community_post_capture(campaign_id="deleted0ca", origin=PostOrigin.IMPORT)

    post = reload(post)
    assert post.state == P.IMPORT_FAILED
    assert post.failure_reason.startswith("Mailchimp refused (404")

    with django_capture_on_commit_callbacks(execute=True):
        posts.community_post_import_retry(post_id=post.pk, actor=author)
    assert reload(post).state == P.IMPORT_FAILED  # still gone
    assert [t.to_state for t in post.transitions.all()] == [P.IMPORTING, P.IMPORT_FAILED, P.IMPORTING, P.IMPORT_FAILED]


def test_the_relay_fetches_a_capture_whose_task_was_lost(mailchimp_emulator, audience, django_capture_on_commit_callbacks):
    campaign_id = sent_campaign(mailchimp_emulator)
    post, _ = posts.community_post_capture(campaign_id=campaign_id, origin=PostOrigin.SWEEP)  # message never sent

    assert posts.community_posts_relay_stuck() == 0  # fresh
    with django_capture_on_commit_callbacks(execute=True):
        assert posts.community_posts_relay_stuck(now=timezone.now() + dt.timedelta(minutes=5)) == 1

    assert reload(post).state == P.DRAFT


# --- importing past campaigns -------------------------------------------------------------------------------------


def test_importing_past_campaigns_makes_drafts_once(mailchimp_emulator, audience, author, django_capture_on_commit_callbacks):
    first = sent_campaign(mailchimp_emulator, subject="June news", ago=dt.timedelta(days=200))
    second = sent_campaign(mailchimp_emulator, subject="May news", ago=dt.timedelta(days=230))

    with django_capture_on_commit_callbacks(execute=True):
        created, existing = posts.community_posts_import_campaigns(campaign_ids=[first, second, first], actor=author)
    assert (len(created), len(existing)) == (2, 0)
    with django_capture_on_commit_callbacks(execute=True):
        created, existing = posts.community_posts_import_campaigns(campaign_ids=[second], actor=author)
    assert (len(created), len(existing)) == (0, 1)

    assert sorted(CommunityPost.objects.values_list("campaign_subject", "origin", "state")) == [
        ("June news", "import", P.DRAFT),
        ("May news", "import", P.DRAFT),
    ]
    assert CommunityPost.objects.get(mailchimp_campaign_id=first).transitions.first().actor == author


def test_the_import_page_lists_sent_campaigns_newest_first_with_their_posts(
    mailchimp_emulator, audience, imported  # noqa: F811
):
    older = sent_campaign(mailchimp_emulator, subject="Older", ago=dt.timedelta(days=90))

    page = posts.mailchimp_sent_campaigns_page(page=1, per_page=1)
    assert (page.total, page.num_pages, page.has_next, page.has_previous) == (2, 2, True, False)
    assert [(row.campaign_id, row.post) for row in page.rows] == [(imported.mailchimp_campaign_id, imported)]
    assert page.rows[0].audience_name == audience.name

    page = posts.mailchimp_sent_campaigns_page(page=2, per_page=1)
    assert [(row.campaign_id, row.subject, row.post) for row in page.rows] == [(older, "Older", None)]


def test_people_without_the_permission_cannot_import(db, mailchimp_emulator):
    from tests.partners.factories import UserFactory

    with pytest.raises(posts.PermissionRefused):
        posts.community_posts_import_campaigns(campaign_ids=["abc"], actor=UserFactory(is_staff=True))


def test_a_capture_racing_another_for_the_same_campaign_keeps_the_first(
    mailchimp_emulator, audience, monkeypatch, django_capture_on_commit_callbacks
):
    """Two workers capture one campaign at once: the unique campaign id lets one row in, the other finds it."""
    campaign_id = sent_campaign(mailchimp_emulator)
    real = posts._communication_for_campaign

    def competitor_commits_first(campaign):
        CommunityPost.objects.create(mailchimp_campaign_id=campaign, origin=PostOrigin.WEBHOOK)
        return real(campaign)

    monkeypatch.setattr(posts, "_communication_for_campaign", competitor_commits_first)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        post, created = posts.community_post_capture(campaign_id=campaign_id, origin=PostOrigin.SWEEP)

    assert not created and post.origin == PostOrigin.WEBHOOK
    assert CommunityPost.objects.count() == 1 and callbacks == []
