"""The community posts admin: the list with its filters at a constant query count, the page a reviewer decides on
(status, audience, preview, history, the buttons each person may press and the refusals), editing through the
services, the import of past Mailchimp campaigns, and the post styles per kind."""

import datetime as dt

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from campaigns import posts
from campaigns.models import CommunityPost, PostOrigin, PostState, PostStyle, PostStylePerKind

from .conftest import make_user, new_communication
from .posts_support import (  # noqa: F401 - fixtures
    approve_post,
    imported,
    reload,
    sent_campaign,
    submitted_post,
    tg_calls,
    tg_fast,
    tg_posts,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
P = PostState
LIST_URL = reverse("admin:campaigns_communitypost_changelist")
IMPORT_URL = reverse("admin:campaigns_communitypost_import")


def change_url(post) -> str:
    return reverse("admin:campaigns_communitypost_change", args=[post.pk])


def action_url(post, action: str) -> str:
    return reverse("admin:campaigns_communitypost_action", args=[post.pk, action])


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _many(count, author, approver, communication=None):
    """Posts in every state, some linked to a communication, without calling Mailchimp."""
    states = [P.DRAFT, P.SUBMITTED, P.APPROVED, P.PUBLISHED, P.FAILED, P.IMPORTING, P.DISCARDED]
    start = CommunityPost.objects.count()
    for index in range(start, start + count):
        state = states[index % len(states)]
        CommunityPost.objects.create(
            mailchimp_campaign_id=f"cmp{index:05d}",
            origin=[PostOrigin.WEBHOOK, PostOrigin.SWEEP, PostOrigin.IMPORT][index % 3],
            kind=["newsletter", "policy_update", "external"][index % 3],
            title=f"Bulletin {index}",
            campaign_subject=f"Bulletin {index}",
            campaign_sent_at=timezone.now() - dt.timedelta(days=index),
            body_html="<p>Body</p>",
            state=state,
            submitted_by=author if state != P.DRAFT else None,
            approved_by=approver if state in (P.APPROVED, P.PUBLISHED, P.FAILED) else None,
            tg_post_id=f"POST-{index:06d}" if state == P.PUBLISHED else "",
            communication=communication if index == start else None,
        )


# --- the list -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query", ["", "?waiting_for=me", "?state=published&kind=newsletter", "?origin=sweep", "?q=Bulletin", "?style=full"]
)
def test_the_list_keeps_a_constant_query_count(
    client, author, approver, audience, suppliers, query, django_assert_max_num_queries
):
    client.force_login(approver)
    communication = new_communication(author, audience, [suppliers])
    _many(4, author, approver, communication)
    with django_assert_max_num_queries(30) as few:
        assert client.get(LIST_URL + query).status_code == 200

    _many(70, author, approver)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(LIST_URL + query)
    assert response.status_code == 200


def test_the_list_filters_by_state_kind_source_style_and_date(client, author, approver):
    client.force_login(approver)
    _many(14, author, approver)

    html = client.get(LIST_URL).content.decode()
    for title in ("By approval", "By state", "By kind", "By origin", "By style", "By campaign sent at"):
        assert title in html
    assert client.get(LIST_URL, {"state": "published"}).context["cl"].result_count == 2
    assert client.get(LIST_URL, {"kind": "external"}).context["cl"].result_count == 4
    assert client.get(LIST_URL, {"origin": "import"}).context["cl"].result_count == 4
    since = (timezone.now() - dt.timedelta(days=3, hours=1)).isoformat()
    assert client.get(LIST_URL, {"campaign_sent_at__gte": since}).context["cl"].result_count == 4
    assert "Import past campaigns" in html


def test_waiting_for_my_approval_counts_others_submissions_only(client, author, approver, second_approver):
    _many(7, author, approver)  # one submitted by maria
    client.force_login(approver)
    response = client.get(LIST_URL, {"waiting_for": "me"})
    assert [p.title for p in response.context["cl"].result_list] == ["Bulletin 1"]
    assert "Waiting for my approval (1)" in response.content.decode()
    client.force_login(author)
    assert "Waiting for my approval" not in client.get(LIST_URL).content.decode()


# --- the change page --------------------------------------------------------------------------------------------


def test_the_page_shows_status_campaign_audience_preview_and_history(client, imported, author):  # noqa: F811
    client.force_login(author)
    response = client.get(change_url(imported))
    html = response.content.decode()

    assert response.status_code == 200
    assert 'id="post-state">Draft<' in html
    assert imported.mailchimp_campaign_id in html and "web version" in html
    assert "Mailchimp webhook" in html and "Not sent from Partnerlink: Summary" in html
    assert "types: all; regions: all" in html
    assert "not published yet" in html
    assert 'sandbox=""' in html and "Read the full email" in html
    assert "Fetched from Mailchimp as a summary post" in html  # the history
    assert 'name="_submit"' in html and 'name="_approve"' not in html
    assert 'name="_restyle_full"' in html and 'name="_discard"' in html


def test_the_reviewer_sees_approve_the_submitter_sees_the_four_eyes_note(
    client, submitted_post, author, approver  # noqa: F811
):
    client.force_login(author)
    html = client.get(change_url(submitted_post)).content.decode()
    assert 'name="_approve"' not in html
    client.force_login(approver)
    html = client.get(change_url(submitted_post)).content.decode()
    assert 'name="_approve"' in html and 'name="_request_changes"' in html

    submitter = make_user("Partner managers", "Approvers", username="sam")
    post = posts.community_post_update(post_id=submitted_post.pk, actor=submitter, changes={"title": "Sam's"})
    posts.community_post_submit(post_id=post.pk, actor=submitter)
    client.force_login(submitter)
    html = client.get(change_url(post)).content.decode()
    assert "another approver has to approve it (four-eyes rule)" in html and 'name="_approve"' not in html


def test_approving_from_the_page_publishes_and_shows_the_tg_post(
    client, submitted_post, approver, tg_fast, django_capture_on_commit_callbacks  # noqa: F811
):
    client.force_login(approver)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(action_url(submitted_post, "approve"), follow=True)

    post = reload(submitted_post)
    assert post.state == P.PUBLISHED
    assert "Approved: it is being published to the Trading Grid community." in messages_of(response)
    html = client.get(change_url(post)).content.decode()
    assert post.tg_post_id in html and "shows revision 1" in html
    assert 'name="_discard"' not in html  # TG can't remove posts


def test_refusals_are_shown_as_messages(client, submitted_post, author, approver):  # noqa: F811
    client.force_login(author)
    response = client.post(action_url(submitted_post, "approve"), follow=True)
    assert any("Only members of “Approvers”" in m for m in messages_of(response))
    client.force_login(approver)
    response = client.post(action_url(submitted_post, "request_changes"), {"comment": ""}, follow=True)
    assert any("a comment is required" in m for m in messages_of(response))
    assert reload(submitted_post).state == P.SUBMITTED
    assert client.get(action_url(submitted_post, "approve")).status_code == 405


def test_a_failure_shows_tgs_reason_and_the_resolve_form_for_a_create_in_doubt(
    client, submitted_post, approver, second_approver, tg_fast  # noqa: F811
):
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)
    CommunityPost.objects.filter(pk=submitted_post.pk).update(tg_create_started_at=timezone.now())
    posts.community_post_publish_execute(post_id=submitted_post.pk)

    client.force_login(second_approver)
    html = client.get(change_url(submitted_post)).content.decode()
    assert 'id="post-failure-reason"' in html and "Trading Grid may have created this post" in html
    assert 'name="_resolve_existing"' in html and 'name="_resolve_new"' in html
    assert 'name="_retry"' not in html  # not while it is in doubt


def test_editing_through_the_form_goes_back_to_draft_and_is_sanitized(
    client, submitted_post, author  # noqa: F811
):
    client.force_login(author)
    response = client.post(
        change_url(submitted_post),
        {
            "title": "Q3 highlights for suppliers",
            "summary": "Short summary.",
            "body_html": '<p onclick="x()">New body</p><script>bad()</script>',
            "partner_types": ["supplier"],
            "regions": ["emea", "apac"],
        },
    )

    assert response.status_code == 302
    post = reload(submitted_post)
    assert (post.title, post.summary, post.body_html) == ("Q3 highlights for suppliers", "Short summary.", "<p>New body</p>")
    assert (post.partner_types, post.regions, post.state, post.revision) == (["supplier"], ["emea", "apac"], P.DRAFT, 2)
    assert "submission withdrawn" in post.transitions.last().comment


def test_there_is_no_add_or_delete(client, administrator, imported):  # noqa: F811
    client.force_login(administrator)
    assert client.get(reverse("admin:campaigns_communitypost_add")).status_code == 403
    assert client.get(reverse("admin:campaigns_communitypost_delete", args=[imported.pk])).status_code == 403


# --- importing past campaigns -------------------------------------------------------------------------------------


def test_the_import_page_lists_sent_campaigns_and_imports_the_ticked_ones_once(
    client, author, audience, mailchimp_emulator, django_capture_on_commit_callbacks
):
    ids = [
        sent_campaign(mailchimp_emulator, subject=f"Old news {n}", ago=dt.timedelta(days=100 + n)) for n in range(30)
    ]
    client.force_login(author)

    page1 = client.get(IMPORT_URL)
    html = page1.content.decode()
    assert page1.status_code == 200
    assert "Old news 0" in html and "Old news 24" in html and "Old news 25" not in html  # newest first, 25 a page
    assert "30 sent campaigns" in html and 'href="?page=2"' in html
    assert "Old news 29" in client.get(IMPORT_URL, {"page": 2}).content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(IMPORT_URL, {"campaign_ids": ids[:2], "page": 1}, follow=True)
    assert "2 campaigns imported as drafts (their content is being fetched)." in messages_of(response)
    assert sorted(CommunityPost.objects.values_list("state", "origin")) == [(P.DRAFT, "import")] * 2

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(IMPORT_URL, {"campaign_ids": ids[:3]}, follow=True)
    assert "1 campaign imported as drafts (their content is being fetched); 2 already had a post." in messages_of(
        response
    )
    assert CommunityPost.objects.count() == 3
    html = client.get(IMPORT_URL).content.decode()
    assert html.count('name="campaign_ids"') == 22  # imported ones link to their post instead


def test_the_import_page_needs_the_permission_and_says_when_mailchimp_fails(
    client, second_approver, author, mailchimp_emulator
):
    from connectors.mailchimp.emulator import Fault

    client.force_login(second_approver)  # only an approver: reviews, doesn't import
    assert client.get(IMPORT_URL).status_code == 403
    client.force_login(author)
    mailchimp_emulator.faults.add(Fault(status=503, method="GET", path="/campaigns", times=None))
    html = client.get(IMPORT_URL).content.decode()
    assert "Mailchimp could not list its campaigns" in html


# --- styles per kind ----------------------------------------------------------------------------------------------


def test_administrators_choose_the_style_per_kind(client, administrator):
    client.force_login(administrator)
    url = reverse("admin:campaigns_poststyleperkind_changelist")
    response = client.get(url)
    assert response.status_code == 200 and "Not sent from Partnerlink" in response.content.decode()

    rows = list(PostStylePerKind.objects.order_by("kind"))
    data = {"form-TOTAL_FORMS": len(rows), "form-INITIAL_FORMS": len(rows), "_save": "Save"}
    for index, row in enumerate(rows):
        data[f"form-{index}-id"] = row.pk
        data[f"form-{index}-style"] = PostStyle.FULL if row.kind == "newsletter" else row.style
    assert client.post(url, data).status_code == 302
    assert posts.post_style_for("newsletter") == PostStyle.FULL
