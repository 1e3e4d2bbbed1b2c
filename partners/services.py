"""Writes about partners. Every function here is keyword-only and owns its transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import BinaryIO

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from partners.demo import DEMO_EPOCH
from partners.imports import ImportResult, PartnerListImport, ProgressCallback
from partners.models import (
    AudiencePurpose,
    CommunityIssue,
    Contact,
    ContactSource,
    ImportStatus,
    MailchimpAudience,
    MarketingStatus,
    PartnerImport,
    ProductLine,
    SyncKind,
    SyncRun,
    SyncStatus,
    TradingAddress,
    TradingPartner,
)
from partners.selectors import user_is_administrator

logger = logging.getLogger(__name__)

PREVIEW_ROWS_KEPT = 5000


def partner_import_file(
    *,
    stream: BinaryIO,
    actor: AbstractBaseUser | None = None,
    default_manager: AbstractBaseUser | None = None,
    dry_run: bool = False,
    source_label: str = "a CSV file",
    preview_limit: int = 0,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Import one partner list (see partners/imports.py). Nothing is written when any row has an error,
    nor on a dry run. A partner manager who is not an administrator may only change their own partners."""
    restrict_to = None
    if actor is not None and not user_is_administrator(actor):
        restrict_to = actor.pk
    return PartnerListImport(
        stream,
        actor_id=actor.pk if actor is not None else None,
        default_manager_id=default_manager.pk if default_manager is not None else None,
        restrict_to_manager_id=restrict_to,
        dry_run=dry_run,
        source_label=source_label,
        preview_limit=preview_limit,
        progress=progress,
    ).run()


def _count_lines(upload: UploadedFile) -> int:
    lines = 0
    for chunk in upload.chunks():
        lines += chunk.count(b"\n")
    upload.seek(0)
    return lines


def partner_import_create(*, upload: UploadedFile, user: AbstractBaseUser) -> PartnerImport:
    """Store an uploaded partner list and check it: in the request for small files, in a Celery job for
    files over PARTNER_IMPORT_SYNC_MAX_ROWS rows."""
    if upload.size > settings.PARTNER_IMPORT_MAX_BYTES:
        raise ValueError(
            f"The file is {upload.size // (1024 * 1024)} MiB; at most "
            f"{settings.PARTNER_IMPORT_MAX_BYTES // (1024 * 1024)} MiB can be imported."
        )
    background = _count_lines(upload) > settings.PARTNER_IMPORT_SYNC_MAX_ROWS
    partner_import = PartnerImport.objects.create(
        file=upload,
        original_name=upload.name[:255],
        uploaded_by=user,
        runs_in_background=background,
        status=ImportStatus.PREVIEWING if background else ImportStatus.UPLOADED,
        queued_at=timezone.now() if background else None,
    )
    if background:
        _enqueue_import_run(partner_import)
    else:
        partner_import_run(partner_import_id=partner_import.pk, dry_run=True)
        partner_import.refresh_from_db()
    return partner_import


def partner_import_confirm(*, partner_import: PartnerImport, user: AbstractBaseUser) -> PartnerImport:
    """Apply a checked import. Refused unless its check found no error and it was not applied yet."""
    with transaction.atomic():
        locked = PartnerImport.objects.select_for_update().get(pk=partner_import.pk)
        if locked.status != ImportStatus.PREVIEWED:
            raise ValueError(f"Import #{locked.pk} is {locked.get_status_display().lower()}; it cannot be confirmed.")
        if locked.uploaded_by_id != user.pk and not user_is_administrator(user):
            raise PermissionError("Only the person who uploaded the file or an administrator can confirm it.")
        locked.status = ImportStatus.IMPORTING
        locked.processed_rows = 0
        locked.started_at = None
        locked.queued_at = timezone.now() if locked.runs_in_background else None
        locked.save(update_fields=["status", "processed_rows", "started_at", "queued_at"])
        if locked.runs_in_background:
            _enqueue_import_run(locked)
    if not locked.runs_in_background:
        partner_import_run(partner_import_id=locked.pk, dry_run=False)
        locked.refresh_from_db()
    return locked


def _enqueue_import_run(partner_import: PartnerImport) -> None:
    from partners.tasks import partner_import_run_task

    dry_run = partner_import.status == ImportStatus.PREVIEWING
    partner_import_run_task.delay_on_commit(partner_import.pk, dry_run)


def partner_import_relay_stuck(*, now=None, grace: timedelta = timedelta(minutes=2)) -> int:
    """Re-enqueue background imports whose job never started (message lost with the broker) or whose
    worker died; the run's own claim makes a duplicate harmless. Returns how many were re-enqueued."""
    now = now or timezone.now()
    abandoned = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    stuck = PartnerImport.objects.filter(
        runs_in_background=True, status__in=(ImportStatus.PREVIEWING, ImportStatus.IMPORTING)
    ).filter(Q(started_at__isnull=True, queued_at__lt=now - grace) | Q(started_at__lt=abandoned))
    count = 0
    for partner_import in stuck:
        with transaction.atomic():
            PartnerImport.objects.filter(pk=partner_import.pk).update(queued_at=now)
            _enqueue_import_run(partner_import)
        count += 1
    return count


def partner_import_run(*, partner_import_id: int, dry_run: bool) -> PartnerImport | None:
    """Check (dry_run) or apply one stored import, keeping progress and the outcome on its record.
    Safe to call twice: a run only starts from the state that leads to it."""
    expected = ImportStatus.PREVIEWING if dry_run else ImportStatus.IMPORTING
    now = timezone.now()
    # Claim the run: a duplicate delivery finds it claimed; a run whose worker died can be taken over once
    # the hard time limit has passed.
    abandoned = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    claimed = (
        PartnerImport.objects.filter(pk=partner_import_id, status__in=(expected, ImportStatus.UPLOADED))
        .filter(Q(started_at__isnull=True) | Q(started_at__lt=abandoned))
        .update(status=expected, started_at=now)
    )
    partner_import = PartnerImport.objects.select_related("uploaded_by").filter(pk=partner_import_id).first()
    if partner_import is None:
        logger.warning("import %s no longer exists; nothing to do", partner_import_id)
        return None
    if not claimed:
        logger.info("import %s is %s and claimed; nothing to do", partner_import_id, partner_import.status)
        return partner_import

    def progress(phase: str, done: int, total: int) -> None:
        PartnerImport.objects.filter(pk=partner_import_id).update(processed_rows=done, total_rows=total or done)

    user = partner_import.uploaded_by
    try:
        with partner_import.file.open("rb") as stream:
            result = partner_import_file(
                stream=stream,
                actor=user,
                default_manager=user,
                dry_run=dry_run,
                source_label=f"{partner_import.original_name} (import #{partner_import_id})",
                preview_limit=PREVIEW_ROWS_KEPT,
                progress=progress,
            )
    except Exception as exc:
        logger.exception("import %s failed", partner_import_id)
        PartnerImport.objects.filter(pk=partner_import_id).update(
            status=ImportStatus.FAILED, failure=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        raise
    if not result.ok:
        status = ImportStatus.FAILED
    elif dry_run:
        status = ImportStatus.PREVIEWED
    else:
        status = ImportStatus.DONE
    PartnerImport.objects.filter(pk=partner_import_id).update(
        status=status,
        total_rows=result.total_rows,
        processed_rows=result.total_rows,
        created=result.created,
        updated=result.updated,
        unchanged=result.unchanged,
        error_count=result.error_rows,
        errors=[problem.as_dict() for problem in result.problems],
        preview_rows=[outcome.as_dict() for outcome in result.preview],
        notices=result.notices,
        finished_at=timezone.now(),
    )
    partner_import.refresh_from_db()
    return partner_import


@transaction.atomic
def partners_seed_demo(*, records: list[dict], managers: list[AbstractBaseUser], now=None) -> int:
    """Create the demo partners that don't exist yet (by BUID), with contacts, addresses, product lines and
    issue history; partners already present are left as they are. Returns how many were created."""
    now = now or timezone.now()
    shift = now - DEMO_EPOCH
    existing = set(
        TradingPartner.objects.filter(tg_company_id__in=[r["tg_company_id"] for r in records]).values_list(
            "tg_company_id", flat=True
        )
    )
    new_records = [r for r in records if r["tg_company_id"] not in existing]
    if not new_records:
        return 0
    line_names = sorted({name for r in new_records for name in r["product_lines"]})
    ProductLine.objects.bulk_create([ProductLine(name=name) for name in line_names], ignore_conflicts=True)
    line_ids = dict(ProductLine.objects.filter(name__in=line_names).values_list("name", "pk"))
    partners = []
    for index, record in enumerate(new_records):
        partners.append(
            TradingPartner(
                tg_company_id=record["tg_company_id"],
                name=record["name"],
                legal_name=record["legal_name"],
                partner_type=record["partner_type"],
                region=record["region"],
                country_code=record["country_code"],
                tier=record["tier"],
                onboarding_status=record["onboarding_status"],
                compliance_status=record["compliance_status"],
                partner_manager=managers[index % len(managers)] if managers else None,
            )
        )
    TradingPartner.objects.bulk_create(partners)
    ids = dict(
        TradingPartner.objects.filter(tg_company_id__in=[p.tg_company_id for p in partners]).values_list(
            "tg_company_id", "pk"
        )
    )
    links = TradingPartner.product_lines.through
    links.objects.bulk_create(
        [
            links(tradingpartner_id=ids[r["tg_company_id"]], productline_id=line_ids[name])
            for r in new_records
            for name in r["product_lines"]
        ]
    )
    TradingAddress.objects.bulk_create(
        [
            TradingAddress(partner_id=ids[r["tg_company_id"]], address=address, is_primary=position == 0)
            for r in new_records
            for position, address in enumerate(r["trading_addresses"])
        ],
        ignore_conflicts=True,
    )
    Contact.objects.bulk_create(
        [
            Contact(partner_id=ids[r["tg_company_id"]], source=ContactSource.DEMO, **contact)
            for r in new_records
            for contact in r["contacts"]
        ]
    )

    def shifted(value):
        return datetime.fromisoformat(value) + shift if value else None

    CommunityIssue.objects.bulk_create(
        [
            CommunityIssue(
                tg_issue_id=issue["id"],
                partner_id=ids[r["tg_company_id"]],
                category=issue["category"],
                reason_code=issue["reason_code"],
                severity=issue["severity"],
                status=issue["status"],
                title=issue["title"],
                po_number=issue["po_number"],
                asn_id=issue["asn_id"],
                invoice_number=issue["invoice_number"],
                amount=Decimal(issue["amount"]) if issue["amount"] else None,
                currency=issue["currency"],
                raised_at=shifted(issue["raised_at"]),
                due_at=shifted(issue["due_at"]),
                resolved_at=shifted(issue["resolved_at"]),
            )
            for r in new_records
            for issue in r["issues"]
        ],
        ignore_conflicts=True,
    )
    return len(new_records)


# --- History of automated changes ------------------------------------------------------------------

SYSTEM_USERNAME = "partnerlink-sync"


def system_user() -> AbstractBaseUser:
    """The account automated changes (syncs, webhooks) are recorded under in each object's history."""
    user, _ = get_user_model().objects.get_or_create(
        username=SYSTEM_USERNAME,
        defaults={"first_name": "Partnerlink", "last_name": "sync", "is_active": False, "email": ""},
    )
    return user


def history_record(*, obj, message: str, action: int = CHANGE, user: AbstractBaseUser | None = None) -> None:
    """A line in the object's admin history, for changes that do not come through the admin."""
    LogEntry.objects.create(
        user_id=(user or system_user()).pk,
        content_type_id=ContentType.objects.get_for_model(type(obj)).pk,
        object_id=str(obj.pk),
        object_repr=str(obj)[:200],
        action_flag=action,
        change_message=message,
    )


# --- What Mailchimp reports about contacts (inbound webhooks) --------------------------------------


@dataclass(frozen=True)
class ContactEventResult:
    matched: int
    applied: int
    conflicts: tuple[str, ...] = ()

    def describe(self, what: str) -> str:
        text = f"{what}: {self.applied} of {self.matched} contact(s) changed"
        if self.matched > self.applied and not self.conflicts:
            text += " (the others already had a newer state)"
        if self.conflicts:
            text += "; conflicts: " + "; ".join(self.conflicts)
        return text + "."


@transaction.atomic
def contact_marketing_status_apply(
    *, email: str, status: str, occurred_at: datetime, reason: str = ""
) -> ContactEventResult:
    """Mailchimp says an address is subscribed, unsubscribed or cleaned. Every contact with that address
    takes it, unless it already holds a newer state (events can arrive out of order)."""
    contacts = list(Contact.objects.select_for_update().select_related("partner").filter(email=email.lower()))
    applied = 0
    write_back = set()
    for contact in contacts:
        if contact.marketing_status_changed_at and contact.marketing_status_changed_at > occurred_at:
            continue
        changed = contact.marketing_status != status
        contact.marketing_status = status
        contact.marketing_status_changed_at = occurred_at
        fields = ["marketing_status", "marketing_status_changed_at", "updated_at"]
        if status == MarketingStatus.CLEANED:
            contact.email_invalid = True
            fields.append("email_invalid")
        contact.save(update_fields=fields)
        if changed:
            applied += 1
            note = f" ({reason})" if reason else ""
            history_record(obj=contact.partner, message=f"Mailchimp: {contact.email} is now {status}{note}.")
            if status in (MarketingStatus.UNSUBSCRIBED, MarketingStatus.CLEANED):
                write_back.add(contact.partner_id)
    if write_back:
        # The partner's Trading Grid profile shows its contacts' consent state.
        from partners.tg_sync import partner_marketing_status_write_back_enqueue

        partner_marketing_status_write_back_enqueue(partner_ids=write_back)
    return ContactEventResult(matched=len(contacts), applied=applied)


@transaction.atomic
def contact_email_change_apply(*, old_email: str, new_email: str, occurred_at: datetime) -> ContactEventResult:
    """Mailchimp says an address changed. A contact whose partner already has a contact with the new address
    is left alone and the conflict is recorded, not applied."""
    old_email, new_email = old_email.lower(), new_email.lower()
    contacts = list(Contact.objects.select_for_update().select_related("partner").filter(email=old_email))
    applied, conflicts = 0, []
    for contact in contacts:
        if Contact.objects.filter(partner_id=contact.partner_id, email=new_email).exists():
            conflicts.append(f"{contact.partner.tg_company_id} already has a contact {new_email}")
            history_record(
                obj=contact.partner,
                message=f"Mailchimp changed {old_email} to {new_email}, but this partner already has a contact "
                f"{new_email}: not applied.",
            )
            continue
        contact.email = new_email
        contact.save(update_fields=["email", "updated_at"])
        applied += 1
        history_record(obj=contact.partner, message=f"Mailchimp: {old_email} changed address to {new_email}.")
    return ContactEventResult(matched=len(contacts), applied=applied, conflicts=tuple(conflicts))


# Mailchimp merge tags a person can edit in their profile, and the contact fields they map to.
PROFILE_MERGE_FIELDS = {"FNAME": "first_name", "LNAME": "last_name", "PHONE": "phone"}


@transaction.atomic
def contact_profile_apply(*, email: str, merges: dict, language: str = "") -> ContactEventResult:
    """A person changed their profile in Mailchimp: apply the mapped name, phone and language changes."""
    updates = {field: merges[tag].strip() for tag, field in PROFILE_MERGE_FIELDS.items() if tag in merges}
    if language:
        updates["language"] = language.strip()[:10]
    contacts = list(Contact.objects.select_for_update().select_related("partner").filter(email=email.lower()))
    applied = 0
    for contact in contacts:
        changed = {field: value for field, value in updates.items() if getattr(contact, field) != value}
        if not changed:
            continue
        for field, value in changed.items():
            setattr(contact, field, value)
        contact.save(update_fields=[*changed, "updated_at"])
        applied += 1
        history_record(
            obj=contact.partner, message=f"Mailchimp profile of {contact.email}: changed {', '.join(sorted(changed))}."
        )
    return ContactEventResult(matched=len(contacts), applied=applied)


# --- Mailchimp audience sync (flow F4) --------------------------------------------------------------

# A run whose heartbeat is older than this lost its worker; the next start resumes its work.
STALE_SYNC_RUN = timedelta(minutes=15)


def audience_default_ensure() -> MailchimpAudience | None:
    """The audience named by MAILCHIMP_AUDIENCE_ID, created on first use as the default one."""
    list_id = settings.MAILCHIMP_AUDIENCE_ID
    if not list_id:
        return MailchimpAudience.objects.filter(is_default=True).first()
    audience, _ = MailchimpAudience.objects.get_or_create(
        list_id=list_id,
        defaults={
            "name": "Partner contacts",
            "is_default": not MailchimpAudience.objects.filter(is_default=True).exists(),
        },
    )
    return audience


@transaction.atomic
def audience_sync_start(
    *,
    audience: MailchimpAudience,
    kind: str = SyncKind.INCREMENTAL,
    triggered_by: str = "",
    partner_ids: list[int] | None = None,
    enqueue: bool = True,
) -> SyncRun:
    """Queue a sync of the audience, or return the one already queued or running: one at a time per
    audience. A run whose worker died (stale heartbeat) is marked abandoned; the new run resumes its work."""
    MailchimpAudience.objects.select_for_update().get(pk=audience.pk)
    now = timezone.now()
    for active in SyncRun.objects.filter(audience=audience, status__in=(SyncStatus.QUEUED, SyncStatus.RUNNING)):
        last_sign_of_life = active.heartbeat_at or active.created_at
        if last_sign_of_life > now - STALE_SYNC_RUN:
            return active
        active.status = SyncStatus.ABANDONED
        active.finished_at = now
        active.save(update_fields=["status", "finished_at"])
    run = SyncRun.objects.create(audience=audience, kind=kind, triggered_by=triggered_by[:100], partner_ids=partner_ids)
    if enqueue:
        from partners.tasks import audience_sync_task

        audience_sync_task.delay_on_commit(run.pk)
    return run


def audience_sync_execute(
    *, run_id: int, client=None, progress=None, poll_interval: float = 1.0, sleep=None
) -> SyncRun:
    """Run a queued sync. A transient Mailchimp failure puts it back in the queue and propagates (the task
    retries with backoff; what was sent is not sent again); a refusal marks it failed with the reason."""
    from connectors.mailchimp.client import get_client
    from connectors.mailchimp.errors import MailchimpError, MailchimpTransientError
    from partners.audience_sync import AudienceSync

    now = timezone.now()
    claimed = SyncRun.objects.filter(pk=run_id, status=SyncStatus.QUEUED).update(
        status=SyncStatus.RUNNING, heartbeat_at=now
    )
    run = SyncRun.objects.select_related("audience").get(pk=run_id)
    if not claimed:
        return run
    if run.started_at is None:
        run.started_at = now
        run.save(update_fields=["started_at"])
    extra = {"sleep": sleep} if sleep else {}
    try:
        AudienceSync(
            run, client=client or get_client(), progress=progress, poll_interval=poll_interval, **extra
        ).execute()
    except MailchimpTransientError as exc:
        run.status = SyncStatus.QUEUED
        run.errors.append(f"transient, will retry: {exc}")
        run.save()
        raise
    except MailchimpError as exc:
        run.status = SyncStatus.FAILED
        run.errors.append(f"Mailchimp refused: {exc}")
        run.finished_at = timezone.now()
        run.save()
        return run
    except Exception as exc:
        run.status = SyncStatus.FAILED
        run.errors.append(f"{type(exc).__name__}: {exc}")
        run.finished_at = timezone.now()
        run.save()
        raise
    run.status = SyncStatus.SUCCEEDED
    run.finished_at = timezone.now()
    run.save()
    return run


def audience_sync_give_up(*, run_id: int, reason: str) -> None:
    run = SyncRun.objects.get(pk=run_id)
    run.status = SyncStatus.FAILED
    run.errors.append(reason[:1000])
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "errors", "finished_at"])


def audience_syncs_start_due(*, kind: str = SyncKind.INCREMENTAL) -> list[SyncRun]:
    """Beat: a sync of every partner audience (the default audience is created from settings if needed)."""
    audience_default_ensure()
    return [
        audience_sync_start(audience=audience, kind=kind, triggered_by="beat")
        for audience in MailchimpAudience.objects.filter(purpose=AudiencePurpose.PARTNERS)
    ]


MAILCHIMP_WEBHOOK_EVENTS = ("subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign")


def audience_mailchimp_setup(*, audience: MailchimpAudience, client=None) -> list[str]:
    """Make the audience ready (idempotent): our merge fields exist, and exactly one webhook points at this
    site with the current secret, for changes people and admins make (not the API: our own writes must not
    echo back). Returns what it did."""
    from connectors.mailchimp.client import get_client
    from partners.audience_sync import MERGE_FIELDS

    client = client or get_client()
    done = []
    created = client.ensure_merge_fields(list_id=audience.list_id, fields=MERGE_FIELDS)
    if created:
        done.append(f"{audience.list_id}: created merge fields {', '.join(created)}")
    secrets = settings.MAILCHIMP_WEBHOOK_SECRETS
    if not secrets:
        raise ImproperlyConfigured("MAILCHIMP_WEBHOOK_SECRETS is empty: no webhook can be registered.")
    prefix = f"{settings.PARTNERLINK_PUBLIC_URL}/webhooks/mailchimp/"
    url = f"{prefix}{secrets[0]}/"
    hooks = client.list_webhooks(list_id=audience.list_id)
    ours = [hook for hook in hooks if str(hook.get("url", "")).startswith(prefix)]
    current = next((hook for hook in ours if hook.get("url") == url), None)
    if current is None:
        current = client.create_list_webhook(
            list_id=audience.list_id, url=url, events=MAILCHIMP_WEBHOOK_EVENTS, sources=("user", "admin")
        )
        done.append(f"{audience.list_id}: registered the webhook")
    for hook in ours:
        if hook.get("id") != current.get("id"):  # an older secret's URL, after rotation
            client.delete_list_webhook(list_id=audience.list_id, webhook_id=hook["id"])
            done.append(f"{audience.list_id}: removed the webhook of a retired secret")
    if audience.webhook_id != current.get("id"):
        MailchimpAudience.objects.filter(pk=audience.pk).update(webhook_id=str(current.get("id") or ""))
    return done
