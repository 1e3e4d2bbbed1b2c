"""Celery tasks for partners: thin, idempotent, ids only."""

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
