"""Onboarding journeys (flow F2): a partner approved, its profile updated or a contact added in Trading Grid
puts its contacts into the mapped Mailchimp customer journey, once.

- `journey_triggers_record` listens to the Trading Grid sync (partners/tg_sync.py) and runs inside the
  upsert's transaction: one `JourneyTrigger` ledger row per (mapping, partner, contact, occurrence), unique, so
  a webhook delivered twice or arriving together with a poll records nothing new.
- `journey_trigger_dispatch` (from a task) claims a pending row with a short lease, upserts the member
  (`status_if_new` only), sets tags, records the member event and triggers the journey step, saving its
  stage after each call: a worker that dies halfway leaves the row pending, and the beat relay's retry
  continues from the last stage instead of starting over.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from campaigns.models import (
    JourneyMapping,
    JourneyStage,
    JourneyTrigger,
    JourneyTriggerKind,
    JourneyTriggerStatus,
)
from partners.models import Contact, MarketingStatus, TradingPartner

logger = logging.getLogger(__name__)

# A dispatch holds its row this long; a worker that died lets the relay take the row over afterwards.
CLAIM_LEASE = timedelta(minutes=5)
# A pending row nobody has claimed for this long lost its task (broker outage): the relay enqueues it again.
UNCLAIMED_GRACE = timedelta(minutes=1)
OPTED_OUT = (MarketingStatus.UNSUBSCRIBED, MarketingStatus.CLEANED)


def journey_triggers_record(change) -> int:
    """Ledger rows for every active mapping the change triggers (a `partners.tg_sync.PartnerChange`).
    Called inside the partner upsert's transaction. Returns how many rows were new."""
    if not change.partner_id or not change.changed:
        return 0
    partner = TradingPartner.objects.get(pk=change.partner_id)
    contacts = {contact.email: contact for contact in partner.contacts.all()}
    rows: list[JourneyTrigger] = []
    for mapping in JourneyMapping.objects.filter(is_active=True):
        if not mapping.matches_partner(partner):
            continue
        for email, occurrence in _occurrences(mapping, change, partner, contacts):
            contact = contacts.get(email)
            rows.append(_row(mapping, partner, contact, email, occurrence))
    if not rows:
        return 0
    before = JourneyTrigger.objects.filter(partner=partner).count()
    JourneyTrigger.objects.bulk_create(rows, ignore_conflicts=True)
    created = JourneyTrigger.objects.filter(partner=partner).count() - before
    if created:
        transaction.on_commit(lambda: _enqueue_pending(partner_id=partner.pk))
    return created


def _occurrences(mapping: JourneyMapping, change, partner: TradingPartner, contacts: dict[str, Contact]):
    if mapping.trigger == JourneyTriggerKind.PARTNER_APPROVED and change.became_approved:
        # Once per partner: an approval after a suspension does not restart onboarding.
        return [(email, "approved") for email in contacts]
    if mapping.trigger == JourneyTriggerKind.PROFILE_UPDATED and change.profile_updated:
        if not set(mapping.watched_fields) & set(change.changed_fields):
            return []
        version = partner.tg_updated_at.isoformat() if partner.tg_updated_at else timezone.now().isoformat()
        fields = ",".join(sorted(set(mapping.watched_fields) & set(change.changed_fields)))
        occurrence = "profile:" + hashlib.sha256(f"{version}|{fields}".encode()).hexdigest()[:32]
        return [(email, occurrence) for email in contacts]
    if mapping.trigger == JourneyTriggerKind.CONTACT_ADDED:
        return [(email, f"contact:{email}") for email in change.contacts_added if email in contacts]
    return []


def _row(mapping, partner, contact, email, occurrence) -> JourneyTrigger:
    row = JourneyTrigger(mapping=mapping, partner=partner, contact=contact, email=email, occurrence=occurrence)
    skip = _skip_reason(contact)
    if skip:
        row.status, row.reason = JourneyTriggerStatus.SKIPPED, skip
    return row


def _skip_reason(contact: Contact | None) -> str:
    if contact is None:
        return "The contact no longer exists."
    if contact.marketing_status in OPTED_OUT:
        return f"The contact is {contact.marketing_status} in Mailchimp; Partnerlink never resubscribes anyone."
    if contact.email_invalid:
        return "Mailchimp cleaned this address (it bounced)."
    return ""


def _enqueue_pending(*, partner_id: int | None = None, ids: list[int] | None = None) -> None:
    from campaigns.tasks import journey_trigger_dispatch_task

    rows = JourneyTrigger.objects.filter(status=JourneyTriggerStatus.PENDING)
    if partner_id is not None:
        rows = rows.filter(partner_id=partner_id, attempts=0)
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    for trigger_id in rows.values_list("pk", flat=True):
        journey_trigger_dispatch_task.delay(trigger_id)


def _claim(trigger_id: int) -> JourneyTrigger | None:
    """Take the row for one dispatch: pending, and not held by another worker's unexpired lease."""
    now = timezone.now()
    with transaction.atomic():
        row = (
            JourneyTrigger.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("mapping", "mapping__audience", "partner", "contact")
            .filter(pk=trigger_id, status=JourneyTriggerStatus.PENDING)
            .first()
        )
        if row is None or (row.next_attempt_at and row.next_attempt_at > now):
            return None
        row.attempts += 1
        row.next_attempt_at = now + CLAIM_LEASE
        row.save(update_fields=["attempts", "next_attempt_at"])
        return row


def _save(row: JourneyTrigger, **fields) -> None:
    for name, value in fields.items():
        setattr(row, name, value)
    JourneyTrigger.objects.filter(pk=row.pk).update(**fields)


def journey_trigger_dispatch(*, trigger_id: int, client=None) -> JourneyTrigger | None:
    """Put one contact into the mapped journey. A transient Mailchimp error releases the row for a retry
    (and propagates for the task's backoff); a refusal marks it failed with Mailchimp's reason."""
    from connectors.mailchimp.client import get_client
    from connectors.mailchimp.errors import MailchimpAPIError, MailchimpTransientError
    from connectors.mailchimp.payloads import MemberUpsert

    row = _claim(trigger_id)
    if row is None:
        return None
    contact = Contact.objects.filter(pk=row.contact_id).first()
    skip = _skip_reason(contact)
    if skip:
        _save(row, status=JourneyTriggerStatus.SKIPPED, reason=skip, next_attempt_at=None)
        return row
    mapping, list_id = row.mapping, row.mapping.audience.list_id
    client = client or get_client()
    try:
        if row.stage < JourneyStage.MEMBER:
            member = client.upsert_member(
                list_id=list_id,
                member=MemberUpsert(
                    email=row.email,
                    # Only Mailchimp's own fields: the audience sync owns ours (and creates them).
                    merge_fields={"FNAME": contact.first_name, "LNAME": contact.last_name},
                    status_if_new=mapping.audience.new_member_status,
                ),
            )
            status = str(member.get("status") or "")
            if status != "subscribed":
                reason = (
                    "Waiting for the contact to confirm the double opt-in email."
                    if status == "pending"
                    else f"The Mailchimp member is {status}; journeys only take subscribed members."
                )
                _save(row, status=JourneyTriggerStatus.SKIPPED, reason=reason, next_attempt_at=None)
                return row
            _save(row, stage=JourneyStage.MEMBER)
        if row.stage < JourneyStage.TAGS:
            if mapping.tags:
                client.update_member_tags(list_id=list_id, email=row.email, active=mapping.tags)
            _save(row, stage=JourneyStage.TAGS)
        if row.stage < JourneyStage.EVENT:
            if mapping.member_event:
                client.create_member_event(
                    list_id=list_id,
                    email=row.email,
                    name=mapping.member_event,
                    properties={"buid": row.partner.tg_company_id, "trigger": mapping.trigger},
                )
            _save(row, stage=JourneyStage.EVENT)
        client.trigger_journey_step(journey_id=mapping.journey_id, step_id=mapping.step_id, email=row.email)
    except MailchimpTransientError:
        _save(row, next_attempt_at=timezone.now())  # released: the task's retry or the relay takes it again
        raise
    except MailchimpAPIError as exc:
        detail = "; ".join(filter(None, [exc.title, exc.detail])) or str(exc)
        _save(row, status=JourneyTriggerStatus.FAILED, reason=f"Mailchimp refused: {detail}", next_attempt_at=None)
        return row
    _save(
        row,
        stage=JourneyStage.TRIGGERED,
        status=JourneyTriggerStatus.SENT,
        triggered_at=timezone.now(),
        next_attempt_at=None,
        reason="",
    )
    return row


def journey_triggers_relay(*, now=None) -> int:
    """Beat: enqueue pending rows whose task was lost or whose worker died (lease expired)."""
    now = now or timezone.now()
    stuck = list(
        JourneyTrigger.objects.filter(status=JourneyTriggerStatus.PENDING)
        .filter(next_attempt_at__lte=now)
        .values_list("pk", flat=True)[:5000]
    ) + list(
        JourneyTrigger.objects.filter(
            status=JourneyTriggerStatus.PENDING, next_attempt_at__isnull=True, created_at__lt=now - UNCLAIMED_GRACE
        ).values_list("pk", flat=True)[:5000]
    )
    if stuck:
        _enqueue_pending(ids=stuck)
    return len(stuck)
