"""Celery tasks for partners: thin, idempotent, ids only."""

import random

from celery import shared_task

from partners import services


@shared_task(acks_late=True)
def partner_import_run_task(partner_import_id: int, dry_run: bool) -> None:
    """Check or apply a stored partner list (large files run here instead of in the request)."""
    services.partner_import_run(partner_import_id=partner_import_id, dry_run=dry_run)


@shared_task
def partner_import_relay_stuck_task() -> int:
    """Beat: re-enqueue background imports whose job was lost."""
    return services.partner_import_relay_stuck()


@shared_task(bind=True, max_retries=6, acks_late=True)
def audience_sync_task(self, run_id: int) -> None:
    """Sync one audience; transient Mailchimp failures retry with backoff and jitter."""
    from connectors.mailchimp.errors import MailchimpTransientError

    try:
        services.audience_sync_execute(run_id=run_id)
    except MailchimpTransientError as exc:
        if self.request.retries >= self.max_retries:
            services.audience_sync_give_up(run_id=run_id, reason=f"gave up after {self.max_retries} retries: {exc}")
            return
        backoff = min(900, 15 * 2**self.request.retries)
        countdown = max(exc.retry_after or 0, backoff * (0.5 + random.random() / 2))
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task
def audience_sync_due_task(kind: str = "incremental") -> int:
    """Beat: start a sync of every partner audience (incremental every few minutes, full nightly)."""
    return len(services.audience_syncs_start_due(kind=kind))
