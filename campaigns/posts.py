"""Community posts (flow F1): a sent Mailchimp campaign becomes a Trading Grid community post, approved first.

How a campaign is found (each way calls `community_post_capture`, which records the ledger row once):
- Partnerlink records one of its communications as sent (campaigns/services.py);
- Mailchimp's `campaign` webhook with status `sent` (campaigns sent in Mailchimp's own web app; the webhook is
  registered for sources user and admin, so Partnerlink's own API sends don't echo back);
- the beat sweep of recently sent campaigns (`community_posts_sweep_sent`, every 15 minutes), which catches a
  missed webhook and anything sent while Partnerlink was down;
- a partner manager importing past campaigns from the admin (`community_posts_import_campaigns`).

The row is unique on the Mailchimp campaign id, so every way after the first finds it and changes nothing. A task
then fetches the campaign and its content from Mailchimp, cleans it (campaigns/post_content.py) and makes the
draft, full or summarised by its kind (`PostStylePerKind`).

State machine (every step is a CommunityPostTransition; `None` actor = Partnerlink itself):

    importing ──▶ draft ──submit──▶ submitted ──approve──▶ approved ──(publish task)──▶ published
        └─▶ import_failed ─retry─┘        └─request changes─▶ changes_requested   └──▶ failed ──retry──▶ approved
    edit (title, summary, body, audience, style) in submitted, changes_requested, approved, published, failed ──▶ draft
    draft, submitted, changes_requested, failed, import_failed ──discard──▶ discarded ──restore──▶ draft

Four eyes, as for communications: submitting and editing need `change_communitypost`; approving, requesting
changes and retrying need `approve_communitypost` and someone other than the submitter.

Publishing: one Trading Grid post per campaign. The first publication POSTs /posts and records the post id on the
row at once; every later one (an edit, approved again) PATCHes that post. `tg_create_started_at` is set just
before the POST and cleared once the answer is recorded, so a run that finds it still set knows a create may have
happened without its id being saved (a worker killed between Trading Grid's answer and the save, or a timeout):
Trading Grid's contract has no way to list or search posts by their source campaign, so Partnerlink never POSTs
again on its own then. The post is marked failed "in doubt" and an approver says which Trading Grid post it is
(checked against its `source.campaign_id`) or that there is none (publish as new).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from campaigns.models import (
    DEFAULT_POST_STYLES,
    EXTERNAL_CAMPAIGN_KIND,
    Communication,
    CommunityPost,
    CommunityPostTransition,
    PostOrigin,
    PostState,
    PostStyle,
    PostStylePerKind,
)
from campaigns.post_content import extract_post_content, sanitize_html
from campaigns.services import PermissionRefused, TransitionError, mailchimp_refusal
from connectors.mailchimp.errors import MailchimpAPIError
from connectors.mailchimp.payloads import parse_mailchimp_datetime
from connectors.tradinggrid.errors import (
    TradingGridAPIError,
    TradingGridError,
    TradingGridNotFoundError,
    TradingGridTransientError,
)
from partners.models import MailchimpAudience, PartnerType, Region, Segment

logger = logging.getLogger(__name__)

P = PostState
CHANGE_PERMISSION = "campaigns.change_communitypost"
ADD_PERMISSION = "campaigns.add_communitypost"
APPROVE_PERMISSION = "campaigns.approve_communitypost"

ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    P.IMPORTING: frozenset({P.DRAFT, P.IMPORT_FAILED}),
    P.IMPORT_FAILED: frozenset({P.IMPORTING, P.DISCARDED}),
    P.DRAFT: frozenset({P.SUBMITTED, P.DISCARDED}),
    P.SUBMITTED: frozenset({P.APPROVED, P.CHANGES_REQUESTED, P.DRAFT, P.DISCARDED}),
    P.CHANGES_REQUESTED: frozenset({P.DRAFT, P.DISCARDED}),
    P.APPROVED: frozenset({P.PUBLISHED, P.FAILED, P.DRAFT}),
    P.PUBLISHED: frozenset({P.DRAFT}),
    P.FAILED: frozenset({P.APPROVED, P.DRAFT, P.DISCARDED}),
    P.DISCARDED: frozenset({P.DRAFT, P.IMPORTING}),
}
EDITABLE_FIELDS = ("title", "summary", "body_html", "partner_types", "regions")
EDITABLE_STATES = frozenset({P.DRAFT, P.SUBMITTED, P.CHANGES_REQUESTED, P.APPROVED, P.PUBLISHED, P.FAILED})
LEASE_SECONDS = getattr(settings, "CELERY_TASK_TIME_LIMIT", 660)
SENT_CAMPAIGNS_STREAM = "mailchimp:sent-campaigns"
# Each sweep reads campaigns sent since a day before the previous sweep started: a long send only shows as
# `sent` once it has finished, and the sweep must still see it then.
SWEEP_OVERLAP = timedelta(days=1)


class PostBusy(Exception):
    """Another worker is publishing this post right now: try again shortly."""


class CampaignNotSentYet(Exception):
    """Mailchimp still shows the campaign as sending: fetch it again once it has finished."""


# --- permissions ---------------------------------------------------------------------------------------------


def user_can_change_posts(user: AbstractBaseUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(CHANGE_PERMISSION))


def user_can_approve_posts(user: AbstractBaseUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(APPROVE_PERMISSION))


def user_can_import_posts(user: AbstractBaseUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(ADD_PERMISSION))


def _require_changer(actor: AbstractBaseUser) -> None:
    if not user_can_change_posts(actor):
        raise PermissionRefused("You may not change community posts: ask an administrator for the permission.")


def _require_approver(post: CommunityPost, actor: AbstractBaseUser, *, action: str) -> None:
    if not user_can_approve_posts(actor):
        raise PermissionRefused(f"Only members of “Approvers” can {action} a community post.")
    if post.submitted_by_id is not None and post.submitted_by_id == actor.pk:
        raise PermissionRefused(f"You submitted “{_name(post)}”: someone else has to {action} it (four-eyes rule).")


# --- reads ------------------------------------------------------------------------------------------------------


def post_style_for(kind: str) -> str:
    """The style an administrator chose for this kind in the admin, else the shipped default."""
    chosen = PostStylePerKind.objects.filter(kind=kind).values_list("style", flat=True).first()
    return chosen or DEFAULT_POST_STYLES.get(kind, PostStyle.SUMMARY)


def posts_for_list(posts):
    """Everything a list row shows, in one query whatever the page size."""
    return posts.select_related("communication", "submitted_by", "approved_by")


def posts_waiting_for(user: AbstractBaseUser, posts=None):
    posts = CommunityPost.objects.all() if posts is None else posts
    return posts.filter(state=P.SUBMITTED).exclude(submitted_by_id=user.pk)


def post_audience_from_segments(segments: Iterable[Segment]) -> tuple[list[str], list[str]]:
    """Partner types and regions for Trading Grid from the communication's segments (empty list: everyone).

    Trading Grid's audience is one list of types and one of regions. A segment without a type rule reaches every
    type, so the post does too (likewise regions); otherwise the union of the segments' types and regions."""
    segments = list(segments)
    if not segments:
        return [], []
    types: set[str] = set()
    regions: set[str] = set()
    any_type = any_region = False
    for segment in segments:
        if segment.partner_types:
            types.update(segment.partner_types)
        else:
            any_type = True
        if segment.regions:
            regions.update(segment.regions)
        else:
            any_region = True
    type_order = [value for value, _ in PartnerType.choices]
    region_order = [value for value, _ in Region.choices]
    return (
        [] if any_type else [value for value in type_order if value in types],
        [] if any_region else [value for value in region_order if value in regions],
    )


def post_audience_notes(post: CommunityPost) -> list[str]:
    """Where Trading Grid's audience (types and regions) is wider than the email's segments were."""
    if post.communication_id is None:
        return []
    notes = []
    segments = list(post.communication.segments.prefetch_related("product_lines").order_by("name"))
    for segment in segments:
        other = [
            label
            for label, present in (
                ("countries", segment.countries),
                ("tiers", segment.tiers),
                ("product lines", list(segment.product_lines.all())),
                ("onboarding statuses", segment.onboarding_statuses),
                ("issues", segment.issue_categories or segment.min_issue_count),
            )
            if present
        ]
        if other:
            notes.append(
                f"Segment “{segment.name}” also selects by {', '.join(other)}, which Trading Grid's audience can't "
                "express: the post reaches every partner of its types and regions."
            )
    if len([s for s in segments if s.partner_types and s.regions]) > 1:
        notes.append(
            "Several segments combine types with regions: Trading Grid gets every listed type in every listed region."
        )
    return notes


# --- the state machine ---------------------------------------------------------------------------------------------

_VERBS = {
    P.DRAFT: "edited",
    P.SUBMITTED: "submitted",
    P.APPROVED: "approved",
    P.CHANGES_REQUESTED: "sent back for changes",
    P.PUBLISHED: "published",
    P.FAILED: "marked failed",
    P.DISCARDED: "discarded",
    P.IMPORTING: "imported again",
    P.IMPORT_FAILED: "marked failed",
}


def _name(post: CommunityPost) -> str:
    return f"{post.title or post.campaign_subject or post.mailchimp_campaign_id} (post #{post.pk})"


def _refusal(post: CommunityPost, to_state: str) -> str:
    state, name = post.state, f"“{_name(post)}”"
    label = post.get_state_display().lower()
    if state in (P.IMPORTING, P.IMPORT_FAILED):
        return f"{name} is {label}: there is no content to work on until Mailchimp's content is fetched."
    if to_state == P.APPROVED and state in (P.DRAFT, P.CHANGES_REQUESTED):
        return f"{name} is {label}: it can't be approved before it is submitted."
    if to_state == P.SUBMITTED and state == P.CHANGES_REQUESTED:
        return f"{name} has changes requested: edit it first, then submit it again."
    if to_state == P.DISCARDED and state in (P.APPROVED, P.PUBLISHED):
        return f"{name} is {label}: it is in the Trading Grid community (or on its way), which can't remove posts."
    if state == P.DISCARDED:
        return f"{name} is discarded: restore it first."
    return f"{name} is {label}: it can't be {_VERBS.get(to_state, to_state)}."


def _transition(
    post: CommunityPost, to_state: str, *, actor: AbstractBaseUser | None, comment: str = ""
) -> CommunityPostTransition:
    """Move a post (locked by the caller) to `to_state`, or raise TransitionError."""
    if to_state not in ALLOWED_TRANSITIONS[post.state]:
        raise TransitionError(_refusal(post, to_state))
    from_state = post.state
    post.state = to_state
    post.save()
    return CommunityPostTransition.objects.create(
        post=post, from_state=from_state, to_state=to_state, actor=actor, comment=comment.strip()
    )


def _locked(post_id: int) -> CommunityPost:
    return CommunityPost.objects.select_for_update().get(pk=post_id)


def _lease_is_held(post: CommunityPost) -> bool:
    return bool(post.lease_owner and post.lease_expires_at and post.lease_expires_at > timezone.now())


def _refuse_while_busy(post: CommunityPost, what: str) -> None:
    if _lease_is_held(post):
        raise TransitionError(
            f"Partnerlink is publishing “{_name(post)}” to Trading Grid right now: try to {what} it again in a minute."
        )


# --- capturing sent campaigns -------------------------------------------------------------------------------------


def _communication_for_campaign(campaign_id: str) -> Communication | None:
    return (
        Communication.objects.filter(Q(mailchimp_campaign_id=campaign_id) | Q(send__mailchimp_campaign_id=campaign_id))
        .filter(community_post__isnull=True)
        .first()
    )


@transaction.atomic
def community_post_capture(
    *,
    campaign_id: str,
    origin: str,
    subject: str = "",
    actor: AbstractBaseUser | None = None,
) -> tuple[CommunityPost, bool]:
    """The ledger row of a sent campaign's post, created once (unique on the campaign id); its content is fetched
    by a task enqueued on commit. Returns (post, created); a campaign already here changes nothing."""
    campaign_id = (campaign_id or "").strip()
    if not campaign_id:
        raise ValueError("a Mailchimp campaign id is required")
    existing = CommunityPost.objects.filter(mailchimp_campaign_id=campaign_id).first()
    if existing is not None:
        return existing, False
    communication = _communication_for_campaign(campaign_id)
    post = CommunityPost(
        mailchimp_campaign_id=campaign_id,
        origin=origin,
        communication=communication,
        kind=communication.kind if communication else EXTERNAL_CAMPAIGN_KIND,
        campaign_subject=(subject or (communication.subject if communication else ""))[:200],
        state=P.IMPORTING,
        queued_at=timezone.now(),
    )
    try:
        with transaction.atomic():
            post.save()
    except IntegrityError:  # another capture of the same campaign committed first
        return CommunityPost.objects.get(mailchimp_campaign_id=campaign_id), False
    how = PostOrigin(origin).label
    CommunityPostTransition.objects.create(
        post=post,
        from_state="",
        to_state=P.IMPORTING,
        actor=actor,
        comment=f"Mailchimp campaign {campaign_id} was sent ({how.lower()}): fetching its content.",
    )
    _enqueue_import(post)
    return post, True


def community_post_capture_sent_communication(communication: Communication) -> None:
    """Called by campaigns/services.py inside the transaction that records a communication as sent."""
    campaign_id = communication.mailchimp_campaign_id
    if campaign_id:
        community_post_capture(campaign_id=campaign_id, origin=PostOrigin.PARTNERLINK, subject=communication.subject)


def community_posts_import_campaigns(
    *, campaign_ids: Iterable[str], actor: AbstractBaseUser
) -> tuple[list[CommunityPost], list[CommunityPost]]:
    """Past campaigns chosen in the admin become drafts (fetched in the background). Returns (created, existing):
    importing a campaign again changes nothing."""
    if not user_can_import_posts(actor):
        raise PermissionRefused("You may not import campaigns as community posts.")
    created, existing = [], []
    for campaign_id in dict.fromkeys(c.strip() for c in campaign_ids if c and c.strip()):
        post, new = community_post_capture(campaign_id=campaign_id, origin=PostOrigin.IMPORT, actor=actor)
        (created if new else existing).append(post)
    return created, existing


@dataclass(frozen=True)
class SweepResult:
    seen: int
    created: int
    since: datetime


def community_posts_sweep_sent(*, client=None, now: datetime | None = None) -> SweepResult:
    """Beat: campaigns sent to Partnerlink's audiences recently (since a day before the previous sweep) get their
    ledger row, if they have none yet. Safe to run twice and on several workers."""
    from partners.tg_sync import sync_cursor_advance, sync_cursor_get

    now = now or timezone.now()
    previous = parse_mailchimp_datetime(sync_cursor_get(stream=SENT_CAMPAIGNS_STREAM))
    since = (previous or now) - SWEEP_OVERLAP
    list_ids = set(MailchimpAudience.objects.values_list("list_id", flat=True))
    client = _mailchimp(client)
    campaigns = [
        campaign
        for campaign in client.iter_sent_campaigns(since=since)
        if (campaign.get("recipients") or {}).get("list_id") in list_ids and campaign.get("id")
    ]
    known = set(
        CommunityPost.objects.filter(mailchimp_campaign_id__in=[c["id"] for c in campaigns]).values_list(
            "mailchimp_campaign_id", flat=True
        )
    )
    created = 0
    for campaign in campaigns:
        if campaign["id"] in known:
            continue
        subject = (campaign.get("settings") or {}).get("subject_line") or ""
        created += community_post_capture(campaign_id=campaign["id"], origin=PostOrigin.SWEEP, subject=subject)[1]
    sync_cursor_advance(stream=SENT_CAMPAIGNS_STREAM, value=now.isoformat())
    return SweepResult(seen=len(campaigns), created=created, since=since)


@dataclass(frozen=True)
class SentCampaignRow:
    campaign_id: str
    title: str
    subject: str
    sent_at: datetime | None
    list_id: str
    audience_name: str  # "" when the audience is not one of Partnerlink's
    emails_sent: int
    post: CommunityPost | None


@dataclass(frozen=True)
class SentCampaignPage:
    rows: list[SentCampaignRow]
    page: int
    per_page: int
    total: int

    @property
    def num_pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.num_pages


def mailchimp_sent_campaigns_page(*, page: int = 1, per_page: int = 25, client=None) -> SentCampaignPage:
    """One page of Mailchimp's sent campaigns, newest first, each with its post if it has one (one Mailchimp call,
    two queries)."""
    page = max(1, page)
    answer = _mailchimp(client).list_campaigns(status="sent", count=per_page, offset=(page - 1) * per_page)
    campaigns = [c for c in answer.get("campaigns") or [] if c.get("id")]
    posts = CommunityPost.objects.in_bulk([c["id"] for c in campaigns], field_name="mailchimp_campaign_id")
    audiences = dict(MailchimpAudience.objects.values_list("list_id", "name"))
    rows = []
    for campaign in campaigns:
        settings_ = campaign.get("settings") or {}
        list_id = (campaign.get("recipients") or {}).get("list_id") or ""
        rows.append(
            SentCampaignRow(
                campaign_id=campaign["id"],
                title=settings_.get("title") or "",
                subject=settings_.get("subject_line") or "",
                sent_at=parse_mailchimp_datetime(campaign.get("send_time") or ""),
                list_id=list_id,
                audience_name=audiences.get(list_id, ""),
                emails_sent=int(campaign.get("emails_sent") or 0),
                post=posts.get(campaign["id"]),
            )
        )
    return SentCampaignPage(rows=rows, page=page, per_page=per_page, total=int(answer.get("total_items") or 0))


# --- fetching the content (task) ----------------------------------------------------------------------------------


def community_post_import_execute(*, post_id: int, client=None) -> CommunityPost:
    """Fetch the campaign and its content from Mailchimp and make the draft. Mailchimp's refusal (a campaign
    deleted since) marks the import failed with its reason; MailchimpTransientError and CampaignNotSentYet
    propagate for the task to retry."""
    post = CommunityPost.objects.get(pk=post_id)
    if post.state != P.IMPORTING:
        return post
    client = _mailchimp(client)
    CommunityPost.objects.filter(pk=post_id).update(next_attempt_at=None)
    try:
        campaign = client.get_campaign(campaign_id=post.mailchimp_campaign_id)
        status = str(campaign.get("status") or "")
        if status == "sending":
            raise CampaignNotSentYet(f"Mailchimp is still sending campaign {post.mailchimp_campaign_id}.")
        if status != "sent":
            return _record_import_failure(
                post_id,
                f"Mailchimp holds campaign {post.mailchimp_campaign_id} as “{status}”: only sent campaigns become "
                "community posts.",
            )
        content = client.get_campaign_content(campaign_id=post.mailchimp_campaign_id)
    except MailchimpAPIError as exc:
        return _record_import_failure(post_id, mailchimp_refusal(exc))
    return _record_import(post_id, campaign, content)


@transaction.atomic
def _record_import(post_id: int, campaign: dict[str, Any], content: dict[str, Any]) -> CommunityPost:
    post = _locked(post_id)
    if post.state != P.IMPORTING:
        return post
    settings_ = campaign.get("settings") or {}
    post.campaign_subject = str(settings_.get("subject_line") or post.campaign_subject)[:200]
    post.campaign_title = str(settings_.get("title") or "")[:200]
    post.mailchimp_list_id = str((campaign.get("recipients") or {}).get("list_id") or "")[:20]
    post.campaign_sent_at = parse_mailchimp_datetime(str(campaign.get("send_time") or "")) or post.campaign_sent_at
    post.archive_url = str(campaign.get("long_archive_url") or campaign.get("archive_url") or "")[:500]
    if post.communication_id is None:
        post.communication = _communication_for_campaign(post.mailchimp_campaign_id)
    if post.communication is not None:
        post.kind = post.communication.kind
        post.partner_types, post.regions = post_audience_from_segments(post.communication.segments.all())
    post.style = post_style_for(post.kind)
    post.source_html = str(content.get("html") or content.get("archive_html") or "")
    post.source_plain_text = str(content.get("plain_text") or "")
    removed = _apply_content(post)
    post.queued_at = None
    post.last_error = ""
    cleaned = ", ".join(f"{count} {rule.replace('_', ' ')}" for rule, count in removed.items() if count)
    comment = (
        f"Fetched from Mailchimp as a {post.get_style_display().split(' (')[0].lower()} post "
        f"(the style for “{post.get_kind_display()}”)."
    )
    if cleaned:
        comment += f" Removed for the community: {cleaned}."
    _transition(post, P.DRAFT, actor=None, comment=comment)
    return post


def _apply_content(post: CommunityPost) -> dict[str, int]:
    content = extract_post_content(
        post.source_html,
        subject=post.campaign_subject or post.campaign_title,
        archive_url=post.archive_url,
        plain_text=post.source_plain_text,
    )
    post.title = (content.title or post.campaign_subject or post.campaign_title or post.mailchimp_campaign_id)[:200]
    post.summary = content.summary
    post.body_html = content.body_html(post.style) or content.summary_html
    return content.removed


@transaction.atomic
def _record_import_failure(post_id: int, reason: str) -> CommunityPost:
    post = _locked(post_id)
    if post.state != P.IMPORTING:
        return post
    post.failure_reason = reason
    post.last_error = reason
    _transition(post, P.IMPORT_FAILED, actor=None, comment=reason)
    return post


def community_post_import_give_up(*, post_id: int, reason: str) -> None:
    if CommunityPost.objects.filter(pk=post_id, state=P.IMPORTING).exists():
        _record_import_failure(post_id, reason)


@transaction.atomic
def community_post_import_retry(*, post_id: int, actor: AbstractBaseUser) -> CommunityPost:
    """Fetch a failed import again."""
    _require_changer(actor)
    post = _locked(post_id)
    if post.state != P.IMPORT_FAILED:
        label = post.get_state_display().lower()
        raise TransitionError(f"“{_name(post)}” is {label}: only a failed import is retried.")
    post.failure_reason = ""
    post.queued_at = timezone.now()
    _transition(post, P.IMPORTING, actor=actor, comment="Fetching it from Mailchimp again.")
    _enqueue_import(post)
    return post


# --- what the admin calls -----------------------------------------------------------------------------------------


def _validate_audience(changes: dict[str, Any]) -> None:
    for field, choices in (("partner_types", PartnerType), ("regions", Region)):
        if field in changes:
            values = changes[field] or []
            if not isinstance(values, list | tuple) or any(v not in choices.values for v in values):
                raise ValidationError({field: f"Choose from: {', '.join(choices.values)}."})


def _withdraw(post: CommunityPost, actor: AbstractBaseUser, what: str) -> None:
    """An edit of what partners see: a new revision, and back to draft (an approval covers what was approved)."""
    post.revision += 1
    if post.state == P.DRAFT:
        post.save()
        return
    note = {
        P.APPROVED: "approval withdrawn",
        P.PUBLISHED: "the published version stays in the community until this one is approved",
        P.FAILED: "failed publication set aside",
    }.get(post.state, "submission withdrawn")
    post.approved_by = None
    post.approved_at = None
    post.failure_reason = ""
    _transition(post, P.DRAFT, actor=actor, comment=f"Edited {what}: {note}.")


@transaction.atomic
def community_post_update(*, post_id: int, actor: AbstractBaseUser, changes: dict[str, Any]) -> CommunityPost:
    """Edit the title, summary, body or audience. After submission, approval or publication it goes back to
    draft; the body is sanitized again (no scripts, handlers or frames reach the community)."""
    _require_changer(actor)
    post = _locked(post_id)
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"not editable here: {', '.join(sorted(unknown))}")
    changes = dict(changes)
    if "body_html" in changes:
        changes["body_html"] = sanitize_html(changes["body_html"] or "")
    for field in ("title", "summary"):
        if field in changes:
            changes[field] = (changes[field] or "").strip()
    _validate_audience(changes)
    changed = [field for field, value in changes.items() if getattr(post, field) != value]
    if not changed:
        return post
    if post.state not in EDITABLE_STATES:
        raise TransitionError(_refusal(post, P.DRAFT))
    _refuse_while_busy(post, "edit")
    if "title" in changed and len(changes["title"]) > 200:
        raise ValidationError({"title": "At most 200 characters."})
    for field in changed:
        setattr(post, field, changes[field])
    labels = [str(CommunityPost._meta.get_field(field).verbose_name) for field in changed]
    _withdraw(post, actor, ", ".join(labels))
    return post


@transaction.atomic
def community_post_restyle(*, post_id: int, actor: AbstractBaseUser, style: str) -> CommunityPost:
    """Make the post again from the email, full or summarised: the title, summary and body are replaced."""
    _require_changer(actor)
    if style not in PostStyle.values:
        raise ValidationError({"style": f"Choose {' or '.join(PostStyle.values)}."})
    post = _locked(post_id)
    if post.state not in EDITABLE_STATES:
        raise TransitionError(_refusal(post, P.DRAFT))
    _refuse_while_busy(post, "edit")
    post.style = style
    _apply_content(post)
    _withdraw(post, actor, f"to the {post.get_style_display().split(' (')[0].lower()} of the email")
    return post


@transaction.atomic
def community_post_submit(*, post_id: int, actor: AbstractBaseUser, comment: str = "") -> CommunityPost:
    _require_changer(actor)
    post = _locked(post_id)
    if P.SUBMITTED not in ALLOWED_TRANSITIONS[post.state]:
        raise TransitionError(_refusal(post, P.SUBMITTED))
    problems = [
        text
        for text, missing in (
            ("the title is empty", not post.title.strip()),
            ("the body is empty", not post.body_html.strip()),
        )
        if missing
    ]
    if problems:
        raise TransitionError(f"“{_name(post)}” can't be submitted yet: {'; '.join(problems)}.")
    _transition(post, P.SUBMITTED, actor=actor, comment=comment)
    post.submitted_by = actor
    post.submitted_at = timezone.now()
    post.approved_by = None
    post.approved_at = None
    post.save()
    return post


@transaction.atomic
def community_post_approve(*, post_id: int, actor: AbstractBaseUser, comment: str = "") -> CommunityPost:
    """An approver who did not submit it approves it; publishing is enqueued on commit."""
    post = _locked(post_id)
    if post.state == P.FAILED:
        raise TransitionError(f"“{_name(post)}” failed: an approver tries it again with “Retry publishing”.")
    if P.APPROVED not in ALLOWED_TRANSITIONS[post.state]:
        raise TransitionError(_refusal(post, P.APPROVED))
    _require_approver(post, actor, action="approve")
    _transition(post, P.APPROVED, actor=actor, comment=comment)
    _approve_and_enqueue(post, actor)
    return post


@transaction.atomic
def community_post_request_changes(*, post_id: int, actor: AbstractBaseUser, comment: str) -> CommunityPost:
    post = _locked(post_id)
    if P.CHANGES_REQUESTED not in ALLOWED_TRANSITIONS[post.state]:
        raise TransitionError(_refusal(post, P.CHANGES_REQUESTED))
    _require_approver(post, actor, action="request changes to")
    if not comment.strip():
        raise TransitionError("Say what should change: a comment is required when requesting changes.")
    _transition(post, P.CHANGES_REQUESTED, actor=actor, comment=comment)
    return post


@transaction.atomic
def community_post_retry(*, post_id: int, actor: AbstractBaseUser, comment: str = "") -> CommunityPost:
    """A failed publication, tried again by an approver (not the submitter): the same Trading Grid post."""
    post = _locked(post_id)
    if post.state != P.FAILED:
        label = post.get_state_display().lower()
        raise TransitionError(f"“{_name(post)}” is {label}: only a failed publication can be retried.")
    _require_approver(post, actor, action="retry")
    if post.create_in_doubt:
        raise TransitionError(
            f"Trading Grid may already have a post for “{_name(post)}”: say which post it is, or that there is "
            "none, before publishing again."
        )
    _transition(post, P.APPROVED, actor=actor, comment=comment or "Retry after the failure.")
    post.failure_reason = ""
    _approve_and_enqueue(post, actor)
    return post


def community_post_resolve_tg_post(
    *, post_id: int, actor: AbstractBaseUser, tg_post_id: str = "", client=None
) -> CommunityPost:
    """For a failed post whose Trading Grid post is in doubt or gone: an approver says which Trading Grid post it
    is (checked: its source must be this campaign) and it is updated, or that there is none and it is published
    as a new post."""
    post = CommunityPost.objects.get(pk=post_id)
    _require_approver(post, actor, action="resolve")
    if post.state != P.FAILED:
        raise TransitionError(f"“{_name(post)}” is {post.get_state_display().lower()}: there is nothing to resolve.")
    tg_post_id = (tg_post_id or "").strip()
    remote: dict[str, Any] = {}
    if tg_post_id:
        try:
            remote = _tradinggrid(client).get_post(post_id=tg_post_id)
        except TradingGridNotFoundError:
            raise TransitionError(f"Trading Grid has no post {tg_post_id}.") from None
        except TradingGridAPIError as exc:
            raise TransitionError(tradinggrid_refusal(exc)) from None
        source = remote.get("source") or {}
        if source.get("campaign_id") != post.mailchimp_campaign_id:
            raise TransitionError(
                f"Trading Grid post {tg_post_id} comes from campaign “{source.get('campaign_id') or 'none'}”, "
                f"not {post.mailchimp_campaign_id}."
            )
        other = CommunityPost.objects.filter(tg_post_id=tg_post_id).exclude(pk=post.pk).first()
        if other is not None:
            raise TransitionError(f"Trading Grid post {tg_post_id} is already the post of #{other.pk}.")
    with transaction.atomic():
        post = _locked(post_id)
        if post.state != P.FAILED:
            raise TransitionError(f"“{_name(post)}” is {post.get_state_display().lower()}: nothing to resolve.")
        if tg_post_id:
            post.tg_post_id = tg_post_id
            post.tg_post_url = str(remote.get("url") or "")[:500]
            post.tg_published_at = parse_mailchimp_datetime(str(remote.get("published_at") or ""))
            comment = f"Trading Grid post {tg_post_id} is this campaign's post (checked): it is updated."
        else:
            post.tg_post_id = ""
            post.tg_post_url = ""
            comment = "There is no Trading Grid post for it: it is published as a new post."
        post.tg_create_started_at = None
        post.failure_reason = ""
        _transition(post, P.APPROVED, actor=actor, comment=comment)
        _approve_and_enqueue(post, actor)
    return post


@transaction.atomic
def community_post_discard(*, post_id: int, actor: AbstractBaseUser, comment: str = "") -> CommunityPost:
    """Not for the community (an internal campaign, a test): it stays here, never published; the sweep and the
    webhook won't bring it back."""
    _require_changer(actor)
    post = _locked(post_id)
    if P.DISCARDED not in ALLOWED_TRANSITIONS[post.state]:
        raise TransitionError(_refusal(post, P.DISCARDED))
    if post.tg_post_id:
        raise TransitionError(
            f"“{_name(post)}” is already in the Trading Grid community (post {post.tg_post_id}), which can't "
            "remove posts: edit it instead."
        )
    _transition(post, P.DISCARDED, actor=actor, comment=comment)
    return post


@transaction.atomic
def community_post_restore(*, post_id: int, actor: AbstractBaseUser, comment: str = "") -> CommunityPost:
    _require_changer(actor)
    post = _locked(post_id)
    if post.state != P.DISCARDED:
        label = post.get_state_display().lower()
        raise TransitionError(f"“{_name(post)}” is {label}: only a discarded post is restored.")
    if post.source_html or post.body_html:
        _transition(post, P.DRAFT, actor=actor, comment=comment or "Restored.")
    else:
        post.queued_at = timezone.now()
        _transition(post, P.IMPORTING, actor=actor, comment=comment or "Restored: fetching it from Mailchimp.")
        _enqueue_import(post)
    return post


def _approve_and_enqueue(post: CommunityPost, actor: AbstractBaseUser) -> None:
    post.approved_by = actor
    post.approved_at = timezone.now()
    post.queued_at = timezone.now()
    post.next_attempt_at = None
    post.last_error = ""
    post.save()
    _enqueue_publish(post)


# --- publishing (task) -------------------------------------------------------------------------------------------


def community_post_tg_payload(post: CommunityPost) -> dict[str, Any]:
    """The post as Trading Grid's `POST /posts` and `PATCH /posts/{id}` take it (CONTRACT.md)."""
    return {
        "title": post.title,
        "body_html": post.body_html,
        "summary": post.summary,
        "source": {
            "type": "mailchimp",
            "campaign_id": post.mailchimp_campaign_id,
            "archive_url": post.archive_url,
        },
        "audience": {"partner_types": list(post.partner_types or []), "regions": list(post.regions or [])},
    }


def community_post_publish_execute(*, post_id: int, client=None) -> CommunityPost:
    """Publish an approved post: POST /posts the first time (its id recorded at once), PATCH /posts/{id} after.
    Exactly one Trading Grid post per campaign (see the module docstring for the create in doubt).

    Raises TradingGridTransientError (when Trading Grid cannot have acted) and PostBusy for the task to retry; a
    refusal marks the post failed with Trading Grid's reason."""
    client = _tradinggrid(client)
    with _leased(post_id) as post:
        if post.state != P.APPROVED:
            return post  # edited since it was approved, or already published by another run
        CommunityPost.objects.filter(pk=post.pk).update(attempts=F("attempts") + 1, next_attempt_at=None)
        payload = community_post_tg_payload(post)
        created = False
        try:
            if post.tg_post_id:
                answer = client.update_post(post_id=post.tg_post_id, changes=payload)
            elif post.tg_create_started_at is not None:
                return _record_failure(post.pk, _in_doubt_reason(post))
            else:
                answer = _create_tg_post(post, payload, client)
                if answer is None:
                    return CommunityPost.objects.get(pk=post.pk)
                created = True
        except TradingGridNotFoundError as exc:
            if not post.tg_post_id:
                return _record_failure(post.pk, tradinggrid_refusal(exc))
            return _record_failure(
                post.pk,
                f"Trading Grid no longer has post {post.tg_post_id} (removed there?): an approver can publish it as "
                "a new post.",
            )
        except TradingGridAPIError as exc:
            return _record_failure(post.pk, tradinggrid_refusal(exc))
        except TradingGridTransientError:
            raise
        except TradingGridError as exc:  # not configured, or a request that could not even be sent
            return _record_failure(post.pk, f"Trading Grid could not be reached: {exc}")
        return _record_published(post.pk, answer, created=created)


def _create_tg_post(post: CommunityPost, payload: dict[str, Any], client) -> dict[str, Any] | None:
    """POST /posts with the in-doubt marker set first; the id Trading Grid returns is saved before anything else.
    Returns None when the outcome is in doubt (the post is then marked failed)."""
    started = timezone.now()
    CommunityPost.objects.filter(pk=post.pk).update(tg_create_started_at=started)
    post.tg_create_started_at = started
    try:
        answer = client.create_post(post={**payload, "published_at": started.isoformat()})
    except TradingGridTransientError as exc:
        if exc.not_processed:
            CommunityPost.objects.filter(pk=post.pk).update(tg_create_started_at=None)
            raise
        _record_failure(post.pk, _in_doubt_reason(post, exc))
        return None
    except TradingGridAPIError:
        CommunityPost.objects.filter(pk=post.pk).update(tg_create_started_at=None)  # refused: nothing was created
        raise
    tg_post_id = str(answer.get("id") or "")
    if not tg_post_id:
        _record_failure(post.pk, "Trading Grid answered POST /posts without a post id.")
        return None
    CommunityPost.objects.filter(pk=post.pk).update(
        tg_post_id=tg_post_id,
        tg_post_url=str(answer.get("url") or "")[:500],
        tg_published_at=parse_mailchimp_datetime(str(answer.get("published_at") or "")) or started,
        tg_create_started_at=None,
    )
    return answer


def _in_doubt_reason(post: CommunityPost, exc: Exception | None = None) -> str:
    when = timezone.localtime(post.tg_create_started_at).strftime("%Y-%m-%d %H:%M:%S %Z")
    what = f" ({exc})" if exc else " (the run that sent it stopped before recording Trading Grid's answer)"
    return (
        f"Trading Grid may have created this post at {when} without Partnerlink learning its id{what}. Trading Grid "
        f"can't look posts up by campaign, so Partnerlink doesn't post again on its own: look in the community for a "
        f"post from Mailchimp campaign {post.mailchimp_campaign_id}, then give its id below, or say there is none."
    )


@transaction.atomic
def _record_published(post_id: int, answer: dict[str, Any], *, created: bool) -> CommunityPost:
    post = _locked(post_id)
    if post.state != P.APPROVED:
        return post
    post.tg_post_url = str(answer.get("url") or post.tg_post_url)[:500]
    post.published_revision = post.revision
    post.last_pushed_at = timezone.now()
    post.last_error = ""
    post.failure_reason = ""
    post.queued_at = None
    if created:
        comment = f"Published in the Trading Grid community as post {post.tg_post_id}."
    else:
        comment = f"Trading Grid post {post.tg_post_id} updated to revision {post.revision}."
    _transition(post, P.PUBLISHED, actor=None, comment=comment)
    return post


@transaction.atomic
def _record_failure(post_id: int, reason: str) -> CommunityPost:
    post = _locked(post_id)
    if post.state != P.APPROVED:
        return post
    post.failure_reason = reason
    post.last_error = reason
    post.queued_at = None
    _transition(post, P.FAILED, actor=None, comment=reason)
    return post


def community_post_note_retry(*, post_id: int, countdown: float, error: str = "") -> None:
    """A retry is coming (publishing or fetching): when it is due, and the transient error for the page."""
    changes: dict[str, Any] = {"next_attempt_at": timezone.now() + timedelta(seconds=countdown)}
    if error:
        changes["last_error"] = f"will retry: {error}"[:2000]
    CommunityPost.objects.filter(pk=post_id, state__in=(P.APPROVED, P.IMPORTING)).update(**changes)


def community_post_publish_give_up(*, post_id: int, reason: str) -> None:
    """Retries are exhausted: the post is failed, for an approver to retry."""
    if CommunityPost.objects.filter(pk=post_id, state=P.APPROVED).exists():
        _record_failure(post_id, reason)


def tradinggrid_refusal(exc: TradingGridAPIError) -> str:
    """Trading Grid's reason as people read it: status and code, message, details, the call."""
    head = ", ".join(part for part in (f"HTTP {exc.status}" if exc.status else "", exc.code) if part)
    text = f"Trading Grid refused ({head or type(exc).__name__}): {exc.message}"
    if exc.details:
        details = exc.details
        if isinstance(details, dict):
            details = "; ".join(f"{key}: {value}" for key, value in details.items())
        elif isinstance(details, list):
            details = "; ".join(str(item) for item in details)
        text += f" ({details})"
    where = f"{exc.method} {exc.path}".strip()
    return text + (f" [{where}]" if where else "")


@contextmanager
def _leased(post_id: int) -> Iterator[CommunityPost]:
    """Hold the post's lease while talking to Trading Grid; writes commit as they happen, so an id Trading Grid
    hands back is recorded at once."""
    token, now = uuid.uuid4().hex, timezone.now()
    acquired = (
        CommunityPost.objects.filter(pk=post_id)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .update(lease_owner=token, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
    )
    if not acquired:
        if not CommunityPost.objects.filter(pk=post_id).exists():
            raise CommunityPost.DoesNotExist(f"community post {post_id}")
        raise PostBusy(f"community post {post_id} is being published by another worker")
    try:
        yield CommunityPost.objects.get(pk=post_id)
    finally:
        CommunityPost.objects.filter(pk=post_id, lease_owner=token).update(lease_owner="", lease_expires_at=None)


# --- beat relay ---------------------------------------------------------------------------------------------------


def community_posts_relay_stuck(*, now: datetime | None = None, grace: timedelta = timedelta(minutes=2)) -> int:
    """Re-enqueue approved posts not published and imports not fetched whose task message was lost (a broker
    outage). Rows waiting for a retry or leased by a live worker are left alone; a duplicate task is harmless."""
    now = now or timezone.now()
    stale = now - grace
    stuck = (
        CommunityPost.objects.filter(state__in=(P.APPROVED, P.IMPORTING), queued_at__lt=stale)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=stale))
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
    )
    count = 0
    for post in stuck.only("pk", "state"):
        with transaction.atomic():
            CommunityPost.objects.filter(pk=post.pk).update(queued_at=now)
            (_enqueue_publish if post.state == P.APPROVED else _enqueue_import)(post)
        count += 1
    return count


# --- plumbing -----------------------------------------------------------------------------------------------------


def _enqueue_import(post: CommunityPost) -> None:
    from campaigns.tasks import community_post_import_task

    community_post_import_task.delay_on_commit(post.pk)


def _enqueue_publish(post: CommunityPost) -> None:
    from campaigns.tasks import community_post_publish_task

    community_post_publish_task.delay_on_commit(post.pk)


def _mailchimp(client):
    if client is not None:
        return client
    from connectors.mailchimp.client import get_client

    return get_client()


def _tradinggrid(client):
    if client is not None:
        return client
    from connectors.tradinggrid.client import get_client

    return get_client()
