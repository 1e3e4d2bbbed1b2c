"""Writes about communications: the state machine, the one Mailchimp campaign of each, and test emails.

State machine (every step is a CommunicationTransition row; `None` actor = Partnerlink itself):

    draft ──submit──▶ submitted ──approve──▶ approved ──(send task)──▶ scheduled ──▶ sending ──▶ sent
      ▲                 │  └─request changes─▶ changes_requested          │   └──────────────▶ sent
      └───── edit ──────┴──────────────────────────┘  (also from approved   └─▶ failed ──retry──▶ approved
                                                        and failed)
    any state but sending, sent and cancelled ──cancel──▶ cancelled

Editing what recipients get (subject, preview text, body, template, sections, segments, audience, from
name, reply-to, schedule time) while submitted, approved, changes requested or failed sends it back to
draft: an approval covers exactly what was approved.

Mailchimp side: each communication has exactly one Mailchimp campaign, recorded in its CampaignSend ledger
row the moment Mailchimp creates it. It is created lazily, the first time it is needed: at submit (so the
approver sees Mailchimp's send checklist and its rendering of the content), for a test email, or at send.
Its recipients are a static segment made for the communication: the union of its segments' members, as
the audience sync last put them into each segment's static segment; the union is refreshed every time the
draft is pushed, and for the last time just before the send.

Functions named `*_execute` run in Celery tasks and talk to Mailchimp; the others are what the admin calls.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from campaigns import selectors
from campaigns.models import (
    CampaignSend,
    Communication,
    CommunicationState,
    CommunicationTestEmail,
    CommunicationTransition,
    EmailTestStatus,
    SendStatus,
)
from connectors.mailchimp.errors import MailchimpAPIError, MailchimpError
from connectors.mailchimp.payloads import parse_mailchimp_datetime
from partners.models import MailchimpAudience, Segment, SegmentMember

logger = logging.getLogger(__name__)

S = CommunicationState

# Which state may follow which. Who may take each step is checked by the service that takes it.
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.SUBMITTED, S.CANCELLED}),
    S.SUBMITTED: frozenset({S.APPROVED, S.CHANGES_REQUESTED, S.DRAFT, S.CANCELLED}),
    S.CHANGES_REQUESTED: frozenset({S.DRAFT, S.CANCELLED}),
    S.APPROVED: frozenset({S.SCHEDULED, S.SENDING, S.SENT, S.FAILED, S.DRAFT, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.SENDING, S.SENT, S.FAILED, S.CANCELLED}),
    S.SENDING: frozenset({S.SENT, S.FAILED}),
    S.FAILED: frozenset({S.APPROVED, S.DRAFT, S.CANCELLED}),
    S.SENT: frozenset(),
    S.CANCELLED: frozenset(),
}
# Fields whose change withdraws a submission or an approval.
CONTENT_FIELDS = (
    "subject",
    "preview_text",
    "html_body",
    "template_id",
    "template_sections",
    "audience",
    "from_name",
    "reply_to",
    "schedule_time",
)
EDITABLE_STATES = frozenset({S.DRAFT, S.SUBMITTED, S.CHANGES_REQUESTED, S.APPROVED, S.FAILED})
# States in which Partnerlink may still change the Mailchimp draft (content, settings, recipients).
DRAFT_PUSH_STATES = EDITABLE_STATES
SCHEDULE_MARGIN = selectors.SCHEDULE_MARGIN
# A worker killed mid-call frees the lease after the task time limit.
LEASE_SECONDS = getattr(settings, "CELERY_TASK_TIME_LIMIT", 660)


# Flows that attach something to a communication check or prepare it here, just before Mailchimp gets it (policy
# documents set each recipient's link key: campaigns/documents.py). A hook takes (communication, client) and
# returns a refusal, recorded as the failure, or "" to go on; it may raise MailchimpTransientError or
# SegmentsNotReady for the send task to retry later. Registered by AppConfig.ready.
send_preflight_hooks: list[Callable[[Communication, Any], str]] = []


class TransitionError(Exception):
    """A step the state machine or its rules refuse; the message is for the person who tried it."""


class PermissionRefused(TransitionError):
    """The step exists, but not for this person (no permission, or the four-eyes rule)."""


class CommunicationBusy(Exception):
    """Another worker is talking to Mailchimp about this communication right now: try again shortly."""


class SegmentsNotReady(Exception):
    """A segment has never reached Mailchimp; a sync was started. Try the send again once it has run."""


# --- the state machine ----------------------------------------------------------------------------

_VERBS = {
    S.DRAFT: "edited",
    S.SUBMITTED: "submitted",
    S.APPROVED: "approved",
    S.CHANGES_REQUESTED: "sent back for changes",
    S.CANCELLED: "cancelled",
    S.SCHEDULED: "scheduled",
    S.SENDING: "sent",
    S.SENT: "marked sent",
    S.FAILED: "marked failed",
}


def _refusal(communication: Communication, to_state: str) -> str:
    state, name = communication.state, f"“{communication.subject}” (#{communication.pk})"
    label = communication.get_state_display().lower()
    if to_state == S.APPROVED and state in (S.DRAFT, S.CHANGES_REQUESTED):
        return f"{name} is {label}: it can't be approved before it is submitted."
    if to_state in (S.SCHEDULED, S.SENDING, S.SENT) and state not in (S.APPROVED, S.SCHEDULED, S.SENDING):
        return f"{name} is {label}: nothing is sent to Mailchimp before an approver approves it."
    if to_state == S.SUBMITTED and state == S.CHANGES_REQUESTED:
        return f"{name} has changes requested: edit it first, then submit it again."
    if to_state == S.CANCELLED and state == S.SENDING:
        return f"{name} is being sent by Mailchimp: a send in progress can't be cancelled."
    if state in (S.SCHEDULED, S.SENDING, S.SENT) and to_state == S.DRAFT:
        return f"{name} is {label}: it is in Mailchimp's hands and can't be edited any more."
    if state == S.CANCELLED:
        return f"{name} is cancelled: create a new communication instead."
    return f"{name} is {label}: it can't be {_VERBS.get(to_state, to_state)}."


def _transition(
    communication: Communication, to_state: str, *, actor: AbstractBaseUser | None, comment: str = ""
) -> CommunicationTransition:
    """Move a communication (locked by the caller) to `to_state`, or raise TransitionError."""
    if to_state not in ALLOWED_TRANSITIONS[communication.state]:
        raise TransitionError(_refusal(communication, to_state))
    from_state = communication.state
    communication.state = to_state
    communication.save()
    transition = CommunicationTransition.objects.create(
        communication=communication, from_state=from_state, to_state=to_state, actor=actor, comment=comment.strip()
    )
    if to_state == S.SENT:  # flow F1: the sent campaign becomes a community post draft (once per campaign)
        from campaigns.posts import community_post_capture_sent_communication

        community_post_capture_sent_communication(communication)
    return transition


def _locked(communication_id: int) -> Communication:
    return Communication.objects.select_for_update().select_related("audience").get(pk=communication_id)


def _send_row(communication: Communication) -> CampaignSend:
    send, _ = CampaignSend.objects.get_or_create(communication=communication)
    return send


def _require_changer(actor: AbstractBaseUser) -> None:
    if not selectors.user_can_change(actor):
        raise PermissionRefused("You may not change communications: ask an administrator for the permission.")


def _require_approver(communication: Communication, actor: AbstractBaseUser, *, action: str) -> None:
    if not selectors.user_can_approve(actor):
        raise PermissionRefused(f"Only members of “Approvers” can {action} a communication.")
    if communication.submitted_by_id is not None and communication.submitted_by_id == actor.pk:
        raise PermissionRefused(
            f"You submitted “{communication.subject}”: someone else has to {action} it (four-eyes rule)."
        )


def _lease_is_held(send: CampaignSend | None) -> bool:
    return bool(send and send.lease_owner and send.lease_expires_at and send.lease_expires_at > timezone.now())


def _refuse_while_busy(communication: Communication, send: CampaignSend | None, what: str) -> None:
    if _lease_is_held(send):
        raise TransitionError(
            f"Partnerlink is talking to Mailchimp about “{communication.subject}” right now: "
            f"try to {what} it again in a minute."
        )


# --- what the admin calls ----------------------------------------------------------------------------


@transaction.atomic
def communication_create(
    *,
    author: AbstractBaseUser,
    kind: str,
    audience: MailchimpAudience,
    segments: Iterable[Segment],
    subject: str,
    from_name: str,
    reply_to: str,
    preview_text: str = "",
    html_body: str = "",
    template_id: int | None = None,
    template_sections: dict[str, str] | None = None,
    schedule_time: datetime | None = None,
) -> Communication:
    """A new draft."""
    _require_changer(author)
    segments = list(segments)
    outside = selectors.segments_outside_audience(audience, segments)
    if outside:
        raise ValidationError(
            {"segments": f"Not segments of {audience.name}: {', '.join(segment.name for segment in outside)}."}
        )
    communication = Communication(
        kind=kind,
        audience=audience,
        subject=subject,
        from_name=from_name,
        reply_to=reply_to,
        preview_text=preview_text,
        html_body=html_body,
        template_id=template_id,
        template_sections=template_sections or {},
        schedule_time=schedule_time,
        created_by=author,
    )
    communication.full_clean()
    communication.save()
    communication.segments.set(segments)
    CommunicationTransition.objects.create(
        communication=communication, from_state="", to_state=S.DRAFT, actor=author, comment="Created."
    )
    return communication


@transaction.atomic
def communication_update(
    *,
    communication_id: int,
    actor: AbstractBaseUser,
    changes: dict[str, Any],
    segments: Iterable[Segment] | None = None,
) -> Communication:
    """Apply edits. Editing what recipients get after submission or approval sends it back to draft;
    once Mailchimp has it (scheduled, sending, sent) or it is cancelled, nothing can change."""
    _require_changer(actor)
    communication = _locked(communication_id)
    unknown = set(changes) - {*CONTENT_FIELDS, "kind"}
    if unknown:
        raise ValueError(f"not editable here: {', '.join(sorted(unknown))}")
    changed = [field for field, value in changes.items() if _field_value(communication, field) != _comparable(value)]
    segments = None if segments is None else list(segments)
    segments_changed = segments is not None and {s.pk for s in segments} != set(
        communication.segments.values_list("pk", flat=True)
    )
    if not changed and not segments_changed:
        return communication
    if communication.state not in EDITABLE_STATES:
        raise TransitionError(_refusal(communication, S.DRAFT))
    send = CampaignSend.objects.filter(communication=communication).first()
    if "audience" in changed and send is not None and send.mailchimp_campaign_id:
        raise TransitionError(
            "Its Mailchimp campaign belongs to the audience "
            f"{communication.audience.name}: cancel this communication and create a new one for another audience."
        )
    _refuse_while_busy(communication, send, "edit")
    for field in changed:
        setattr(communication, field, changes[field])
    audience = changes.get("audience", communication.audience)
    check_segments = segments if segments is not None else list(communication.segments.all())
    outside = selectors.segments_outside_audience(audience, check_segments)
    if outside:
        raise ValidationError(
            {"segments": f"Not segments of {audience.name}: {', '.join(segment.name for segment in outside)}."}
        )
    communication.full_clean()
    communication.save()
    if segments_changed:
        communication.segments.set(segments)
    content_changed = segments_changed or any(field in CONTENT_FIELDS for field in changed)
    if content_changed and communication.state != S.DRAFT:
        withdrawn = {S.APPROVED: "approval withdrawn", S.FAILED: "failed send set aside"}.get(
            communication.state, "submission withdrawn"
        )
        labels = [str(Communication._meta.get_field(field).verbose_name) for field in changed if field != "kind"]
        if segments_changed:
            labels.append("segments")
        _transition(communication, S.DRAFT, actor=actor, comment=f"Edited {', '.join(labels)}: {withdrawn}.")
        communication.approved_by = None
        communication.approved_at = None
        communication.failure_reason = ""
        communication.save()
        if send is not None and send.status in (SendStatus.PENDING, SendStatus.FAILED):
            CampaignSend.objects.filter(pk=send.pk).update(status=SendStatus.IDLE, next_attempt_at=None)
    return communication


def _field_value(communication: Communication, field: str) -> Any:
    return communication.audience_id if field == "audience" else getattr(communication, field)


def _comparable(value: Any) -> Any:
    return value.pk if isinstance(value, MailchimpAudience) else value


@transaction.atomic
def communication_submit(*, communication_id: int, actor: AbstractBaseUser, comment: str = "") -> Communication:
    """Ask for approval. The Mailchimp draft is created (or refreshed) in the background so the approver
    sees Mailchimp's checklist and rendering."""
    _require_changer(actor)
    communication = _locked(communication_id)
    if S.SUBMITTED not in ALLOWED_TRANSITIONS[communication.state]:
        raise TransitionError(_refusal(communication, S.SUBMITTED))
    problems = selectors.communication_submit_problems(communication)
    if problems:
        raise TransitionError(f"“{communication.subject}” can't be submitted yet: {'; '.join(problems)}.")
    _transition(communication, S.SUBMITTED, actor=actor, comment=comment)
    communication.submitted_by = actor
    communication.submitted_at = timezone.now()
    communication.approved_by = None
    communication.approved_at = None
    communication.save()
    _enqueue_prepare(_send_row(communication))
    return communication


@transaction.atomic
def communication_approve(*, communication_id: int, actor: AbstractBaseUser, comment: str = "") -> Communication:
    """An approver who did not submit it approves it; the send task is enqueued on commit."""
    communication = _locked(communication_id)
    if communication.state == S.FAILED:
        raise TransitionError(f"“{communication.subject}” failed: an approver tries it again with “Retry the send”.")
    if S.APPROVED not in ALLOWED_TRANSITIONS[communication.state]:
        raise TransitionError(_refusal(communication, S.APPROVED))
    _require_approver(communication, actor, action="approve")
    _transition(communication, S.APPROVED, actor=actor, comment=comment)
    _approve_and_enqueue(communication, actor)
    return communication


@transaction.atomic
def communication_retry(*, communication_id: int, actor: AbstractBaseUser, comment: str = "") -> Communication:
    """A failed send, tried again by an approver (not the submitter). The same Mailchimp campaign is reused."""
    communication = _locked(communication_id)
    if communication.state != S.FAILED:
        label = communication.get_state_display().lower()
        raise TransitionError(f"“{communication.subject}” is {label}: only a failed send can be retried.")
    _require_approver(communication, actor, action="retry")
    _transition(communication, S.APPROVED, actor=actor, comment=comment or "Retry after the failure.")
    communication.failure_reason = ""
    _approve_and_enqueue(communication, actor)
    return communication


def _approve_and_enqueue(communication: Communication, actor: AbstractBaseUser) -> None:
    communication.approved_by = actor
    communication.approved_at = timezone.now()
    communication.save()
    send = _send_row(communication)
    CampaignSend.objects.filter(pk=send.pk).update(
        status=SendStatus.PENDING, last_error="", queued_at=timezone.now(), next_attempt_at=None, finished_at=None
    )
    _enqueue_send(send)


@transaction.atomic
def communication_request_changes(*, communication_id: int, actor: AbstractBaseUser, comment: str) -> Communication:
    """An approver (not the submitter) sends it back to its author, saying what should change."""
    communication = _locked(communication_id)
    if S.CHANGES_REQUESTED not in ALLOWED_TRANSITIONS[communication.state]:
        raise TransitionError(_refusal(communication, S.CHANGES_REQUESTED))
    _require_approver(communication, actor, action="request changes to")
    if not comment.strip():
        raise TransitionError("Say what should change: a comment is required when requesting changes.")
    _transition(communication, S.CHANGES_REQUESTED, actor=actor, comment=comment)
    return communication


@transaction.atomic
def communication_cancel(*, communication_id: int, actor: AbstractBaseUser, comment: str = "") -> Communication:
    """Stop it. A scheduled one is unscheduled in Mailchimp first (by a task); it is cancelled once
    Mailchimp confirms, or marked sending/sent if Mailchimp had already started."""
    _require_changer(actor)
    communication = _locked(communication_id)
    if S.CANCELLED not in ALLOWED_TRANSITIONS[communication.state]:
        raise TransitionError(_refusal(communication, S.CANCELLED))
    send = CampaignSend.objects.filter(communication=communication).first()
    if communication.state == S.SCHEDULED:
        CampaignSend.objects.filter(pk=send.pk).update(
            status=SendStatus.CANCELLING,
            cancel_requested_by=actor,
            cancel_comment=comment.strip(),
            queued_at=timezone.now(),
            next_attempt_at=None,
        )
        _enqueue_cancel(send)
        return communication
    if communication.state == S.APPROVED:
        _refuse_while_busy(communication, send, "cancel")
    _transition(communication, S.CANCELLED, actor=actor, comment=comment)
    if send is not None:
        CampaignSend.objects.filter(pk=send.pk).update(status=SendStatus.CANCELLED, finished_at=timezone.now())
    return communication


@transaction.atomic
def communication_refresh_mailchimp_draft(*, communication_id: int, actor: AbstractBaseUser) -> CampaignSend:
    """Push the current content to the Mailchimp draft and read its checklist again (in the background)."""
    _require_changer(actor)
    communication = _locked(communication_id)
    if communication.state not in DRAFT_PUSH_STATES:
        raise TransitionError(
            f"“{communication.subject}” is {communication.get_state_display().lower()}: "
            "its Mailchimp campaign can't change any more."
        )
    send = _send_row(communication)
    _enqueue_prepare(send)
    return send


@transaction.atomic
def communication_test_email_request(*, communication_id: int, actor: AbstractBaseUser) -> CommunicationTestEmail:
    """A test email of the communication as it stands now, to the person asking, through Mailchimp."""
    if not actor.has_perm("campaigns.view_communication"):
        raise PermissionRefused("You may not see communications, so you can't test them either.")
    communication = _locked(communication_id)
    if not actor.email:
        raise TransitionError("Your account has no email address: add one to receive test emails.")
    if communication.state == S.CANCELLED:
        raise TransitionError(f"“{communication.subject}” is cancelled: there is nothing to test.")
    if not communication.html_body.strip() and communication.template_id is None:
        raise TransitionError(f"“{communication.subject}” has no content yet: there is nothing to test.")
    _send_row(communication)
    test_email = CommunicationTestEmail.objects.create(
        communication=communication, email=actor.email, requested_by=actor, queued_at=timezone.now()
    )
    _enqueue_test_email(test_email)
    return test_email


# --- enqueueing (on commit) ------------------------------------------------------------------------------


def _enqueue_prepare(send: CampaignSend) -> None:
    from campaigns.tasks import communication_prepare_task

    communication_prepare_task.delay_on_commit(send.pk)


def _enqueue_send(send: CampaignSend) -> None:
    from campaigns.tasks import communication_send_task

    communication_send_task.delay_on_commit(send.pk)


def _enqueue_cancel(send: CampaignSend) -> None:
    from campaigns.tasks import communication_cancel_task

    communication_cancel_task.delay_on_commit(send.pk)


def _enqueue_test_email(test_email: CommunicationTestEmail) -> None:
    from campaigns.tasks import communication_test_email_task

    communication_test_email_task.delay_on_commit(test_email.pk)


# --- the lease ------------------------------------------------------------------------------------------------


@contextmanager
def _leased(send_id: int) -> Iterator[CampaignSend]:
    """Hold the send's lease while talking to Mailchimp. Writes inside commit as they happen (autocommit in
    workers): an id Mailchimp hands back is recorded at once, never lost with a rolled-back transaction."""
    token, now = uuid.uuid4().hex, timezone.now()
    acquired = (
        CampaignSend.objects.filter(pk=send_id)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .update(lease_owner=token, lease_expires_at=now + timedelta(seconds=LEASE_SECONDS))
    )
    if not acquired:
        if not CampaignSend.objects.filter(pk=send_id).exists():
            raise CampaignSend.DoesNotExist(f"campaign send {send_id}")
        raise CommunicationBusy(f"campaign send {send_id} is leased by another worker")
    try:
        yield CampaignSend.objects.get(pk=send_id)
    finally:
        CampaignSend.objects.filter(pk=send_id, lease_owner=token).update(lease_owner="", lease_expires_at=None)


def _read_communication(communication_id: int) -> Communication:
    # Taking the row lock waits for an edit or a cancel in flight; after that they see the lease and refuse.
    with transaction.atomic():
        return _locked(communication_id)


# --- the Mailchimp draft ----------------------------------------------------------------------------------


def _client(client):
    if client is not None:
        return client
    from connectors.mailchimp.client import get_client

    return get_client()


def _segment_name(communication: Communication) -> str:
    return f"Partnerlink communication #{communication.pk}"


def _campaign_title(communication: Communication) -> str:
    return f"Partnerlink #{communication.pk}: {communication.subject}"[:100]


def _push_draft(send: CampaignSend, communication: Communication, client, *, require_segments: bool) -> str:
    """Make Mailchimp's draft match the communication: recipients, settings, content. Returns the
    campaign's status in Mailchimp; anything but "save" (scheduled, sending, sent) is left untouched."""
    list_id = communication.audience.list_id
    segments = list(communication.segments.all())
    unsynced = [segment for segment in segments if segment.mailchimp_segment_id is None]
    if unsynced:
        from partners.services import audience_sync_start

        run = audience_sync_start(audience=communication.audience, triggered_by=f"communication #{communication.pk}")
        names = ", ".join(segment.name for segment in unsynced)
        if require_segments:
            raise SegmentsNotReady(
                f"Not in Mailchimp yet: {names} (never synced); sync #{run.pk} is {run.get_status_display().lower()}."
            )
    if send.mailchimp_campaign_id:
        remote = client.get_campaign(campaign_id=send.mailchimp_campaign_id)
        if remote.get("status") != "save":
            return str(remote.get("status"))
    else:
        remote = None
    if send.mailchimp_segment_id is None:
        created = client.create_static_segment(list_id=list_id, name=_segment_name(communication))
        send.mailchimp_segment_id = created.id
        CampaignSend.objects.filter(pk=send.pk).update(mailchimp_segment_id=created.id)
    synced = [segment.pk for segment in segments if segment.mailchimp_segment_id is not None]
    desired = set(SegmentMember.objects.filter(segment_id__in=synced).values_list("email", flat=True).distinct())
    current = set(client.get_static_segment_emails(list_id=list_id, segment_id=send.mailchimp_segment_id))
    if desired != current:
        client.update_static_segment(
            list_id=list_id,
            segment_id=send.mailchimp_segment_id,
            add=sorted(desired - current),
            remove=sorted(current - desired),
        )
    wanted = {
        "subject_line": communication.subject,
        "from_name": communication.from_name,
        "reply_to": communication.reply_to,
        "title": _campaign_title(communication),
        "preview_text": communication.preview_text,
    }
    if remote is None:
        created = client.create_campaign(list_id=list_id, segment_id=send.mailchimp_segment_id, **wanted)
        _record_campaign(send, communication, created)
    elif any((remote.get("settings") or {}).get(key, "") != value for key, value in wanted.items()):
        client.update_campaign_settings(campaign_id=send.mailchimp_campaign_id, **wanted)
    if communication.template_id is not None:
        client.set_campaign_content(
            campaign_id=send.mailchimp_campaign_id,
            template_id=communication.template_id,
            sections=communication.template_sections or {},
        )
    else:
        client.set_campaign_content(campaign_id=send.mailchimp_campaign_id, html=communication.html_body)
    return "save"


def _record_campaign(send: CampaignSend, communication: Communication, created: dict[str, Any]) -> None:
    """The ledger keeps the campaign id from the moment it exists: every later run reuses it."""
    send.mailchimp_campaign_id = str(created["id"])
    send.mailchimp_web_id = created.get("web_id")
    with transaction.atomic():
        CampaignSend.objects.filter(pk=send.pk).update(
            mailchimp_campaign_id=send.mailchimp_campaign_id, mailchimp_web_id=send.mailchimp_web_id
        )
        Communication.objects.filter(pk=communication.pk).update(
            mailchimp_campaign_id=send.mailchimp_campaign_id, mailchimp_web_id=send.mailchimp_web_id
        )


def _read_back(send: CampaignSend, client) -> None:
    """What the approver sees: Mailchimp's checklist, its rendering of the content, its recipient count."""
    campaign_id = send.mailchimp_campaign_id
    send.checklist = client.get_send_checklist(campaign_id=campaign_id)
    send.rendered_html = str(client.get_campaign_content(campaign_id=campaign_id).get("html") or "")
    recipients = client.get_campaign(campaign_id=campaign_id).get("recipients") or {}
    send.recipient_count = recipients.get("recipient_count")
    send.prepared_at = timezone.now()
    CampaignSend.objects.filter(pk=send.pk).update(
        checklist=send.checklist,
        rendered_html=send.rendered_html,
        recipient_count=send.recipient_count,
        prepared_at=send.prepared_at,
    )


def mailchimp_refusal(exc: MailchimpError) -> str:
    """Mailchimp's reason as people read it: status and title, detail, and each field error."""
    head = " ".join(part for part in (str(exc.status or ""), exc.title) if part) or type(exc).__name__
    text = f"Mailchimp refused ({head})"
    if exc.detail:
        text += f": {exc.detail}"
    errors = getattr(exc, "errors", None) or []
    if errors:
        text += " Field errors: " + "; ".join(f"{error.field}: {error.message}" for error in errors) + "."
    where = f"{exc.method} {exc.path}".strip()
    if where:
        text += f" [{where}"
        text += f", request id {exc.instance}]" if exc.instance else "]"
    return text


# --- what the tasks run -------------------------------------------------------------------------------


def communication_prepare_execute(*, send_id: int, client=None) -> CampaignSend:
    """Create or refresh the Mailchimp draft and read back its checklist, rendering and recipient count.
    A refusal is kept on the ledger row for the page to show; the communication's state doesn't change."""
    client = _client(client)
    with _leased(send_id) as send:
        communication = Communication.objects.select_related("audience").get(pk=send.communication_id)
        if communication.state not in DRAFT_PUSH_STATES or send.status in (
            SendStatus.DONE,
            SendStatus.CANCELLING,
            SendStatus.CANCELLED,
        ):
            return send
        try:
            if _push_draft(send, communication, client, require_segments=False) == "save":
                _read_back(send, client)
        except MailchimpAPIError as exc:
            CampaignSend.objects.filter(pk=send.pk).update(last_error=mailchimp_refusal(exc))
        else:
            CampaignSend.objects.filter(pk=send.pk).update(last_error="")
        send.refresh_from_db()
        return send


def communication_send_execute(*, send_id: int, client=None, now: datetime | None = None) -> CampaignSend:
    """Hand an approved communication to Mailchimp: recipients, settings and content pushed, then sent at
    once or scheduled on its quarter hour. Exactly once: the campaign id comes from the ledger; a send that
    Mailchimp already has (sending, sent, scheduled) is recorded, never repeated.

    Raises MailchimpTransientError, CommunicationBusy and SegmentsNotReady for the task to retry later; a
    refusal marks the communication failed with Mailchimp's reason."""
    client = _client(client)
    with _leased(send_id) as send:
        if send.status != SendStatus.PENDING:
            return send
        communication = _read_communication(send.communication_id)
        if communication.state != S.APPROVED:
            return send  # edited or cancelled since it was approved
        CampaignSend.objects.filter(pk=send.pk).update(attempts=F("attempts") + 1, next_attempt_at=None)
        slot = selectors.communication_schedule_slot(communication)
        try:
            refusal = next(filter(None, (hook(communication, client) for hook in send_preflight_hooks)), "")
            if refusal:
                _record_failure(send, refusal)
                send.refresh_from_db()
                return send
            status = _push_draft(send, communication, client, require_segments=True)
            send_time = None
            if status == "save":
                if slot is not None and slot > (now or timezone.now()) + SCHEDULE_MARGIN:
                    slot = client.schedule_campaign(campaign_id=send.mailchimp_campaign_id, send_at=slot)
                    status = "schedule"
                else:
                    client.send_campaign(campaign_id=send.mailchimp_campaign_id)
                    slot = None
                    status, send_time = _status_after_send(client, send.mailchimp_campaign_id)
        except MailchimpAPIError as exc:
            _record_failure(send, mailchimp_refusal(exc))
        else:
            if status in ("schedule", "sending", "sent"):
                _record_handover(send, status=status, slot=slot, send_time=send_time)
            else:  # canceled, canceling, paused, archived: someone stopped it in Mailchimp
                campaign = send.mailchimp_campaign_id
                _record_failure(send, f"Mailchimp holds campaign {campaign} as “{status}”: it was not sent.")
        send.refresh_from_db()
        return send


def _status_after_send(client, campaign_id: str) -> tuple[str, datetime | None]:
    """Mailchimp's status right after the send; "sending" when it can't be read (the sweep will)."""
    try:
        remote = client.get_campaign(campaign_id=campaign_id)
    except MailchimpError:
        return "sending", None
    return str(remote.get("status") or "sending"), parse_mailchimp_datetime(str(remote.get("send_time") or ""))


@transaction.atomic
def _record_handover(send: CampaignSend, *, status: str, slot: datetime | None, send_time: datetime | None) -> None:
    communication = _locked(send.communication_id)
    campaign = send.mailchimp_campaign_id
    if status == "schedule":
        slot = slot or selectors.communication_schedule_slot(communication)
        communication.scheduled_for = slot
        note = f"Mailchimp campaign {campaign} scheduled for {selectors.format_utc(slot)}"
        if communication.schedule_time and slot != communication.schedule_time:
            asked = selectors.format_utc(communication.schedule_time)
            note += f" (the schedule time {asked} rounded up to the quarter hour)"
        _transition(communication, S.SCHEDULED, actor=None, comment=note + ".")
    elif status == "sent":
        communication.sent_at = send_time or timezone.now()
        _transition(communication, S.SENT, actor=None, comment=f"Mailchimp campaign {campaign} sent.")
    else:
        _transition(communication, S.SENDING, actor=None, comment=f"Mailchimp campaign {campaign} is sending.")
    CampaignSend.objects.filter(pk=send.pk).update(status=SendStatus.DONE, last_error="", finished_at=timezone.now())


@transaction.atomic
def _record_failure(send: CampaignSend, reason: str) -> None:
    communication = _locked(send.communication_id)
    communication.failure_reason = reason
    _transition(communication, S.FAILED, actor=None, comment=reason)
    CampaignSend.objects.filter(pk=send.pk).update(
        status=SendStatus.FAILED, last_error=reason, finished_at=timezone.now()
    )


def campaign_send_note_retry(*, send_id: int, countdown: float, error: str = "") -> None:
    """A retry is coming: tell the relay when it is due, and keep the transient error (if any) for the page.
    Only a row still waiting is touched: a run that lost the race to a finished one writes nothing."""
    changes: dict[str, Any] = {"next_attempt_at": timezone.now() + timedelta(seconds=countdown)}
    if error:
        changes["last_error"] = f"will retry: {error}"[:2000]
    CampaignSend.objects.filter(pk=send_id, status__in=(SendStatus.PENDING, SendStatus.CANCELLING)).update(**changes)


def communication_send_give_up(*, send_id: int, reason: str) -> None:
    """Retries are exhausted: the communication is failed, for an approver to retry."""
    with transaction.atomic():
        send = CampaignSend.objects.select_for_update().get(pk=send_id)
        if send.status != SendStatus.PENDING:
            return
        communication = Communication.objects.get(pk=send.communication_id)
        if communication.state != S.APPROVED:
            return
    _record_failure(send, reason)


def communication_cancel_execute(*, send_id: int, client=None) -> CampaignSend:
    """Unschedule in Mailchimp, then record the cancellation; if Mailchimp has already started, record that."""
    client = _client(client)
    with _leased(send_id) as send:
        if send.status != SendStatus.CANCELLING:
            return send
        communication = _read_communication(send.communication_id)
        if communication.state != S.SCHEDULED:
            CampaignSend.objects.filter(pk=send.pk).update(status=SendStatus.DONE)
            return send
        try:
            remote = client.get_campaign(campaign_id=send.mailchimp_campaign_id)
            status = remote.get("status")
            if status == "schedule":
                client.unschedule_campaign(campaign_id=send.mailchimp_campaign_id)
                status = "save"
        except MailchimpAPIError as exc:
            CampaignSend.objects.filter(pk=send.pk).update(
                status=SendStatus.DONE, last_error=f"Cancelling failed: {mailchimp_refusal(exc)}"
            )
        else:
            _record_cancel_outcome(send, status=str(status), remote=remote)
        send.refresh_from_db()
        return send


@transaction.atomic
def _record_cancel_outcome(send: CampaignSend, *, status: str, remote: dict[str, Any]) -> None:
    communication = _locked(send.communication_id)
    if status == "save":
        comment = "Unscheduled in Mailchimp." + (f" {send.cancel_comment}" if send.cancel_comment else "")
        _transition(communication, S.CANCELLED, actor=send.cancel_requested_by, comment=comment)
        CampaignSend.objects.filter(pk=send.pk).update(status=SendStatus.CANCELLED, finished_at=timezone.now())
        return
    too_late = "Too late to cancel: Mailchimp had already started sending."
    if status == "sent":
        communication.sent_at = parse_mailchimp_datetime(str(remote.get("send_time") or "")) or timezone.now()
        _transition(communication, S.SENT, actor=None, comment=too_late)
    else:
        _transition(communication, S.SENDING, actor=None, comment=too_late)
    CampaignSend.objects.filter(pk=send.pk).update(status=SendStatus.DONE, last_error=too_late)


def communication_test_email_execute(*, test_email_id: int, client=None) -> CommunicationTestEmail:
    """Send one test email: the draft is brought up to date first (when it may still change)."""
    client = _client(client)
    test_email = CommunicationTestEmail.objects.get(pk=test_email_id)
    if test_email.status != EmailTestStatus.PENDING:
        return test_email
    send = CampaignSend.objects.get(communication_id=test_email.communication_id)
    with _leased(send.pk) as send:
        test_email.refresh_from_db()
        if test_email.status != EmailTestStatus.PENDING:
            return test_email
        communication = Communication.objects.select_related("audience").get(pk=send.communication_id)
        try:
            if communication.state in DRAFT_PUSH_STATES and send.status not in (
                SendStatus.DONE,
                SendStatus.CANCELLING,
                SendStatus.CANCELLED,
            ):
                if _push_draft(send, communication, client, require_segments=False) == "save":
                    _read_back(send, client)
            if not send.mailchimp_campaign_id:
                raise TransitionError("It has no Mailchimp campaign to test.")
            client.send_test_email(campaign_id=send.mailchimp_campaign_id, emails=[test_email.email])
        except MailchimpAPIError as exc:
            test_email.status, test_email.error = EmailTestStatus.FAILED, mailchimp_refusal(exc)
        except TransitionError as exc:
            test_email.status, test_email.error = EmailTestStatus.FAILED, str(exc)
        else:
            test_email.status, test_email.sent_at = EmailTestStatus.SENT, timezone.now()
        test_email.save(update_fields=["status", "error", "sent_at"])
        return test_email


def communication_test_email_give_up(*, test_email_id: int, reason: str) -> None:
    CommunicationTestEmail.objects.filter(pk=test_email_id, status=EmailTestStatus.PENDING).update(
        status=EmailTestStatus.FAILED, error=reason[:2000]
    )


# --- beat sweeps ---------------------------------------------------------------------------------------------

# A test email not sent within this long is given up rather than sent late.
TEST_EMAIL_RELAY_WINDOW = timedelta(hours=1)


def campaign_sends_relay_stuck(*, now: datetime | None = None, grace: timedelta = timedelta(minutes=2)) -> int:
    """Re-enqueue sends and cancellations whose task message was lost (a broker outage), and test emails
    not sent yet. Rows waiting for a retry or leased by a live worker are left alone; a duplicate task is
    harmless (the lease and the ledger status decide). Returns how many were re-enqueued."""
    now = now or timezone.now()
    stale = now - grace
    stuck = (
        CampaignSend.objects.filter(status__in=(SendStatus.PENDING, SendStatus.CANCELLING), queued_at__lt=stale)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=stale))
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
    )
    count = 0
    for send in stuck:
        with transaction.atomic():
            CampaignSend.objects.filter(pk=send.pk).update(queued_at=now)
            (_enqueue_send if send.status == SendStatus.PENDING else _enqueue_cancel)(send)
        count += 1
    tests = CommunicationTestEmail.objects.filter(status=EmailTestStatus.PENDING, queued_at__lt=stale)
    tests.filter(created_at__lt=now - TEST_EMAIL_RELAY_WINDOW).update(
        status=EmailTestStatus.FAILED, error="Not sent within an hour (its task was lost): ask for a new one."
    )
    for test_email in tests.filter(created_at__gte=now - TEST_EMAIL_RELAY_WINDOW):
        with transaction.atomic():
            CommunicationTestEmail.objects.filter(pk=test_email.pk).update(queued_at=now)
            _enqueue_test_email(test_email)
        count += 1
    return count


def communications_refresh_delivery(*, client=None, now: datetime | None = None) -> int:
    """Beat: ask Mailchimp how sends in progress and scheduled sends whose slot has passed are doing, and
    record sent (or sending). Returns how many changed state."""
    now = now or timezone.now()
    due = Communication.objects.filter(
        Q(state=S.SENDING) | Q(state=S.SCHEDULED, scheduled_for__lte=now), send__isnull=False
    ).exclude(send__status=SendStatus.CANCELLING)
    due = list(due.values_list("pk", "send__mailchimp_campaign_id"))
    if not due:
        return 0
    client = _client(client)
    changed = 0
    for communication_id, campaign_id in due:
        try:
            remote = client.get_campaign(campaign_id=campaign_id)
        except MailchimpError as exc:
            logger.warning("communication %s: reading campaign %s failed: %s", communication_id, campaign_id, exc)
            continue
        changed += _apply_remote_status(communication_id, remote)
    return changed


@transaction.atomic
def _apply_remote_status(communication_id: int, remote: dict[str, Any]) -> int:
    communication = _locked(communication_id)
    status = remote.get("status")
    if status == "sent" and communication.state in (S.SCHEDULED, S.SENDING):
        communication.sent_at = parse_mailchimp_datetime(str(remote.get("send_time") or "")) or timezone.now()
        _transition(communication, S.SENT, actor=None, comment="Mailchimp reports it sent.")
        return 1
    if status == "sending" and communication.state == S.SCHEDULED:
        _transition(communication, S.SENDING, actor=None, comment="Mailchimp started sending it.")
        return 1
    if status in ("save", "paused") and communication.state == S.SCHEDULED:
        reason = "Its slot has passed but Mailchimp holds it unscheduled (changed in Mailchimp?): it was not sent."
        communication.failure_reason = reason
        _transition(communication, S.FAILED, actor=None, comment=reason)
        CampaignSend.objects.filter(communication_id=communication_id).update(status=SendStatus.FAILED)
        return 1
    return 0
