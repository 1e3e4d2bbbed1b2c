"""Reads about communications. Interfaces and services call these instead of building querysets themselves."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from campaigns.models import Communication, CommunicationState
from connectors.mailchimp.payloads import quarter_hour_slot
from partners.models import MailchimpAudience, Segment
from partners.selectors import segment_contacts

APPROVE_PERMISSION = "campaigns.approve_communication"
# A slot closer than this is not scheduled (Mailchimp refuses times in the past): it is sent at once.
SCHEDULE_MARGIN = timedelta(minutes=2)
CHANGE_PERMISSION = "campaigns.change_communication"


def user_can_approve(user: AbstractBaseUser) -> bool:
    """Members of "Approvers" hold the permission; so do administrators and superusers (all permissions)."""
    return bool(user.is_authenticated and user.is_active and user.has_perm(APPROVE_PERMISSION))


def user_can_change(user: AbstractBaseUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(CHANGE_PERMISSION))


def communications_for_list(communications: QuerySet[Communication]) -> QuerySet[Communication]:
    """Everything a list row shows, in one query whatever the page size."""
    return communications.select_related("audience", "created_by", "submitted_by", "approved_by")


def communications_waiting_for(user: AbstractBaseUser, communications: QuerySet[Communication] | None = None):
    """Submitted communications this person may approve: everyone's but their own."""
    communications = Communication.objects.all() if communications is None else communications
    return communications.filter(state=CommunicationState.SUBMITTED).exclude(submitted_by_id=user.pk)


def segments_outside_audience(audience: MailchimpAudience, segments: Iterable[Segment]) -> list[Segment]:
    return [segment for segment in segments if segment.audience_id != audience.pk]


def communication_submit_problems(communication: Communication) -> list[str]:
    """What is missing before a communication can go to an approver; empty when it can."""
    problems = []
    for field in ("subject", "from_name", "reply_to"):
        if not getattr(communication, field).strip():
            problems.append(f"the {Communication._meta.get_field(field).verbose_name} is empty")
    if not communication.html_body.strip() and communication.template_id is None:
        problems.append("there is no content: write an HTML body or choose a Mailchimp template")
    segments = list(communication.segments.all())
    if not segments:
        problems.append("no segment is chosen: who should receive it?")
    outside = segments_outside_audience(communication.audience, segments)
    if outside:
        names = ", ".join(segment.name for segment in outside)
        problems.append(f"these segments belong to another audience than {communication.audience.name}: {names}")
    return problems


@dataclass(frozen=True)
class RecipientRow:
    segment: Segment
    contacts: int  # what Partnerlink's rules select now
    mailchimp: int | None  # Mailchimp's count after the segment's last sync; None: never synced

    @property
    def synced(self) -> bool:
        return self.segment.mailchimp_segment_id is not None

    @property
    def mismatch(self) -> bool:
        return self.mailchimp is not None and self.mailchimp != self.contacts


def communication_recipient_rows(communication: Communication) -> list[RecipientRow]:
    """Per segment: the contacts its rules select now and Mailchimp's count after its last sync (they differ
    until a sync has run since the rules or the partners changed, or when Mailchimp holds some addresses as
    unsubscribed). One count query per segment: a communication has a handful."""
    rows = []
    for segment in communication.segments.prefetch_related("product_lines").order_by("name"):
        rows.append(
            RecipientRow(
                segment=segment,
                contacts=segment_contacts(segment).count(),
                mailchimp=segment.remote_member_count if segment.mailchimp_segment_id is not None else None,
            )
        )
    return rows


def communication_schedule_slot(communication: Communication) -> datetime | None:
    """The quarter hour Mailchimp will be given for the communication's schedule time (None: send at once)."""
    if communication.schedule_time is None:
        return None
    return quarter_hour_slot(communication.schedule_time)


def communication_send_plan(communication: Communication, *, now: datetime | None = None) -> str:
    """When Mailchimp will send it, in words: the quarter-hour slot, and why it differs from the time asked."""
    slot = communication_schedule_slot(communication)
    if slot is None:
        return "Mailchimp sends it as soon as Partnerlink hands it over (no schedule time)."
    asked = format_utc(communication.schedule_time)
    if slot <= (now or timezone.now()) + SCHEDULE_MARGIN:
        return f"Its schedule time {asked} has passed: Mailchimp sends it at once."
    if slot != communication.schedule_time:
        return (
            f"Mailchimp will send it at {format_utc(slot)}: the schedule time {asked} rounded up to the next "
            "quarter hour (Mailchimp sends only at :00, :15, :30 and :45)."
        )
    return f"Mailchimp will send it at {format_utc(slot)}."


def format_utc(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if when else ""
