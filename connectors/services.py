"""Storing and processing inbound events. Views and pollers call `inbound_event_record`; a task calls
`inbound_event_process`."""

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from connectors import inbox
from connectors.models import EventStatus, InboundEvent

logger = logging.getLogger(__name__)


def inbound_event_record(
    *, source: str, dedupe_key: str, event_type: str, payload: dict, raw: str = ""
) -> tuple[InboundEvent, bool]:
    """Store an event once. Returns (event, created); a replay returns the stored event and changes nothing.
    Processing is enqueued when the storing transaction commits."""
    try:
        with transaction.atomic():
            event = InboundEvent.objects.create(
                source=source,
                dedupe_key=dedupe_key[:200],
                event_type=event_type[:64],
                payload=payload,
                raw=raw,
                enqueued_at=timezone.now(),
            )
    except IntegrityError:
        return InboundEvent.objects.get(source=source, dedupe_key=dedupe_key[:200]), False
    _enqueue(event.pk)
    return event, True


def _enqueue(event_id: int) -> None:
    from connectors.tasks import inbound_event_process_task

    inbound_event_process_task.delay_on_commit(event_id)


def inbound_event_process(*, event_id: int) -> InboundEvent | None:
    """Run the registered handler once for a pending event. The row lock makes a duplicate task a no-op;
    a handler's exception rolls its writes back and propagates (the task decides whether to retry)."""
    with transaction.atomic():
        event = InboundEvent.objects.select_for_update(skip_locked=True).filter(pk=event_id).first()
        if event is None or event.status != EventStatus.PENDING:
            return event
        event.attempts += 1
        handler = inbox.handler_for(event.source, event.event_type)
        if handler is None:
            outcome = inbox.Outcome(EventStatus.IGNORED, f"No handler for {event.source} {event.event_type}.")
        else:
            with transaction.atomic():
                outcome = handler(event)
        event.status = outcome.status
        event.outcome = outcome.message
        event.processed_at = timezone.now()
        event.save(update_fields=["status", "outcome", "processed_at", "attempts"])
    return event


def inbound_event_mark_failed(*, event_id: int, reason: str) -> None:
    InboundEvent.objects.filter(pk=event_id, status=EventStatus.PENDING).update(
        status=EventStatus.FAILED, outcome=reason[:2000], processed_at=timezone.now()
    )


def inbound_event_relay_stuck(*, now=None, grace: timedelta = timedelta(minutes=2)) -> int:
    """Re-enqueue pending events whose task was lost (broker outage, worker killed)."""
    now = now or timezone.now()
    stuck = list(
        InboundEvent.objects.filter(status=EventStatus.PENDING, enqueued_at__lt=now - grace).values_list(
            "pk", flat=True
        )[:5000]
    )
    for event_id in stuck:
        with transaction.atomic():
            InboundEvent.objects.filter(pk=event_id).update(enqueued_at=now)
            _enqueue(event_id)
    return len(stuck)
