"""Celery tasks for partners: thin, idempotent, ids only."""

import logging
import random

from celery import shared_task

from connectors.tradinggrid.errors import TradingGridTransientError
from partners import services, tg_sync

logger = logging.getLogger(__name__)


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
# --- Trading Grid sync (partners/tg_sync.py) ---------------------------------------------------------


def _retry_later(task, exc: TradingGridTransientError):
    """Exponential backoff with jitter (half fixed, half random), never sooner than Trading Grid asked."""
    step = min(1800.0, 30.0 * 2**task.request.retries)
    countdown = max(exc.retry_after or 0.0, step / 2 + random.uniform(0, step / 2))
    logger.warning("%s: Trading Grid unavailable, retry in %.0fs: %s", task.name, countdown, exc)
    return task.retry(exc=exc, countdown=countdown)


@shared_task(bind=True, max_retries=3)
def tg_partners_poll_task(self) -> str:
    """Beat: partner directory and changed profiles from Trading Grid."""
    try:
        return str(tg_sync.partners_poll_from_tg())
    except TradingGridTransientError as exc:
        raise _retry_later(self, exc) from exc


@shared_task(bind=True, max_retries=3)
def tg_issues_poll_task(self) -> str:
    """Beat: community issues changed since the cursor."""
    try:
        return str(tg_sync.issues_poll_from_tg())
    except TradingGridTransientError as exc:
        raise _retry_later(self, exc) from exc


@shared_task(bind=True, max_retries=3)
def tg_lens_failures_poll_task(self) -> str:
    """Beat: failed Lens transactions since the cursor."""
    try:
        return str(tg_sync.lens_failures_poll_from_tg())
    except TradingGridTransientError as exc:
        raise _retry_later(self, exc) from exc


@shared_task(bind=True, max_retries=6, acks_late=True)
def tg_partner_issues_sync_task(self, company_id: str) -> str:
    """A partner new to Partnerlink: fetch its community issue history."""
    try:
        return str(tg_sync.issues_sync_for_partner_from_tg(company_id=company_id))
    except TradingGridTransientError as exc:
        raise _retry_later(self, exc) from exc


@shared_task(bind=True, max_retries=8, acks_late=True)
def partner_marketing_status_write_back_task(self, partner_id: int) -> None:
    """Unsubscribed and cleaned contacts onto the partner's Trading Grid profile."""
    try:
        tg_sync.partner_marketing_status_write_back(partner_id=partner_id)
    except TradingGridTransientError as exc:
        raise _retry_later(self, exc) from exc


@shared_task
def partner_marketing_status_write_back_relay_task() -> int:
    """Beat: re-enqueue write-backs whose task was lost."""
    return tg_sync.partner_marketing_status_write_back_relay()
