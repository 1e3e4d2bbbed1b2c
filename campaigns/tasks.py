"""Celery tasks for communications and journeys: thin, idempotent, ids only."""

import random

from celery import shared_task

from campaigns import journeys
from connectors.mailchimp.errors import MailchimpTransientError


@shared_task(bind=True, max_retries=8, acks_late=True)
def journey_trigger_dispatch_task(self, trigger_id: int) -> None:
    try:
        journeys.journey_trigger_dispatch(trigger_id=trigger_id)
    except MailchimpTransientError as exc:
        if self.request.retries >= self.max_retries:
            return  # the row stays pending; the beat relay keeps trying it
        backoff = min(600, 5 * 2**self.request.retries)
        raise self.retry(exc=exc, countdown=max(exc.retry_after or 0, backoff * (0.5 + random.random() / 2))) from exc


@shared_task
def journey_triggers_relay_task() -> int:
    """Beat: re-enqueue journey triggers whose task was lost or whose worker died."""
    return journeys.journey_triggers_relay()
