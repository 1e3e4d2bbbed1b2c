"""The inbox: every event that arrives from outside (webhooks, and changes found by polling) is stored here,
raw and under a unique dedupe key, before anything acts on it. Handlers registered by the apps
(connectors/inbox.py) then process it from a task."""

from django.db import models


class EventSource(models.TextChoices):
    MAILCHIMP = "mailchimp", "Mailchimp"
    TRADING_GRID = "tradinggrid", "Trading Grid"


class EventStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSED = "processed", "Processed"
    UNMATCHED = "unmatched", "Unmatched (kept, nothing to apply it to)"
    CONFLICT = "conflict", "Conflict (recorded, not applied)"
    IGNORED = "ignored", "Ignored"
    FAILED = "failed", "Failed"


class InboundEvent(models.Model):
    source = models.CharField(max_length=20, choices=EventSource.choices)
    dedupe_key = models.CharField(max_length=200, help_text="Unique per source: a replay changes nothing.")
    event_type = models.CharField(max_length=64)
    payload = models.JSONField(help_text="The event, normalized.")
    raw = models.TextField(blank=True, help_text="The body exactly as received.")
    received_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=20, choices=EventStatus.choices, default=EventStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True, help_text="What processing did, or why it did not.")

    class Meta:
        ordering = ["-received_at"]
        constraints = [models.UniqueConstraint(fields=["source", "dedupe_key"], name="inbound_event_dedupe")]
        indexes = [models.Index(fields=["status", "enqueued_at"]), models.Index(fields=["source", "event_type"])]

    def __str__(self):
        return f"{self.get_source_display()} {self.event_type} ({self.dedupe_key[:24]})"
