"""Thin tasks over connectors/services.py: ids only, retries only on transient errors."""

import logging

from celery import shared_task

from connectors import services

logger = logging.getLogger(__name__)


def _transient_errors() -> tuple[type[Exception], ...]:
    """The connectors' transient errors, whichever connectors are installed."""
    errors: list[type[Exception]] = []
    try:
        from connectors.mailchimp.errors import MailchimpTransientError

        errors.append(MailchimpTransientError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from connectors.tradinggrid.errors import TradingGridTransientError

        errors.append(TradingGridTransientError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


@shared_task(bind=True, max_retries=8, acks_late=True)
def inbound_event_process_task(self, event_id: int) -> None:
    try:
        services.inbound_event_process(event_id=event_id)
    except _transient_errors() as exc:
        if self.request.retries >= self.max_retries:
            services.inbound_event_mark_failed(event_id=event_id, reason=f"gave up after retries: {exc}")
            return
        countdown = min(600, 2**self.request.retries * 5)
        logger.warning("inbound event %s: transient error, retry in %ss: %s", event_id, countdown, exc)
        raise self.retry(exc=exc, countdown=countdown) from exc
    except Exception as exc:
        services.inbound_event_mark_failed(event_id=event_id, reason=f"{type(exc).__name__}: {exc}")
        raise


@shared_task
def inbound_event_relay_stuck_task() -> int:
    """Beat: re-enqueue pending inbound events whose task was lost."""
    return services.inbound_event_relay_stuck()
