"""Writes about partners. Every function here is keyword-only and owns its transaction."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from partners.imports import ImportResult, PartnerListImport, ProgressCallback
from partners.models import ImportStatus, PartnerImport
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
    )
    if background:
        from partners.tasks import partner_import_run_task

        partner_import_run_task.delay_on_commit(partner_import.pk, True)
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
        locked.save(update_fields=["status", "processed_rows", "started_at"])
        if locked.runs_in_background:
            from partners.tasks import partner_import_run_task

            partner_import_run_task.delay_on_commit(locked.pk, False)
    if not locked.runs_in_background:
        partner_import_run(partner_import_id=locked.pk, dry_run=False)
        locked.refresh_from_db()
    return locked


def partner_import_run(*, partner_import_id: int, dry_run: bool) -> PartnerImport:
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
    partner_import = PartnerImport.objects.select_related("uploaded_by").get(pk=partner_import_id)
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
