"""Community posts reviewed under the four-eyes rule and published to the Trading Grid emulator: exactly one
Trading Grid post per campaign, whatever runs twice; edits approved again update that post; transient failures
retry; refusals and creates in doubt are shown with their reason, never posted twice."""

import datetime as dt
import time

import pytest
from celery.exceptions import Retry
from django.utils import timezone

from campaigns import posts, tasks
from campaigns.models import CommunityPost, PostState, PostStyle
from campaigns.services import PermissionRefused, TransitionError
from connectors.tradinggrid.client import TradingGridClient

from .conftest import make_user
from .posts_support import (  # noqa: F401 - fixtures
    approve_post,
    imported,
    reload,
    submitted_post,
    tg_calls,
    tg_fast,
    tg_posts,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("mailchimp_contract", "eager_tasks")]
P = PostState


def states(post) -> list[tuple[str, str, str]]:
    return [(t.from_state, t.to_state, t.actor.username if t.actor else "") for t in reload(post).transitions.all()]


# --- four eyes ---------------------------------------------------------------------------------------------------


def test_submit_approve_publish_is_recorded_with_who_when_and_comment(
    imported, author, approver, approve_post, tg_fast  # noqa: F811
):
    posts.community_post_submit(post_id=imported.pk, actor=author, comment="Ready for partners")
    post = approve_post(imported)

    assert post.state == P.PUBLISHED
    assert (post.submitted_by, post.approved_by) == (author, approver)
    assert states(post) == [
        ("", P.IMPORTING, ""),
        (P.IMPORTING, P.DRAFT, ""),
        (P.DRAFT, P.SUBMITTED, "maria"),
        (P.SUBMITTED, P.APPROVED, "olivia"),
        (P.APPROVED, P.PUBLISHED, ""),
    ]
    assert post.transitions.get(to_state=P.SUBMITTED).comment == "Ready for partners"
    assert all(t.created_at for t in post.transitions.all())


def test_the_submitter_cannot_approve_request_changes_or_retry(submitted_post, author, approver):  # noqa: F811
    submitter = make_user("Partner managers", "Approvers", username="sam")
    post = posts.community_post_submit(
        post_id=posts.community_post_update(
            post_id=submitted_post.pk, actor=submitter, changes={"title": "Edited by Sam"}
        ).pk,
        actor=submitter,
    )
    with pytest.raises(PermissionRefused, match="four-eyes rule"):
        posts.community_post_approve(post_id=post.pk, actor=submitter)
    with pytest.raises(PermissionRefused, match="four-eyes rule"):
        posts.community_post_request_changes(post_id=post.pk, actor=submitter, comment="no")
    assert reload(post).state == P.SUBMITTED


def test_only_approvers_approve(submitted_post, author):  # noqa: F811
    other_manager = make_user("Partner managers", username="james2")
    with pytest.raises(PermissionRefused, match="Only members of “Approvers”"):
        posts.community_post_approve(post_id=submitted_post.pk, actor=other_manager)


def test_nothing_is_approved_before_it_is_submitted(imported, approver):  # noqa: F811
    with pytest.raises(TransitionError, match="can't be approved before it is submitted"):
        posts.community_post_approve(post_id=imported.pk, actor=approver)


def test_people_who_may_not_change_posts_cannot_submit_or_edit(imported):  # noqa: F811
    viewer = make_user(username="viewer", is_staff=True)
    with pytest.raises(PermissionRefused):
        posts.community_post_submit(post_id=imported.pk, actor=viewer)
    with pytest.raises(PermissionRefused):
        posts.community_post_update(post_id=imported.pk, actor=viewer, changes={"title": "x"})


def test_requesting_changes_needs_a_comment_and_the_author_edits_before_resubmitting(
    submitted_post, author, approver  # noqa: F811
):
    with pytest.raises(TransitionError, match="a comment is required"):
        posts.community_post_request_changes(post_id=submitted_post.pk, actor=approver, comment=" ")
    posts.community_post_request_changes(post_id=submitted_post.pk, actor=approver, comment="Shorter title please")

    with pytest.raises(TransitionError, match="edit it first"):
        posts.community_post_submit(post_id=submitted_post.pk, actor=author)
    posts.community_post_update(post_id=submitted_post.pk, actor=author, changes={"title": "Q3 highlights"})
    posts.community_post_submit(post_id=submitted_post.pk, actor=author)

    assert [s[1] for s in states(submitted_post)][-4:] == [P.SUBMITTED, P.CHANGES_REQUESTED, P.DRAFT, P.SUBMITTED]
    assert reload(submitted_post).transitions.get(to_state=P.CHANGES_REQUESTED).comment == "Shorter title please"


def test_an_empty_post_cannot_be_submitted(imported, author):  # noqa: F811
    posts.community_post_update(post_id=imported.pk, actor=author, changes={"title": "", "body_html": ""})
    with pytest.raises(TransitionError, match="the title is empty; the body is empty"):
        posts.community_post_submit(post_id=imported.pk, actor=author)


def test_an_edit_after_approval_goes_back_to_draft_and_nothing_is_published(
    submitted_post, author, approver, tg_fast  # noqa: F811
):
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)  # its task never ran
    post = posts.community_post_update(post_id=submitted_post.pk, actor=author, changes={"summary": "New summary"})

    assert post.state == P.DRAFT and post.approved_by is None
    assert reload(post).transitions.last().comment == "Edited summary: approval withdrawn."
    tasks.community_post_publish_task.apply(args=[post.pk])
    assert tg_posts(tg_fast) == []


def test_an_unchanged_save_changes_nothing(submitted_post, author):  # noqa: F811
    posts.community_post_update(post_id=submitted_post.pk, actor=author, changes={"title": submitted_post.title})
    assert reload(submitted_post).state == P.SUBMITTED


def test_edits_are_sanitized_and_audiences_checked(imported, author):  # noqa: F811
    post = posts.community_post_update(
        post_id=imported.pk,
        actor=author,
        changes={"body_html": '<p onmouseover="x()">Hi</p><script>steal()</script>', "regions": ["emea"]},
    )
    assert post.body_html == "<p>Hi</p>" and post.regions == ["emea"]
    with pytest.raises(Exception, match="Choose from"):
        posts.community_post_update(post_id=imported.pk, actor=author, changes={"partner_types": ["pirate"]})


def test_restyling_makes_the_post_again_from_the_email(imported, author):  # noqa: F811
    assert imported.style == PostStyle.SUMMARY
    post = posts.community_post_restyle(post_id=imported.pk, actor=author, style=PostStyle.FULL)
    assert post.style == PostStyle.FULL and "mcnTextContent" in post.body_html and post.revision == 2
    post = posts.community_post_restyle(post_id=imported.pk, actor=author, style=PostStyle.SUMMARY)
    assert "Read the full email" in post.body_html


def test_discard_keeps_the_campaign_from_coming_back_and_restore_brings_it_back(
    imported, author, mailchimp_emulator, django_capture_on_commit_callbacks  # noqa: F811
):
    posts.community_post_discard(post_id=imported.pk, actor=author, comment="Internal test send")
    with django_capture_on_commit_callbacks(execute=True):
        assert posts.community_posts_sweep_sent().created == 0
    assert reload(imported).state == P.DISCARDED
    with pytest.raises(TransitionError, match="restore it first"):
        posts.community_post_submit(post_id=imported.pk, actor=author)

    assert posts.community_post_restore(post_id=imported.pk, actor=author).state == P.DRAFT


# --- publishing --------------------------------------------------------------------------------------------------


def test_approval_publishes_exactly_one_tg_post_with_source_and_audience(
    submitted_post, author, approve_post, tg_fast  # noqa: F811
):
    posts.community_post_update(
        post_id=submitted_post.pk, actor=author, changes={"partner_types": ["supplier", "carrier"], "regions": []}
    )
    posts.community_post_submit(post_id=submitted_post.pk, actor=author)
    post = approve_post(submitted_post)

    [remote] = tg_posts(tg_fast)
    assert post.state == P.PUBLISHED
    assert post.tg_post_id == remote["id"] and post.tg_post_url == remote["url"]
    assert post.published_revision == post.revision and post.tg_create_started_at is None
    assert remote["title"] == post.title and remote["body_html"] == post.body_html and remote["summary"]
    assert remote["source"] == {
        "type": "mailchimp",
        "campaign_id": post.mailchimp_campaign_id,
        "archive_url": post.archive_url,
    }
    assert remote["audience"] == {"partner_types": ["supplier", "carrier"], "regions": []}
    assert remote["published_at"]
    assert reload(post).transitions.last().comment == f"Published in the Trading Grid community as post {remote['id']}."


def test_edit_and_approve_again_patches_the_same_tg_post(
    submitted_post, author, second_approver, approve_post, tg_fast  # noqa: F811
):
    post = approve_post(submitted_post)
    tg_id = post.tg_post_id

    post = posts.community_post_update(post_id=post.pk, actor=author, changes={"title": "Q3 highlights, corrected"})
    assert post.state == P.DRAFT and post.unpublished_edits
    assert "the published version stays in the community" in reload(post).transitions.last().comment
    posts.community_post_submit(post_id=post.pk, actor=author)
    post = approve_post(post, second_approver)

    [remote] = tg_posts(tg_fast)
    assert post.state == P.PUBLISHED and post.tg_post_id == tg_id and not post.unpublished_edits
    assert remote["id"] == tg_id and remote["title"] == "Q3 highlights, corrected"
    assert len(tg_calls(tg_fast, "POST")) == 1 and len(tg_calls(tg_fast, "PATCH")) == 1
    assert reload(post).transitions.last().comment == f"Trading Grid post {tg_id} updated to revision 2."


def test_the_publish_task_run_twice_makes_one_post(submitted_post, approver, tg_fast):  # noqa: F811
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)  # enqueued on commit: not run here

    tasks.community_post_publish_task.apply(args=[submitted_post.pk])
    tasks.community_post_publish_task.apply(args=[submitted_post.pk])

    assert len(tg_posts(tg_fast)) == 1
    assert len(tg_calls(tg_fast, "POST")) == 1
    assert reload(submitted_post).state == P.PUBLISHED


def test_a_run_that_finds_the_post_already_recorded_patches_instead_of_posting(
    submitted_post, approver, tg_fast  # noqa: F811
):
    """A worker that saved TG's id but died before recording the publication: the retry updates that post."""
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)
    tasks.community_post_publish_task.apply(args=[submitted_post.pk])
    tg_id = reload(submitted_post).tg_post_id
    CommunityPost.objects.filter(pk=submitted_post.pk).update(state=P.APPROVED)  # as if the last write was lost

    tasks.community_post_publish_task.apply(args=[submitted_post.pk])

    assert [p["id"] for p in tg_posts(tg_fast)] == [tg_id]
    assert len(tg_calls(tg_fast, "PATCH")) == 1


def test_a_post_leased_by_another_worker_waits(submitted_post, approver, tg_fast):  # noqa: F811
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)
    CommunityPost.objects.filter(pk=submitted_post.pk).update(
        lease_owner="other", lease_expires_at=timezone.now() + dt.timedelta(minutes=5)
    )
    with pytest.raises(posts.PostBusy):
        posts.community_post_publish_execute(post_id=submitted_post.pk)
    with pytest.raises(TransitionError, match="right now"):
        posts.community_post_update(post_id=submitted_post.pk, actor=approver, changes={"title": "x"})
    assert tg_posts(tg_fast) == []


def test_a_transient_tg_failure_retries_with_backoff_and_publishes_once(
    submitted_post, approver, approve_post, tg_fast  # noqa: F811
):
    # 503 on every attempt the client makes inside one task run; the next run gets through.
    tg_fast.state.add_faults([{"status": 503, "method": "POST", "path": "/community/v1/posts", "times": 4}])

    with pytest.raises(Retry):
        approve_post(submitted_post)

    post = reload(submitted_post)
    assert post.state == P.APPROVED and post.tg_create_started_at is None  # 503: nothing was created
    assert post.last_error.startswith("will retry: Trading Grid POST /community/v1/posts unavailable (HTTP 503")
    assert post.next_attempt_at > timezone.now()
    assert tg_posts(tg_fast) == []

    tasks.community_post_publish_task.apply(args=[post.pk], retries=1)  # the worker, after the countdown

    post = reload(post)
    assert post.state == P.PUBLISHED and len(tg_posts(tg_fast)) == 1 and post.attempts == 2


def test_the_retry_countdown_honours_retry_after_with_jitter(monkeypatch, submitted_post, approver):  # noqa: F811
    from connectors.tradinggrid.errors import TradingGridTransientError

    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)
    countdowns = []

    def fail(**kwargs):
        raise TradingGridTransientError("busy", status=429, retry_after=90, not_processed=True)

    monkeypatch.setattr(posts, "community_post_publish_execute", fail)
    monkeypatch.setattr(
        tasks.community_post_publish_task, "retry", lambda **kw: countdowns.append(kw["countdown"]) or Retry()
    )
    for _ in range(3):
        with pytest.raises(Retry):
            tasks.community_post_publish_task.run(submitted_post.pk)
    assert all(countdown >= 90 for countdown in countdowns)


def test_giving_up_after_the_retries_marks_it_failed(submitted_post, approver, tg_fast):  # noqa: F811
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)
    tg_fast.state.add_faults([{"status": 429, "method": "POST", "path": "/community/v1/posts", "times": None}])

    last = tasks.community_post_publish_task.max_retries
    tasks.community_post_publish_task.apply(args=[submitted_post.pk], retries=last)

    post = reload(submitted_post)
    assert post.state == P.FAILED and post.failure_reason.startswith(f"Gave up after {last} retries")


def test_a_permanent_tg_refusal_marks_it_failed_with_tgs_reason_and_a_retry_publishes(
    submitted_post, approver, second_approver, approve_post, tg_fast, django_capture_on_commit_callbacks  # noqa: F811
):
    CommunityPost.objects.filter(pk=submitted_post.pk).update(regions=["mars"])  # TG refuses an unknown region

    post = approve_post(submitted_post)

    assert post.state == P.FAILED
    assert post.failure_reason.startswith("Trading Grid refused (HTTP 4")
    assert "audience.regions[0]" in post.failure_reason and "[POST /community/v1/posts]" in post.failure_reason
    assert post.tg_create_started_at is None and tg_posts(tg_fast) == []
    assert reload(post).transitions.last().comment == post.failure_reason

    CommunityPost.objects.filter(pk=post.pk).update(regions=["emea"])
    with pytest.raises(TransitionError, match="Retry publishing"):
        posts.community_post_approve(post_id=post.pk, actor=approver)
    submitter = post.submitted_by
    with pytest.raises(PermissionRefused):
        posts.community_post_retry(post_id=post.pk, actor=submitter)
    with django_capture_on_commit_callbacks(execute=True):
        posts.community_post_retry(post_id=post.pk, actor=second_approver)
    assert reload(post).state == P.PUBLISHED and len(tg_posts(tg_fast)) == 1


def test_a_tg_post_removed_in_tg_is_a_failure_an_approver_can_publish_as_new(
    submitted_post, approver, author, second_approver, approve_post, tg_fast, django_capture_on_commit_callbacks  # noqa: F811
):
    post = approve_post(submitted_post)
    tg_fast.state.posts.clear()  # removed in Trading Grid
    posts.community_post_update(post_id=post.pk, actor=author, changes={"title": "Again"})
    posts.community_post_submit(post_id=post.pk, actor=author)
    post = approve_post(post, second_approver)

    assert post.state == P.FAILED and f"no longer has post {post.tg_post_id}" in post.failure_reason
    with django_capture_on_commit_callbacks(execute=True):
        posts.community_post_resolve_tg_post(post_id=post.pk, actor=approver, tg_post_id="")
    post = reload(post)
    [remote] = tg_posts(tg_fast)
    assert post.state == P.PUBLISHED and post.tg_post_id == remote["id"] and remote["title"] == "Again"


# --- a create in doubt: never a second post ----------------------------------------------------------------------


def test_a_worker_killed_after_tg_created_the_post_never_posts_again_and_an_approver_links_it(
    submitted_post, approver, second_approver, tg_fast, django_capture_on_commit_callbacks  # noqa: F811
):
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)
    post = reload(submitted_post)
    # The POST went through, then the worker died before saving the id: TG has the post, we only have the marker.
    remote = TradingGridClient.from_settings().create_post(post=posts.community_post_tg_payload(post))
    CommunityPost.objects.filter(pk=post.pk).update(tg_create_started_at=timezone.now())

    tasks.community_post_publish_task.apply(args=[post.pk])  # the redelivered task

    post = reload(post)
    assert post.state == P.FAILED and post.create_in_doubt
    assert "Trading Grid may have created this post" in post.failure_reason
    assert post.mailchimp_campaign_id in post.failure_reason
    assert len(tg_posts(tg_fast)) == 1
    with pytest.raises(TransitionError, match="say which post it is"):
        posts.community_post_retry(post_id=post.pk, actor=second_approver)
    with pytest.raises(TransitionError, match="Trading Grid has no post POST-nope"):
        posts.community_post_resolve_tg_post(post_id=post.pk, actor=second_approver, tg_post_id="POST-nope")

    with django_capture_on_commit_callbacks(execute=True):
        posts.community_post_resolve_tg_post(post_id=post.pk, actor=second_approver, tg_post_id=remote["id"])

    post = reload(post)
    assert post.state == P.PUBLISHED and post.tg_post_id == remote["id"] and not post.create_in_doubt
    assert len(tg_posts(tg_fast)) == 1 and len(tg_calls(tg_fast, "PATCH")) == 1


def test_a_post_of_another_campaign_is_refused_when_resolving(
    submitted_post, approver, second_approver, tg_fast  # noqa: F811
):
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)
    CommunityPost.objects.filter(pk=submitted_post.pk).update(tg_create_started_at=timezone.now())
    tasks.community_post_publish_task.apply(args=[submitted_post.pk])
    other = TradingGridClient.from_settings().create_post(
        post={"title": "x", "body_html": "<p>x</p>", "source": {"type": "mailchimp", "campaign_id": "someother"}}
    )

    with pytest.raises(TransitionError, match="comes from campaign “someother”"):
        posts.community_post_resolve_tg_post(post_id=submitted_post.pk, actor=second_approver, tg_post_id=other["id"])


def test_a_timeout_after_tg_received_the_create_is_in_doubt_not_retried(
    submitted_post, approver, tg_fast, monkeypatch  # noqa: F811
):
    """TG is slow: the client gives up waiting while TG goes on to create the post. No second POST follows."""
    slow = TradingGridClient.from_settings(timeout=(2.0, 0.3), sleep=lambda seconds: None)
    monkeypatch.setattr(posts, "_tradinggrid", lambda given=None: given or slow)
    tg_fast.state.add_faults([{"kind": "latency", "seconds": 1.0, "method": "POST", "path": "/community/v1/posts"}])
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)

    tasks.community_post_publish_task.apply(args=[submitted_post.pk])
    tasks.community_post_publish_task.apply(args=[submitted_post.pk])

    post = reload(submitted_post)
    assert post.state == P.FAILED and post.create_in_doubt and "ReadTimeout" in post.failure_reason
    deadline = time.monotonic() + 5
    while not tg_posts(tg_fast) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(tg_posts(tg_fast)) == 1  # TG did create it; Partnerlink never sent a second POST
    assert len([e for e in tg_fast.state.requests if e["method"] == "POST" and e["path"].endswith("/posts")]) == 1
    slow.close()


# --- the relay ----------------------------------------------------------------------------------------------------


def test_the_relay_publishes_an_approval_whose_message_was_lost(
    submitted_post, approver, tg_fast, django_capture_on_commit_callbacks  # noqa: F811
):
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)  # the message never reached a worker
    later = timezone.now() + dt.timedelta(minutes=5)

    assert posts.community_posts_relay_stuck() == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert posts.community_posts_relay_stuck(now=later) == 1

    assert reload(submitted_post).state == P.PUBLISHED
    assert posts.community_posts_relay_stuck(now=later + dt.timedelta(minutes=5)) == 0


def test_the_relay_leaves_rows_waiting_for_a_retry_or_leased_alone(submitted_post, approver):  # noqa: F811
    posts.community_post_approve(post_id=submitted_post.pk, actor=approver)
    now = timezone.now()
    CommunityPost.objects.filter(pk=submitted_post.pk).update(next_attempt_at=now + dt.timedelta(minutes=10))
    assert posts.community_posts_relay_stuck(now=now + dt.timedelta(minutes=5)) == 0
    CommunityPost.objects.filter(pk=submitted_post.pk).update(
        next_attempt_at=None, lease_owner="w", lease_expires_at=now + dt.timedelta(minutes=30)
    )
    assert posts.community_posts_relay_stuck(now=now + dt.timedelta(minutes=5)) == 0


@pytest.mark.parametrize(
    ("fault", "not_processed"),
    [
        ({"status": 503}, True),
        ({"status": 429, "retry_after": 1}, True),
        ({"status": 500}, False),
        ({"status": 502}, False),
        ({"kind": "drop"}, False),
    ],
)
def test_the_client_says_when_trading_grid_cannot_have_created_the_post(tg_fast, fault, not_processed):  # noqa: F811
    from connectors.tradinggrid.errors import TradingGridTransientError

    tg_fast.state.add_faults([{**fault, "method": "POST", "path": "/community/v1/posts", "times": None}])
    client = TradingGridClient.from_settings(sleep=lambda seconds: None)
    with pytest.raises(TradingGridTransientError) as caught:
        client.create_post(post={"title": "t", "body_html": "<p>b</p>"})
    client.close()
    assert caught.value.not_processed is not_processed


def test_a_connection_never_made_cannot_have_created_anything(settings):
    import socket

    from connectors.tradinggrid.errors import TradingGridTransientError

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.TRADINGGRID_API_URL = f"http://127.0.0.1:{port}"
    client = TradingGridClient.from_settings(sleep=lambda seconds: None, max_attempts=1)
    with pytest.raises(TradingGridTransientError) as caught:
        client._send("POST", "/community/v1/posts", safe_to_retry=False, json={})
    client.close()
    assert caught.value.not_processed is True
