"""Policy documents with confirmed receipt (flow F5): writes. Reads are in campaigns/document_selectors.py.

A **document** (policy, trading terms, operational guide) has **versions**: uploaded files (PDF, DOCX, XLSX;
checked in campaigns/document_files.py) that go through the same four-eyes rule as communications:

    draft ──submit──▶ submitted ──approve──▶ approved ──(a newer version approved)──▶ superseded
      ▲                  └──request changes──▶ changes_requested
      └──── replace the file (from submitted or changes requested) ───┘

Only members of “Approvers” (or administrators) approve, never the person who submitted. Every step is a line in
the version's admin history.

**Publication.** Approving a version makes it the document's latest and supersedes the previous one; a
`DocumentPublication` ledger row (one per version) then publishes it to the Trading Grid community from a task:
the Trading Grid document is created on the first publication (its id recorded at once on the document), each
later version is added to it. Exactly once: a retry finds the document id on record, and a version Trading Grid
already holds (409) with the same SHA-256 is recorded as published. Publications of one document run in
approval order, one at a time, so Trading Grid's `latest` is always ours.

**Distribution.** A communication of kind “policy update” linked to the version (`DocumentDistribution`) sends
it through the usual approval and Mailchimp send. Its link is `/d/<version id>/*|DOCKEY|*`: Mailchimp fills in
the reader's key (merge field DOCKEY, a random key per audience member that never changes, set on the members
just before the send), our redirect view records the click on the reader's `DocumentRecipient` row and sends
them on to the document's community page, where they read, download and confirm receipt. Because the version is
in the email itself and the key never changes, two distributions in flight never overwrite each other's links.

**Acknowledgements** arrive by the `document.acknowledged` webhook (the handler re-reads Trading Grid) and by a
poll per document with `updated_since`; each is stored once per (version, partner, email).

**Reminders.** Once Mailchimp has sent a distribution, every recipient who has not confirmed is due a reminder
`remind_after_days` later, then again every `remind_after_days`, at most `max_reminders` times; when the last
one has had as long again without a confirmation, the partner manager is alerted (an email and a line in the
partner's history). Each stage is a `DocumentReminder` ledger row, unique per (recipient, version, stage), made
by a beat sweep over due recipients; a confirmation stops a recipient's stages, a newer approved version stops
every stage of the old one, and unsubscribed or cleaned addresses are skipped with the reason.
"""

from __future__ import annotations

import logging
import secrets
import smtplib
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from campaigns import services
from campaigns.document_files import check_upload
from campaigns.models import (
    AcknowledgementSource,
    Communication,
    CommunicationKind,
    CommunicationState,
    DocumentAcknowledgement,
    DocumentDistribution,
    DocumentLinkKey,
    DocumentPublication,
    DocumentRecipient,
    DocumentReminder,
    DocumentVersion,
    DocumentVersionStatus,
    PolicyDocument,
    PublicationStatus,
    ReminderKind,
    ReminderProgress,
    ReminderStatus,
)
from campaigns.services import PermissionRefused, TransitionError
from partners.models import Contact, MailchimpAudience, MarketingStatus, Segment, SegmentMember, TradingPartner
from partners.services import history_record

logger = logging.getLogger(__name__)

V = DocumentVersionStatus
LINK_KEY_TAG = "DOCKEY"
LINK_MERGE_TAG = f"*|{LINK_KEY_TAG}|*"
# A publication or reminder holds its row this long; a worker that died lets the relay take it over afterwards.
LEASE = timedelta(seconds=getattr(settings, "CELERY_TASK_TIME_LIMIT", 660))
# A pending row nobody has claimed for this long lost its task (broker outage): the relay enqueues it again.
UNCLAIMED_GRACE = timedelta(minutes=2)
OPTED_OUT = (MarketingStatus.UNSUBSCRIBED, MarketingStatus.CLEANED)
ACK_STREAM_PREFIX = "tradinggrid:document-acknowledgements:"
SWEEP_BATCH = 500
BULK_MEMBERS = 500


class DocumentBusy(Exception):
    """Another publication of the same document is running or comes first: try again shortly."""


class DistributionNotReady(services.SegmentsNotReady):
    """The version is not in Trading Grid yet: the send waits for its publication (the send task retries)."""


# --- permissions -----------------------------------------------------------------------------------------

CHANGE_PERMISSION = "campaigns.change_documentversion"
ADD_PERMISSION = "campaigns.add_documentversion"
APPROVE_PERMISSION = "campaigns.approve_documentversion"


def _require(actor: AbstractBaseUser, permission: str, message: str) -> None:
    if not (actor.is_authenticated and actor.is_active and actor.has_perm(permission)):
        raise PermissionRefused(message)


def _require_approver(version: DocumentVersion, actor: AbstractBaseUser, *, action: str) -> None:
    _require(actor, APPROVE_PERMISSION, f"Only members of “Approvers” can {action} a document version.")
    if version.submitted_by_id is not None and version.submitted_by_id == actor.pk:
        raise PermissionRefused(f"You submitted {_name(version)}: someone else has to {action} it (four-eyes rule).")


def _name(version: DocumentVersion) -> str:
    return f"“{version.document.title}” version {version.version}"


# --- documents and versions ---------------------------------------------------------------------------------

DOCUMENT_SETTINGS = (
    "kind",
    "title",
    "description",
    "owner",
    "remind_after_days",
    "max_reminders",
    "reminder_tag",
    "reminder_journey_id",
    "reminder_step_id",
)


@transaction.atomic
def document_create(*, actor: AbstractBaseUser, kind: str, title: str, **fields: Any) -> PolicyDocument:
    """A new document (no version yet). `fields`: any of DOCUMENT_SETTINGS; the owner defaults to the actor."""
    _require(actor, "campaigns.add_policydocument", "You may not create policy documents.")
    unknown = set(fields) - set(DOCUMENT_SETTINGS)
    if unknown:
        raise ValueError(f"not a document setting: {', '.join(sorted(unknown))}")
    document = PolicyDocument(kind=kind, title=title.strip(), owner=fields.pop("owner", None) or actor, **fields)
    document.full_clean()
    document.save()
    history_record(obj=document, message="Created.", user=actor)
    return document


@transaction.atomic
def document_update(*, document_id: int, actor: AbstractBaseUser, changes: dict[str, Any]) -> PolicyDocument:
    """Change a document's title, description, owner or reminder settings. The kind is fixed once Trading Grid
    holds the document (it has no call to change it)."""
    _require(actor, "campaigns.change_policydocument", "You may not change policy documents.")
    document = PolicyDocument.objects.select_for_update().get(pk=document_id)
    unknown = set(changes) - set(DOCUMENT_SETTINGS)
    if unknown:
        raise ValueError(f"not a document setting: {', '.join(sorted(unknown))}")
    if "kind" in changes and changes["kind"] != document.kind and document.tg_document_id:
        raise ValidationError({"kind": "Trading Grid holds this document already: its kind can't change."})
    changed = [name for name, value in changes.items() if getattr(document, name) != value]
    for name in changed:
        setattr(document, name, changes[name])
    if changed:
        document.full_clean()
        document.save()
        labels = ", ".join(str(PolicyDocument._meta.get_field(name).verbose_name) for name in changed)
        history_record(obj=document, message=f"Changed {labels}.", user=actor)
    return document


@transaction.atomic
def document_version_upload(
    *, document_id: int, actor: AbstractBaseUser, upload, version: str, change_summary: str
) -> DocumentVersion:
    """A new draft version from an uploaded file: size and type checked (ValidationError naming the file and
    the problem), size and SHA-256 recorded."""
    _require(actor, ADD_PERMISSION, "You may not upload document versions.")
    document = PolicyDocument.objects.select_for_update().get(pk=document_id)
    label = (version or "").strip()
    if not label:
        raise ValidationError({"version": "Give the version a label, e.g. 2026.1."})
    if DocumentVersion.objects.filter(document=document, version=label).exists():
        raise ValidationError({"version": f"“{document.title}” already has a version {label}."})
    if not (change_summary or "").strip():
        raise ValidationError({"change_summary": "Say what changed in this version."})
    checked = _checked(upload)
    row = DocumentVersion(
        document=document,
        version=label,
        change_summary=change_summary.strip(),
        file_name=checked.file_name,
        file_type=checked.file_type,
        size=checked.size,
        sha256=checked.sha256,
        created_by=actor,
    )
    row.file.save(checked.file_name, upload, save=False)
    try:
        row.save()
    except Exception:
        row.file.storage.delete(row.file.name)
        raise
    history_record(
        obj=row, message=f"Uploaded {checked.file_name} ({checked.size} bytes, SHA-256 {checked.sha256}).", user=actor
    )
    return row


def _checked(upload):
    try:
        return check_upload(upload)
    except ValidationError as exc:
        raise ValidationError({"file": exc.messages}) from exc


@transaction.atomic
def document_version_replace_file(
    *, version_id: int, actor: AbstractBaseUser, upload, change_summary: str | None = None
) -> DocumentVersion:
    """A new file for a version that is not approved yet; a submitted one goes back to draft (an approval
    covers exactly the file that was approved)."""
    _require(actor, CHANGE_PERMISSION, "You may not change document versions.")
    version = _locked_version(version_id)
    if version.status not in (V.DRAFT, V.SUBMITTED, V.CHANGES_REQUESTED):
        raise TransitionError(
            f"{_name(version)} is {version.get_status_display().lower()}: upload a new version instead."
        )
    checked = _checked(upload)
    old_name = version.file.name
    version.file.save(checked.file_name, upload, save=False)
    version.file_name, version.file_type = checked.file_name, checked.file_type
    version.size, version.sha256 = checked.size, checked.sha256
    if change_summary is not None and change_summary.strip():
        version.change_summary = change_summary.strip()
    from_status = version.status
    if version.status != V.DRAFT:
        version.status = V.DRAFT
        version.submitted_by, version.submitted_at = None, None
    version.save()
    transaction.on_commit(lambda: version.file.storage.delete(old_name))
    note = f"Replaced the file with {checked.file_name} ({checked.size} bytes, SHA-256 {checked.sha256})"
    if from_status != V.DRAFT:
        note += f": back to draft from {DocumentVersionStatus(from_status).label.lower()}"
    history_record(obj=version, message=note + ".", user=actor)
    return version


def _locked_version(version_id: int) -> DocumentVersion:
    return DocumentVersion.objects.select_for_update().select_related("document").get(pk=version_id)


def _step(version: DocumentVersion, to_status: str, *, actor: AbstractBaseUser | None, comment: str = "") -> None:
    from_label = DocumentVersionStatus(version.status).label
    version.status = to_status
    version.save()
    text = f"{from_label} → {DocumentVersionStatus(to_status).label}."
    if comment.strip():
        text += f" {comment.strip()}"
    history_record(obj=version, message=text, user=actor)


@transaction.atomic
def document_version_submit(*, version_id: int, actor: AbstractBaseUser, comment: str = "") -> DocumentVersion:
    """Ask an approver (someone else) to approve the version."""
    _require(actor, CHANGE_PERMISSION, "You may not change document versions.")
    version = _locked_version(version_id)
    if version.status == V.CHANGES_REQUESTED:
        raise TransitionError(f"{_name(version)} has changes requested: replace its file first, then submit again.")
    if version.status != V.DRAFT:
        raise TransitionError(f"{_name(version)} is {version.get_status_display().lower()}: only a draft is submitted.")
    version.submitted_by, version.submitted_at = actor, timezone.now()
    version.approved_by, version.approved_at = None, None
    _step(version, V.SUBMITTED, actor=actor, comment=comment)
    return version


@transaction.atomic
def document_version_request_changes(*, version_id: int, actor: AbstractBaseUser, comment: str) -> DocumentVersion:
    """An approver (not the submitter) sends it back, saying what should change."""
    version = _locked_version(version_id)
    if version.status != V.SUBMITTED:
        raise TransitionError(
            f"{_name(version)} is {version.get_status_display().lower()}: only a submitted version can be sent back."
        )
    _require_approver(version, actor, action="request changes to")
    if not (comment or "").strip():
        raise TransitionError("Say what should change: a comment is required when requesting changes.")
    _step(version, V.CHANGES_REQUESTED, actor=actor, comment=comment)
    return version


@transaction.atomic
def document_version_approve(*, version_id: int, actor: AbstractBaseUser, comment: str = "") -> DocumentVersion:
    """An approver who did not submit it approves the version: it becomes the document's latest, the previous
    approved version is superseded (its reminders stop) and the publication to Trading Grid is enqueued."""
    version = _locked_version(version_id)
    if version.status in (V.DRAFT, V.CHANGES_REQUESTED):
        raise TransitionError(f"{_name(version)} is {version.get_status_display().lower()}: submit it first.")
    if version.status != V.SUBMITTED:
        raise TransitionError(f"{_name(version)} is {version.get_status_display().lower()}: it can't be approved.")
    _require_approver(version, actor, action="approve")
    PolicyDocument.objects.select_for_update().get(pk=version.document_id)  # approvals of one document in turn
    now = timezone.now()
    previous = DocumentVersion.objects.filter(document_id=version.document_id, status=V.APPROVED).first()
    if previous is not None:
        previous.superseded_by, previous.superseded_at = version, now
        _step(previous, V.SUPERSEDED, actor=actor, comment=f"Version {version.version} approved.")
        _stop_version(previous, reason=f"Superseded by version {version.version} on {now:%Y-%m-%d}.")
    version.approved_by, version.approved_at = actor, now
    _step(version, V.APPROVED, actor=actor, comment=comment)
    publication, _ = DocumentPublication.objects.get_or_create(version=version)
    DocumentPublication.objects.filter(pk=publication.pk).update(
        status=PublicationStatus.PENDING, queued_at=now, next_attempt_at=None, last_error=""
    )
    _enqueue_publication(publication.pk)
    return version


def _stop_version(version: DocumentVersion, *, reason: str) -> None:
    """A superseded version: no more reminders, and no publication if it has not started."""
    DocumentRecipient.objects.filter(version=version, next_reminder_at__isnull=False).update(
        next_reminder_at=None, reminders_stopped=reason[:200]
    )
    DocumentReminder.objects.filter(version=version, status=ReminderStatus.PENDING).update(
        status=ReminderStatus.CANCELLED, reason=reason, next_attempt_at=None
    )
    now = timezone.now()
    DocumentPublication.objects.filter(version=version, status=PublicationStatus.PENDING).filter(
        Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
    ).update(status=PublicationStatus.CANCELLED, last_error=reason, next_attempt_at=None)


# --- publication to Trading Grid -----------------------------------------------------------------------------


def _enqueue_publication(publication_id: int) -> None:
    from campaigns.tasks import document_publication_task

    document_publication_task.delay_on_commit(publication_id)


def document_content_url(version: DocumentVersion) -> str:
    """What Trading Grid is given as `content_url`: the staff-only download of the admin. (The contract has no
    upload call; see README, “Policy documents (F5)”, for what this means for partners' downloads.)"""
    return settings.PARTNERLINK_PUBLIC_URL + reverse("admin:campaigns_documentversion_download", args=[version.pk])


@contextmanager
def _leased_publication(publication_id: int) -> Iterator[DocumentPublication]:
    token, now = uuid.uuid4().hex, timezone.now()
    acquired = (
        DocumentPublication.objects.filter(pk=publication_id)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
        .update(lease_owner=token, lease_expires_at=now + LEASE)
    )
    if not acquired:
        if not DocumentPublication.objects.filter(pk=publication_id).exists():
            raise DocumentPublication.DoesNotExist(f"document publication {publication_id}")
        raise DocumentBusy(f"document publication {publication_id} is leased by another worker")
    try:
        yield DocumentPublication.objects.select_related("version__document").get(pk=publication_id)
    finally:
        DocumentPublication.objects.filter(pk=publication_id, lease_owner=token).update(
            lease_owner="", lease_expires_at=None
        )


def document_publication_execute(*, publication_id: int, client=None) -> DocumentPublication:
    """Publish one approved version to the Trading Grid community as the document's latest, exactly once.

    Raises TradingGridTransientError and DocumentBusy for the task to retry; a refusal marks the row failed
    with Trading Grid's reason."""
    from connectors.tradinggrid.errors import TradingGridAPIError

    with _leased_publication(publication_id) as publication:
        if publication.status != PublicationStatus.PENDING:
            return publication
        version = publication.version
        if version.status != V.APPROVED:
            _publication_finish(publication, PublicationStatus.CANCELLED, error="Superseded before it was published.")
            return _reload(publication)
        earlier = (
            DocumentPublication.objects.filter(
                version__document_id=version.document_id, status=PublicationStatus.PENDING
            )
            .exclude(pk=publication.pk)
            .filter(version__approved_at__lt=version.approved_at)
        )
        if earlier.exists():
            raise DocumentBusy(f"an earlier version of document {version.document_id} is still being published")
        DocumentPublication.objects.filter(pk=publication.pk).update(attempts=F("attempts") + 1, next_attempt_at=None)
        client = _tg_client(client)
        document = PolicyDocument.objects.get(pk=version.document_id)
        try:
            if not document.tg_document_id:
                created = client.create_document(
                    document={"kind": document.kind, "title": document.title, "description": document.description}
                )
                _record_tg_document(document, publication, created)
            DocumentPublication.objects.filter(pk=publication.pk).update(tg_document_id=document.tg_document_id)
            remote = _add_version(client, document, version)
        except TradingGridAPIError as exc:
            _publication_finish(publication, PublicationStatus.FAILED, error=tg_refusal(exc))
            return _reload(publication)
        except _VersionConflict as exc:
            _publication_finish(publication, PublicationStatus.FAILED, error=str(exc))
            return _reload(publication)
        latest = (remote.get("latest") or {}).get("version")
        note = "" if latest in (None, version.version) else f"Trading Grid shows version {latest} as its latest."
        if remote.get("url") and remote["url"] != document.tg_url:
            PolicyDocument.objects.filter(pk=document.pk).update(tg_url=str(remote["url"])[:500])
        _publication_finish(publication, PublicationStatus.PUBLISHED, error=note)
        history_record(
            obj=version,
            message=f"Published to Trading Grid document {document.tg_document_id} as version {version.version}.",
        )
        return _reload(publication)


class _VersionConflict(Exception):
    pass


def _add_version(client, document: PolicyDocument, version: DocumentVersion) -> dict[str, Any]:
    from connectors.tradinggrid.errors import TradingGridAPIError

    payload = {
        "version": version.version,
        "file_name": version.file_name,
        "sha256": version.sha256,
        "content_url": document_content_url(version),
        "status": "approved",
        "published_at": version.approved_at,
    }
    try:
        return client.add_document_version(document_id=document.tg_document_id, version=payload)
    except TradingGridAPIError as exc:
        if exc.status != 409:
            raise
    # Trading Grid has this label already: an earlier attempt whose answer was lost, or someone else's version.
    remote = client.get_document(document_id=document.tg_document_id)
    held = next((v for v in remote.get("versions") or [] if str(v.get("version")) == version.version), None)
    if held is not None and str(held.get("sha256") or "").lower() == version.sha256:
        return remote
    raise _VersionConflict(
        f"Trading Grid document {document.tg_document_id} already holds a version {version.version} with other "
        f"content (SHA-256 {(held or {}).get('sha256') or 'unknown'}): give this version another label."
    )


def _record_tg_document(document: PolicyDocument, publication: DocumentPublication, created: dict[str, Any]) -> None:
    """The id is kept the moment Trading Grid hands it out: every later attempt adds to this document."""
    document.tg_document_id = str(created["id"])
    document.tg_url = str(created.get("url") or "")[:500]
    with transaction.atomic():
        PolicyDocument.objects.filter(pk=document.pk).update(
            tg_document_id=document.tg_document_id, tg_url=document.tg_url
        )
        DocumentPublication.objects.filter(pk=publication.pk).update(tg_document_id=document.tg_document_id)
    history_record(obj=document, message=f"Created in Trading Grid as {document.tg_document_id}.")


def _publication_finish(publication: DocumentPublication, status: str, *, error: str = "") -> None:
    now = timezone.now()
    DocumentPublication.objects.filter(pk=publication.pk).update(
        status=status,
        last_error=error[:2000],
        next_attempt_at=None,
        published_at=now if status == PublicationStatus.PUBLISHED else None,
    )


def _reload(publication: DocumentPublication) -> DocumentPublication:
    return DocumentPublication.objects.select_related("version__document").get(pk=publication.pk)


def tg_refusal(exc) -> str:
    code = f" [{exc.code}]" if getattr(exc, "code", "") else ""
    status = f"HTTP {exc.status}" if getattr(exc, "status", None) else "no status"
    return f"Trading Grid refused ({status}){code}: {exc.message}"


def document_publication_note_retry(*, publication_id: int, countdown: float, error: str = "") -> None:
    """A retry is coming: when it is due (for the relay), and the transient error for the page."""
    changes: dict[str, Any] = {"next_attempt_at": timezone.now() + timedelta(seconds=countdown)}
    if error:
        changes["last_error"] = f"will retry: {error}"[:2000]
    DocumentPublication.objects.filter(pk=publication_id, status=PublicationStatus.PENDING).update(**changes)


def document_publication_give_up(*, publication_id: int, reason: str) -> None:
    DocumentPublication.objects.filter(pk=publication_id, status=PublicationStatus.PENDING).update(
        status=PublicationStatus.FAILED, last_error=reason[:2000], next_attempt_at=None
    )


@transaction.atomic
def document_publication_retry(*, publication_id: int, actor: AbstractBaseUser) -> DocumentPublication:
    """A failed publication, tried again by an approver (after the cause was fixed in Trading Grid)."""
    publication = DocumentPublication.objects.select_for_update().select_related("version__document").get(
        pk=publication_id
    )
    _require(actor, APPROVE_PERMISSION, "Only members of “Approvers” can retry a publication.")
    if publication.status != PublicationStatus.FAILED:
        state = publication.get_status_display().lower()
        raise TransitionError(f"The publication is {state}: only a failed one is retried.")
    if publication.version.status != V.APPROVED:
        raise TransitionError(f"{_name(publication.version)} is no longer the approved version: nothing to publish.")
    DocumentPublication.objects.filter(pk=publication.pk).update(
        status=PublicationStatus.PENDING, queued_at=timezone.now(), last_error="", next_attempt_at=None
    )
    history_record(obj=publication.version, message="Publication to Trading Grid retried.", user=actor)
    _enqueue_publication(publication.pk)
    return _reload(publication)


def _tg_client(client):
    if client is not None:
        return client
    from connectors.tradinggrid.client import get_client

    return get_client()


# --- distribution emails ------------------------------------------------------------------------------------


def document_link_template(version: DocumentVersion) -> str:
    """The link distribution emails carry: Mailchimp puts each reader's key in place of the merge tag."""
    return f"{settings.PARTNERLINK_PUBLIC_URL}/d/{version.pk}/{LINK_MERGE_TAG}"


def distribution_default_html(version: DocumentVersion) -> str:
    document = version.document
    link = document_link_template(version)
    summary = escape(version.change_summary).replace("\n", "<br>")
    return (
        f"<h1>{escape(document.title)}: version {escape(version.version)}</h1>\n"
        f"<p>{summary}</p>\n"
        f'<p><a href="{link}">Read the {escape(document.get_kind_display().lower())} and confirm receipt in the '
        "community</a></p>\n"
        "<p>Please confirm that you have received it on the community page.</p>"
    )


@transaction.atomic
def document_distribution_create(
    *,
    version_id: int,
    actor: AbstractBaseUser,
    audience: MailchimpAudience,
    segments: Iterable[Segment],
    subject: str,
    from_name: str,
    reply_to: str,
    preview_text: str = "",
    html_body: str = "",
) -> DocumentDistribution:
    """A policy-update communication (draft) that sends the approved version to the segments' contacts. It
    then goes through the communications' own approval; its link must keep the reader's key."""
    version = DocumentVersion.objects.select_related("document").get(pk=version_id)
    if version.status != V.APPROVED:
        raise TransitionError(
            f"{_name(version)} is {version.get_status_display().lower()}: only the approved version is distributed."
        )
    html_body = html_body.strip() or distribution_default_html(version)
    problem = distribution_body_problem(version, html_body)
    if problem:
        raise ValidationError({"html_body": problem})
    communication = services.communication_create(
        author=actor,
        kind=CommunicationKind.POLICY_UPDATE,
        audience=audience,
        segments=segments,
        subject=subject,
        from_name=from_name,
        reply_to=reply_to,
        preview_text=preview_text,
        html_body=html_body,
    )
    distribution = DocumentDistribution.objects.create(communication=communication, version=version, created_by=actor)
    history_record(obj=version, message=f"Distribution email created: communication #{communication.pk}.", user=actor)
    return distribution


def distribution_body_problem(version: DocumentVersion, html_body: str) -> str:
    link = document_link_template(version)
    if link not in html_body:
        return f"The email must link to {link} (Mailchimp fills in each reader's key), or clicks can't be counted."
    return ""


def distribution_send_preflight(communication: Communication, client) -> str:
    """Hook of campaigns.services.communication_send_execute: for a distribution, right before the send, check
    that its version is still the approved one and in Trading Grid, record a recipient row per address the
    email goes to, and make sure every one of them has its link key in Mailchimp. Returns a refusal, or ""."""
    distribution = (
        DocumentDistribution.objects.filter(communication_id=communication.pk)
        .select_related("version__document", "version__publication")
        .first()
    )
    if distribution is None:
        return ""
    version = distribution.version
    if version.status != V.APPROVED:
        newer = DocumentVersion.objects.filter(document_id=version.document_id, status=V.APPROVED).first()
        hint = f" by version {newer.version}: distribute that one instead" if newer else ""
        return f"{_name(version)} was {version.get_status_display().lower()}{hint}; nothing was sent."
    publication = getattr(version, "publication", None)
    if publication is None or publication.status in (PublicationStatus.FAILED, PublicationStatus.CANCELLED):
        why = publication.last_error if publication else "it was never published"
        return f"{_name(version)} is not in the Trading Grid community ({why}); retry its publication first."
    if publication.status != PublicationStatus.PUBLISHED:
        raise DistributionNotReady(f"{_name(version)} is still being published to Trading Grid.")
    bodies = [communication.html_body, *map(str, (communication.template_sections or {}).values())]
    if not any(document_link_template(version) in body for body in bodies):
        return distribution_body_problem(version, "")
    emails = _recipient_emails(communication)
    _record_recipients(distribution, emails)
    _push_link_keys(client, communication.audience, emails)
    DocumentDistribution.objects.filter(pk=distribution.pk).update(links_ready_at=timezone.now())
    return ""


def _recipient_emails(communication: Communication) -> list[str]:
    """The addresses the communication's combined static segment gets (what _push_draft sends to)."""
    synced = [s.pk for s in communication.segments.all() if s.mailchimp_segment_id is not None]
    return sorted(set(SegmentMember.objects.filter(segment_id__in=synced).values_list("email", flat=True)))


def _record_recipients(distribution: DocumentDistribution, emails: list[str]) -> None:
    """A recipient row per address (unique per version: a second distribution of the version keeps the first
    row), with the first contact that has the address, for its partner."""
    for chunk in _chunks(emails, 1000):
        first_contact: dict[str, tuple[int, int]] = {}
        for contact_id, partner_id, email in (
            Contact.objects.filter(email__in=chunk).order_by("pk").values_list("pk", "partner_id", "email")
        ):
            first_contact.setdefault(email, (contact_id, partner_id))
        rows = [
            DocumentRecipient(
                version_id=distribution.version_id,
                distribution=distribution,
                email=email,
                contact_id=first_contact.get(email, (None, None))[0],
                partner_id=first_contact.get(email, (None, None))[1],
            )
            for email in chunk
        ]
        DocumentRecipient.objects.bulk_create(rows, ignore_conflicts=True)


def _push_link_keys(client, audience: MailchimpAudience, emails: list[str]) -> None:
    """Every recipient's key into its member's DOCKEY merge field, once per address and audience (the key never
    changes, so later distributions only push keys for new addresses)."""
    from connectors.mailchimp.payloads import MemberUpsert, MergeFieldSpec

    unpushed: list[tuple[str, str]] = []
    for chunk in _chunks(emails, 1000):
        keys = DocumentLinkKey.objects.filter(audience=audience, email__in=chunk)
        existing = set(keys.values_list("email", flat=True))
        DocumentLinkKey.objects.bulk_create(
            [
                DocumentLinkKey(audience=audience, email=email, key=secrets.token_urlsafe(24))
                for email in chunk
                if email not in existing
            ],
            ignore_conflicts=True,
        )
        unpushed += keys.filter(pushed_at__isnull=True).values_list("email", "key")
    if not unpushed:
        return
    client.ensure_merge_fields(
        list_id=audience.list_id, fields=[MergeFieldSpec(tag=LINK_KEY_TAG, name="Document link key")]
    )
    for chunk in _chunks(unpushed, BULK_MEMBERS):
        members = [
            # transactional if new: pushing a key never subscribes anyone (the segment's members exist already)
            MemberUpsert(email=email, merge_fields={LINK_KEY_TAG: key}, status_if_new="transactional")
            for email, key in chunk
        ]
        result = client.bulk_upsert_members(list_id=audience.list_id, members=members)
        failed = {error.email: error.error or error.field_message for error in result.errors}
        DocumentLinkKey.objects.filter(audience=audience, email__in=[e for e, _ in chunk if e not in failed]).update(
            pushed_at=timezone.now(), push_error=""
        )
        for email, error in failed.items():
            DocumentLinkKey.objects.filter(audience=audience, email=email).update(push_error=str(error)[:500])


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- clicks -------------------------------------------------------------------------------------------------


def document_link_follow(*, version_id: int, key: str = "", now: datetime | None = None) -> str | None:
    """A reader followed a distribution link: record the click on their recipient row (when the key is theirs
    and they received this version) and return where to send them — the document's community page. None: no
    such version, or not in the community yet."""
    row = (
        DocumentVersion.objects.filter(pk=version_id)
        .values_list("document__tg_url", "status")
        .first()
    )
    if row is None or not row[0]:
        return None
    if key:
        email = DocumentLinkKey.objects.filter(key=key).values_list("email", flat=True).first()
        if email:
            now = now or timezone.now()
            recipients = DocumentRecipient.objects.filter(version_id=version_id, email=email)
            recipients.filter(first_clicked_at__isnull=True).update(first_clicked_at=now)
            recipients.update(last_clicked_at=now, click_count=F("click_count") + 1)
    return row[0]


# --- acknowledgements ---------------------------------------------------------------------------------------


@dataclass
class AcknowledgementResult:
    recorded: bool = False
    matched: bool = True
    message: str = ""


@transaction.atomic
def document_acknowledgement_record(*, tg_document_id: str, acknowledgement, source: str) -> AcknowledgementResult:
    """Store one confirmation from Trading Grid (a `TGAcknowledgement`) once per (version, partner, email); it
    stops that address's reminders for the version. A duplicate changes nothing."""
    ack = acknowledgement
    document = PolicyDocument.objects.filter(tg_document_id=tg_document_id).first()
    if document is None:
        return _unknown_document(tg_document_id)
    version = DocumentVersion.objects.filter(document=document, version=ack.version).first()
    if version is None:
        return AcknowledgementResult(matched=False, message=f"“{document.title}” has no version {ack.version!r} here.")
    if not ack.contact_email or not ack.partner_company_id:
        return AcknowledgementResult(matched=False, message="The acknowledgement names no contact or no partner.")
    partner = TradingPartner.objects.filter(tg_company_id=ack.partner_company_id).first()
    contact = Contact.objects.filter(partner=partner, email=ack.contact_email).first() if partner else None
    when = ack.acknowledged_at or timezone.now()
    try:
        with transaction.atomic():
            DocumentAcknowledgement.objects.create(
                version=version,
                partner_company_id=ack.partner_company_id,
                email=ack.contact_email,
                partner=partner,
                contact=contact,
                acknowledged_at=when,
                source=source,
                raw=_jsonable(dict(ack.raw)),
            )
    except IntegrityError:
        return AcknowledgementResult(
            message=f"{ack.contact_email} ({ack.partner_company_id}) had already confirmed {_name(version)}."
        )
    stop = f"Confirmed receipt on {when:%Y-%m-%d}."
    recipients = DocumentRecipient.objects.filter(version=version, email=ack.contact_email)
    recipients.filter(acknowledged_at__isnull=True).update(
        acknowledged_at=when, next_reminder_at=None, reminders_stopped=stop
    )
    DocumentReminder.objects.filter(
        recipient__in=recipients, status=ReminderStatus.PENDING
    ).update(status=ReminderStatus.CANCELLED, reason=stop, next_attempt_at=None)
    return AcknowledgementResult(
        recorded=True, message=f"{ack.contact_email} ({ack.partner_company_id}) confirmed {_name(version)}."
    )


def _unknown_document(tg_document_id: str) -> AcknowledgementResult:
    return AcknowledgementResult(matched=False, message=f"No document here has the Trading Grid id {tg_document_id}.")


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def document_acknowledgement_sync_from_tg(
    *, tg_document_id: str, partner_company_id: str, email: str, version: str, updated_since: str | None = None,
    client=None,
) -> AcknowledgementResult:
    """A webhook is a hint: read the document's acknowledgements from Trading Grid (from the event's moment) and
    record the one it names as Trading Grid holds it."""
    from connectors.tradinggrid.payloads import acknowledgement_from_tg, normalize_email

    if not PolicyDocument.objects.filter(tg_document_id=tg_document_id).exists():
        return _unknown_document(tg_document_id)
    client = _tg_client(client)
    wanted = (partner_company_id.strip().upper(), normalize_email(email) or "", str(version))
    for record in client.iter_acknowledgements(document_id=tg_document_id, updated_since=updated_since or None):
        ack = acknowledgement_from_tg(record, document_id=tg_document_id)
        if (ack.partner_company_id or "", ack.contact_email or "", ack.version) == wanted:
            return document_acknowledgement_record(
                tg_document_id=tg_document_id, acknowledgement=ack, source=AcknowledgementSource.WEBHOOK
            )
    return AcknowledgementResult(
        matched=False, message=f"Trading Grid lists no acknowledgement of {tg_document_id} v{version} by {email}."
    )


@dataclass
class AcknowledgementPoll:
    documents: int = 0
    seen: int = 0
    recorded: int = 0
    unmatched: int = 0
    failed: int = 0
    skipped: bool = False
    cursors: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.skipped:
            return "acknowledgements: skipped (a poll is already running)"
        return (
            f"acknowledgements: documents={self.documents} seen={self.seen} recorded={self.recorded} "
            f"unmatched={self.unmatched} failed={self.failed}"
        )


def document_acknowledgements_poll_from_tg(*, client=None) -> AcknowledgementPoll:
    """Beat: per document in Trading Grid, the acknowledgements changed since its cursor (`updated_since`,
    inclusive: the boundary record comes again and changes nothing). Catches missed webhooks."""
    from connectors.tradinggrid.errors import TradingGridAuthError, TradingGridNotFoundError, TradingGridTransientError
    from connectors.tradinggrid.payloads import acknowledgement_from_tg
    from partners.tg_sync import sync_cursor_advance, sync_cursor_get

    result = AcknowledgementPoll()
    lock = "partnerlink:poll-lock:tradinggrid:document-acknowledgements"
    if not cache.add(lock, "1", timeout=settings.CELERY_TASK_TIME_LIMIT):
        result.skipped = True
        return result
    try:
        client = _tg_client(client)
        tg_ids = PolicyDocument.objects.exclude(tg_document_id="").values_list("tg_document_id", flat=True)
        for tg_document_id in list(tg_ids):
            result.documents += 1
            stream = ACK_STREAM_PREFIX + tg_document_id
            since = sync_cursor_get(stream=stream) or None
            newest = since
            try:
                for record in client.iter_acknowledgements(document_id=tg_document_id, updated_since=since):
                    result.seen += 1
                    try:
                        outcome = document_acknowledgement_record(
                            tg_document_id=tg_document_id,
                            acknowledgement=acknowledgement_from_tg(record, document_id=tg_document_id),
                            source=AcknowledgementSource.POLL,
                        )
                    except Exception:  # one odd record must not stop the others
                        logger.exception("acknowledgement of %s could not be recorded: %r", tg_document_id, record)
                        result.failed += 1
                        continue
                    result.recorded += outcome.recorded
                    result.unmatched += not outcome.matched
                    if record.get("updated_at"):
                        newest = record["updated_at"]  # oldest change first
            except TradingGridNotFoundError:
                logger.warning("Trading Grid has no document %s (any more); its acknowledgements are skipped.",
                               tg_document_id)
                result.failed += 1
            except (TradingGridTransientError, TradingGridAuthError):
                if newest and newest != since:
                    sync_cursor_advance(stream=stream, value=newest)
                raise
            if newest:
                result.cursors[tg_document_id] = sync_cursor_advance(stream=stream, value=newest)
    finally:
        cache.delete(lock)
    logger.info("%s", result)
    return result


# --- reminders ----------------------------------------------------------------------------------------------


@dataclass
class ReminderSweep:
    scheduled: int = 0
    reminders: int = 0
    skipped: int = 0
    alerts: int = 0

    def __str__(self) -> str:
        return (
            f"document reminders: scheduled={self.scheduled} reminders={self.reminders} skipped={self.skipped} "
            f"alerts={self.alerts}"
        )


def document_reminders_sweep(*, now: datetime | None = None) -> ReminderSweep:
    """Beat: start the reminder schedule of distributions Mailchimp has sent, then take every due stage once:
    a reminder ledger row (1…max_reminders) or, after the last, the alert row; the rows are enqueued on commit.
    Safe to run twice and on several workers (rows locked with skip_locked, ledger rows unique)."""
    now = now or timezone.now()
    result = ReminderSweep()
    result.scheduled = _start_schedules(now)
    while True:
        with transaction.atomic():
            due = list(
                DocumentRecipient.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("version__document")
                .filter(next_reminder_at__lte=now, acknowledged_at__isnull=True, version__status=V.APPROVED)
                .order_by("next_reminder_at", "pk")[:SWEEP_BATCH]
            )
            if not due:
                break
            _take_stages(due, now, result)
    return result


def _start_schedules(now: datetime) -> int:
    started = 0
    waiting = DocumentDistribution.objects.filter(
        reminders_started_at__isnull=True,
        communication__state=CommunicationState.SENT,
        communication__sent_at__isnull=False,
    ).select_related("communication", "version__document")
    for distribution in waiting:
        with transaction.atomic():
            locked = DocumentDistribution.objects.select_for_update(skip_locked=True).filter(
                pk=distribution.pk, reminders_started_at__isnull=True
            )
            if not locked.exists():
                continue
            if distribution.version.status == V.APPROVED:
                first = distribution.communication.sent_at + timedelta(
                    days=distribution.version.document.remind_after_days
                )
                started += DocumentRecipient.objects.filter(
                    distribution=distribution,
                    acknowledged_at__isnull=True,
                    next_reminder_at__isnull=True,
                    reminders_sent=0,
                    reminders_stopped="",
                ).update(next_reminder_at=first)
            locked.update(reminders_started_at=now)
    return started


def _opted_out(emails: Iterable[str]) -> dict[str, str]:
    reasons: dict[str, str] = {}
    for email, status in Contact.objects.filter(email__in=list(emails)).filter(
        Q(marketing_status__in=OPTED_OUT) | Q(email_invalid=True)
    ).values_list("email", "marketing_status"):
        reasons[email] = (
            f"{email} is {status} in Mailchimp; Partnerlink never reminds opted-out or cleaned addresses."
            if status in OPTED_OUT
            else f"Mailchimp cleaned {email} (it bounced); it is never reminded."
        )
    return reasons


def _take_stages(due: list[DocumentRecipient], now: datetime, result: ReminderSweep) -> None:
    opted_out = _opted_out(r.email for r in due)
    rows = []
    for recipient in due:
        document = recipient.version.document
        stage = recipient.reminders_sent + 1
        row = DocumentReminder(
            recipient=recipient, version_id=recipient.version_id, stage=stage, due_at=recipient.next_reminder_at
        )
        if stage <= document.max_reminders:
            row.kind = ReminderKind.REMINDER
            if recipient.email in opted_out:
                row.status, row.reason = ReminderStatus.SKIPPED, opted_out[recipient.email]
                result.skipped += 1
            elif not document.has_reminder_action:
                row.status = ReminderStatus.SKIPPED
                row.reason = "The document has no Mailchimp reminder (tag or journey step) configured."
                result.skipped += 1
            else:
                result.reminders += 1
            recipient.reminders_sent = stage
            recipient.next_reminder_at = now + timedelta(days=document.remind_after_days)
        else:
            row.kind = ReminderKind.ALERT
            result.alerts += 1
            recipient.next_reminder_at = None
            recipient.reminders_stopped = f"No confirmation after {recipient.reminders_sent} reminder(s): alerted."
        rows.append(row)
    DocumentReminder.objects.bulk_create(rows, ignore_conflicts=True)
    DocumentRecipient.objects.bulk_update(due, ["reminders_sent", "next_reminder_at", "reminders_stopped"])
    ids = [r.pk for r in due]
    transaction.on_commit(lambda: _enqueue_new_stages(ids))


def _enqueue_new_stages(recipient_ids: list[int]) -> None:
    from campaigns.tasks import document_alert_dispatch_task, document_reminder_dispatch_task

    pending = DocumentReminder.objects.filter(
        recipient_id__in=recipient_ids, status=ReminderStatus.PENDING, attempts=0
    ).values_list("pk", "kind", "version_id", "recipient__partner_id")
    alerts = set()
    for reminder_id, kind, version_id, partner_id in pending:
        if kind == ReminderKind.REMINDER:
            document_reminder_dispatch_task.delay(reminder_id)
        else:
            alerts.add((version_id, partner_id))
    for version_id, partner_id in sorted(alerts, key=lambda pair: (pair[0], pair[1] or 0)):
        document_alert_dispatch_task.delay(version_id, partner_id)


def _claim_reminder(reminder_id: int) -> DocumentReminder | None:
    now = timezone.now()
    with transaction.atomic():
        row = (
            DocumentReminder.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related(
                "recipient__distribution__communication__audience", "version__document", "recipient__contact"
            )
            .filter(pk=reminder_id, status=ReminderStatus.PENDING, kind=ReminderKind.REMINDER)
            .first()
        )
        if row is None or (row.next_attempt_at and row.next_attempt_at > now):
            return None
        row.attempts += 1
        row.next_attempt_at = now + LEASE
        row.save(update_fields=["attempts", "next_attempt_at"])
        return row


def _save_reminder(row: DocumentReminder, **fields) -> None:
    for name, value in fields.items():
        setattr(row, name, value)
    DocumentReminder.objects.filter(pk=row.pk).update(**fields)


def _stop_reason(row: DocumentReminder) -> tuple[str, str] | None:
    """(status, reason) when the stage must not happen any more."""
    recipient = DocumentRecipient.objects.get(pk=row.recipient_id)
    if recipient.acknowledged_at:
        return ReminderStatus.CANCELLED, f"Confirmed receipt on {recipient.acknowledged_at:%Y-%m-%d}."
    version = DocumentVersion.objects.get(pk=row.version_id)
    if version.status != V.APPROVED:
        return ReminderStatus.CANCELLED, f"Version {version.version} is {version.get_status_display().lower()}."
    reason = _opted_out([recipient.email]).get(recipient.email)
    if reason:
        return ReminderStatus.SKIPPED, reason
    return None


def document_reminder_dispatch(*, reminder_id: int, client=None) -> DocumentReminder | None:
    """Remind one contact through Mailchimp: the tag removed and set again (the automation on the tag fires)
    and/or the journey step triggered, saving progress after each call. Transient errors release the row and
    propagate for the task's retry; a refusal marks it failed with Mailchimp's reason."""
    from connectors.mailchimp.errors import MailchimpAPIError, MailchimpTransientError

    row = _claim_reminder(reminder_id)
    if row is None:
        return None
    stop = _stop_reason(row)
    if stop:
        _save_reminder(row, status=stop[0], reason=stop[1], next_attempt_at=None)
        return row
    document = row.version.document
    list_id = row.recipient.distribution.communication.audience.list_id
    email = row.recipient.email
    client = client or _mailchimp_client()
    try:
        if row.progress < ReminderProgress.CHECKED:
            member = client.get_member(list_id=list_id, email=email)
            status = str((member or {}).get("status") or "")
            if status != "subscribed":
                reason = (
                    f"{email} is not in the Mailchimp audience."
                    if member is None
                    else f"Mailchimp holds {email} as {status}; only subscribed members are reminded."
                )
                _save_reminder(row, status=ReminderStatus.SKIPPED, reason=reason, next_attempt_at=None)
                return row
            _save_reminder(row, progress=ReminderProgress.CHECKED)
        if document.reminder_tag:
            if row.progress < ReminderProgress.TAG_CLEARED:
                client.update_member_tags(list_id=list_id, email=email, inactive=[document.reminder_tag])
                _save_reminder(row, progress=ReminderProgress.TAG_CLEARED)
            if row.progress < ReminderProgress.TAG_SET:
                # is_syncing False: the tag is meant to fire the automation that sends the reminder.
                client.update_member_tags(
                    list_id=list_id, email=email, active=[document.reminder_tag], is_syncing=False
                )
                _save_reminder(row, progress=ReminderProgress.TAG_SET)
        if document.reminder_journey_id and row.progress < ReminderProgress.JOURNEY:
            client.trigger_journey_step(
                journey_id=document.reminder_journey_id, step_id=document.reminder_step_id, email=email
            )
    except MailchimpTransientError:
        _save_reminder(row, next_attempt_at=timezone.now())  # released: the task's retry or the relay takes it
        raise
    except MailchimpAPIError as exc:
        _save_reminder(row, status=ReminderStatus.FAILED, reason=services.mailchimp_refusal(exc), next_attempt_at=None)
        return row
    _save_reminder(
        row,
        progress=ReminderProgress.JOURNEY,
        status=ReminderStatus.SENT,
        sent_at=timezone.now(),
        next_attempt_at=None,
        reason="",
    )
    return row


def _mailchimp_client():
    from connectors.mailchimp.client import get_client

    return get_client()


ALERT_ERRORS = (smtplib.SMTPException, OSError)


def document_alert_dispatch(*, version_id: int, partner_id: int | None) -> int:
    """Alert the partner manager (else the document's owner) once about the partner's contacts who did not
    confirm the version after their last reminder: one email, one line in the partner's history. Returns how
    many contacts the alert named. SMTP failures release the rows and propagate for the task's retry."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            DocumentReminder.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                version_id=version_id,
                recipient__partner_id=partner_id,
                kind=ReminderKind.ALERT,
                status=ReminderStatus.PENDING,
            )
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .select_related("recipient__contact", "recipient__partner__partner_manager", "version__document__owner")
        )
        for row in rows:
            row.attempts += 1
        DocumentReminder.objects.filter(pk__in=[r.pk for r in rows]).update(
            attempts=F("attempts") + 1, next_attempt_at=now + LEASE
        )
    live = []
    for row in sorted(rows, key=lambda row: row.recipient.email):
        stop = _stop_reason(row)
        if stop and stop[0] == ReminderStatus.CANCELLED:
            _save_reminder(row, status=stop[0], reason=stop[1], next_attempt_at=None)
        else:
            live.append((row, stop[1] if stop else ""))
    if not live:
        return 0
    version = live[0][0].version
    document = version.document
    partner = live[0][0].recipient.partner
    manager = partner.partner_manager if partner else None
    to = manager if manager is not None and manager.email else document.owner
    if to is None or not to.email:
        reason = "Nobody to alert: the partner has no partner manager with an email address and the document no owner."
        DocumentReminder.objects.filter(pk__in=[r.pk for r, _ in live]).update(
            status=ReminderStatus.FAILED, reason=reason, next_attempt_at=None
        )
        return 0
    lines = []
    for row, note in live:
        recipient = row.recipient
        name = recipient.contact.full_name if recipient.contact else ""
        label = f"{name} <{recipient.email}>" if name else recipient.email
        clicked = "opened the link" if recipient.first_clicked_at else "never opened the link"
        extra = f"; {note}" if note else ""
        lines.append(f"- {label}: {clicked}, {recipient.reminders_sent} reminder(s){extra}")
    who = partner.name if partner else "contacts without a partner in Partnerlink"
    subject = f"Not confirmed: {document.title} v{version.version} ({who})"
    body = (
        f"{len(live)} contact(s) of {who} have not confirmed receipt of “{document.title}” version "
        f"{version.version} after their last reminder:\n\n" + "\n".join(lines) + "\n\n"
        f"Please follow up with them directly.\nCoverage: {settings.PARTNERLINK_PUBLIC_URL}"
        f"{reverse('admin:campaigns_documentversion_coverage', args=[version.pk])}\n"
    )
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [to.email])
    except ALERT_ERRORS:
        DocumentReminder.objects.filter(pk__in=[r.pk for r, _ in live]).update(next_attempt_at=timezone.now())
        raise
    with transaction.atomic():
        DocumentReminder.objects.filter(pk__in=[r.pk for r, _ in live]).update(
            status=ReminderStatus.SENT, sent_at=timezone.now(), next_attempt_at=None, reason=f"Alerted {to.email}."
        )
        if partner is not None:
            emails = ", ".join(row.recipient.email for row, _ in live)
            history_record(
                obj=partner,
                message=f"Did not confirm receipt of “{document.title}” version {version.version} after the last "
                f"reminder: {emails}. {to.email} was alerted.",
            )
    return len(live)


def document_reminders_relay(*, now: datetime | None = None) -> int:
    """Beat: re-enqueue pending reminder and alert rows whose task was lost or whose worker died, and pending
    publications whose task was lost."""
    from campaigns.tasks import document_alert_dispatch_task, document_reminder_dispatch_task

    now = now or timezone.now()
    stuck = DocumentReminder.objects.filter(status=ReminderStatus.PENDING).filter(
        Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True, created_at__lt=now - UNCLAIMED_GRACE)
    )
    count, alerts = 0, set()
    for reminder_id, kind, version_id, partner_id in stuck.values_list(
        "pk", "kind", "version_id", "recipient__partner_id"
    )[:5000]:
        count += 1
        if kind == ReminderKind.REMINDER:
            document_reminder_dispatch_task.delay(reminder_id)
        else:
            alerts.add((version_id, partner_id))
    for version_id, partner_id in alerts:
        document_alert_dispatch_task.delay(version_id, partner_id)
    publications = DocumentPublication.objects.filter(
        status=PublicationStatus.PENDING, queued_at__lt=now - UNCLAIMED_GRACE
    ).filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=now - UNCLAIMED_GRACE))
    publications = publications.filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now))
    for publication_id in publications.values_list("pk", flat=True):
        with transaction.atomic():
            DocumentPublication.objects.filter(pk=publication_id).update(queued_at=now)
            _enqueue_publication(publication_id)
        count += 1
    return count

