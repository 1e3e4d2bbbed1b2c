"""Partner contacts to a Mailchimp audience, and segments to static segments (flow F4).

One run:
1. ensure the merge fields exist (a read; writes only for missing fields);
2. a full run first reads every member's status back from Mailchimp (unsubscribes and bounces flow back);
3. members: each sendable contact's payload (merge fields, language, `status_if_new`) is fingerprinted; only
   contacts whose fingerprint differs from what was last sent go out, in batches of at most 500
   `PUT /lists/{id}/members/{hash}` operations (`status_if_new` only: an existing member keeps its status).
   Each batch is a ledger row (MemberBatch); fingerprints are recorded when Mailchimp has finished it, so a
   run killed midway resumes by polling its batches instead of sending them again. Batches are sent from a
   background thread while the next ones are read and fingerprinted, and polled while later ones are sent
   (every POLL_EVERY_BATCHES), so reading, sending, Mailchimp's processing and recording overlap;
4. segments: each segment's matching contacts are diffed against what was last put into its static
   segment, and only the additions and removals are sent (at most 500 of each per change). A few changes
   go out one call each; more go in one batch of operations (a first sync of large segments).

Unsubscribed and cleaned contacts are never sent at all. An unchanged database makes no write calls.
Services call `AudienceSync(run, client=...).execute()`; nothing else should.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from connectors.mailchimp.client import BatchStatus, MailchimpClient
from connectors.mailchimp.errors import MailchimpAPIError, MailchimpError, MailchimpTransientError
from connectors.mailchimp.payloads import BatchOperation, MemberUpsert, MergeFieldSpec, static_segment_changes
from partners import selectors
from partners.models import (
    Contact,
    ContactSyncState,
    MailchimpAudience,
    MarketingStatus,
    MemberBatch,
    MemberBatchStatus,
    Segment,
    SegmentMember,
    SyncKind,
    SyncRun,
    TradingPartner,
)

logger = logging.getLogger(__name__)

MERGE_FIELDS = (
    MergeFieldSpec(tag="FNAME", name="First name"),
    MergeFieldSpec(tag="LNAME", name="Last name"),
    MergeFieldSpec(tag="BUID", name="Partner BUID"),
    MergeFieldSpec(tag="PTYPE", name="Partner type"),
    MergeFieldSpec(tag="REGION", name="Region"),
    MergeFieldSpec(tag="COUNTRY", name="Country"),
    MergeFieldSpec(tag="PRODLINES", name="Product lines"),
    MergeFieldSpec(tag="TIER", name="Tier"),
    MergeFieldSpec(tag="OBSTATUS", name="Onboarding status"),
    MergeFieldSpec(tag="OPENISSUES", name="Open issues", type="number"),
    MergeFieldSpec(tag="PMGR", name="Partner manager"),
)
BATCH_MEMBERS = 500
# Mailchimp allows 500 pending batches per account; leave room for other work.
MAX_BATCHES_IN_FLIGHT = 300
# Calls handed to the sending thread and not yet answered: enough that it stays busy while this thread
# records up to POLL_EVERY_BATCHES finished batches, and that this thread goes on reading while a poll is
# answered; few enough that a worker killed outright leaves little sent but unrecorded (sent again, harmlessly).
CALLS_AHEAD = 12
# While sending, the batches in flight are polled after every POLL_EVERY_BATCHES submitted (and at most once
# per poll interval): finished ones are recorded while later ones go out, for a few calls more.
POLL_EVERY_BATCHES = 20
# Segment changes (of at most 500 additions and 500 removals) sent one call each; more go in a batch,
# which costs a submission, two or more polls and a download of its results.
SEGMENT_CHANGES_ONE_BY_ONE = 4
# Mailchimp's language codes; anything else falls back to its base language.
MAILCHIMP_LANGUAGES = frozenset(
    "en ar af be bg ca zh hr cs da nl et fa fi fr fr_CA de el he hi hu is id ga it ja km ko lv lt mt ms mk no pl pt "
    "pt_PT ro ru sr sk sl es es_ES sw sv ta th tr uk vi".split()
)
STATUSES_FROM_MAILCHIMP = {
    "subscribed": MarketingStatus.SUBSCRIBED,
    "unsubscribed": MarketingStatus.UNSUBSCRIBED,
    "cleaned": MarketingStatus.CLEANED,
    "pending": MarketingStatus.PENDING,
}


@dataclass(frozen=True)
class MemberRow:
    contact_id: int
    member: MemberUpsert
    fingerprint: str


@dataclass
class _Call:
    """A call running in the sending thread: a batch submission (with its rows) or a poll."""

    future: Future
    rows: list[tuple[MemberRow, bool]] | None = None


@dataclass
class _SegmentPlan:
    segment: Segment
    desired: set[str]
    add: list[str]
    remove: list[str]
    changes: list[dict[str, list[str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failure: MailchimpError | None = None  # its changes didn't all go through: it isn't recorded


def mailchimp_language(code: str) -> str:
    code = code.replace("-", "_")
    if code in MAILCHIMP_LANGUAGES:
        return code
    base = code.split("_", 1)[0].lower()
    return base if base in MAILCHIMP_LANGUAGES else ""


def member_rows(audience: MailchimpAudience, *, partner_ids: list[int] | None = None) -> Iterator[MemberRow]:
    """What Mailchimp should hold for every sendable contact, in partner order."""
    for partners in selectors.iter_partners_with_contacts(partner_ids=partner_ids):
        for partner in partners:
            shared = _partner_merge_fields(partner)
            for contact in partner.sendable:
                merge_fields = {"FNAME": contact.first_name, "LNAME": contact.last_name, **shared}
                member = MemberUpsert(
                    email=contact.email,
                    merge_fields=merge_fields,
                    status_if_new=audience.new_member_status,
                    language=mailchimp_language(contact.language),
                )
                yield MemberRow(contact.pk, member, _fingerprint(member))


def _partner_merge_fields(partner: TradingPartner) -> dict:
    manager = partner.partner_manager
    return {
        "BUID": partner.tg_company_id,
        "PTYPE": partner.get_partner_type_display(),
        "REGION": partner.get_region_display() if partner.region else "",
        "COUNTRY": partner.country_code.code or "",
        "PRODLINES": ", ".join(line.name for line in partner.product_lines.all()),
        "TIER": partner.get_tier_display() if partner.tier else "",
        "OBSTATUS": partner.get_onboarding_status_display(),
        "OPENISSUES": partner.open_issue_count,
        "PMGR": (manager.get_full_name() or manager.email) if manager else "",
    }


def _fingerprint(member: MemberUpsert) -> str:
    payload = [member.email, dict(member.merge_fields), member.language, member.status_if_new]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


Progress = Callable[[SyncRun], None]


class AudienceSync:
    def __init__(
        self,
        run: SyncRun,
        *,
        client: MailchimpClient,
        progress: Progress | None = None,
        poll_interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.run = run
        self.audience = run.audience
        self.client = client
        self.progress = progress or (lambda run: None)
        self.poll_interval = poll_interval
        self.sleep = sleep
        self.in_flight: dict[str, MemberBatch] = {}
        self._sender: ThreadPoolExecutor | None = None
        self._calls: deque[_Call] = deque()
        self._last_poll = 0.0
        self._submitted_since_poll = 0

    # -- bookkeeping --------------------------------------------------------------------------------
    def _save_progress(self, *fields: str) -> None:
        self.run.heartbeat_at = timezone.now()
        self.run.save(update_fields=["heartbeat_at", *fields])
        self.progress(self.run)

    def _count(self, **increments: int) -> None:
        for name, value in increments.items():
            setattr(self.run, name, getattr(self.run, name) + value)

    def _error(self, message: str) -> None:
        if len(self.run.errors) < 200:
            self.run.errors.append(message)

    # -- the run --------------------------------------------------------------------------------------
    def execute(self) -> SyncRun:
        created = self.client.ensure_merge_fields(list_id=self.audience.list_id, fields=MERGE_FIELDS)
        self._count(calls=1 + len(created))
        if self.run.kind == SyncKind.FULL and self.run.partner_ids is None:
            self._read_back_statuses()
        contacts = Contact.objects.all()
        if self.run.partner_ids is not None:
            contacts = contacts.filter(partner_id__in=self.run.partner_ids)
        self.run.contacts_total = contacts.count()
        self.run.skipped = self.run.contacts_total - contacts.filter(pk__in=selectors.sendable_contacts()).count()
        self._save_progress("contacts_total", "skipped", "calls")
        self._resume_batches_in_flight()
        self._send_changed_members()
        self._wait_for_batches(until=0)
        self._sync_segments()
        if self.run.kind == SyncKind.FULL and self.run.partner_ids is None:
            MailchimpAudience.objects.filter(pk=self.audience.pk).update(last_full_sync_at=timezone.now())
        return self.run

    def _read_back_statuses(self) -> None:
        """Unsubscribes and bounces that reached Mailchimp without a webhook reaching us come back here."""
        remote: dict[str, str] = {}
        for email, status in self.client.iter_member_statuses(list_id=self.audience.list_id):
            if status in STATUSES_FROM_MAILCHIMP:
                remote[email] = STATUSES_FROM_MAILCHIMP[status]
        self._count(calls=max(1, -(-len(remote) // 1000)))
        changed = []
        for contact in (
            Contact.objects.filter(email__in=list(remote))
            .only("pk", "email", "marketing_status")
            .iterator(chunk_size=2000)
        ):
            status = remote[contact.email]
            if contact.marketing_status != status:
                contact.marketing_status = status
                contact.email_invalid = contact.email_invalid or status == MarketingStatus.CLEANED
                changed.append(contact)
        now = timezone.now()
        for contact in changed:
            contact.marketing_status_changed_at = now
        Contact.objects.bulk_update(
            changed, ["marketing_status", "email_invalid", "marketing_status_changed_at"], batch_size=1000
        )
        if changed:
            logger.info("%s: %s contact statuses read back from Mailchimp", self.audience, len(changed))

    # -- members -------------------------------------------------------------------------------------
    def _resume_batches_in_flight(self) -> None:
        for batch in MemberBatch.objects.filter(audience=self.audience, status=MemberBatchStatus.SUBMITTED):
            self.in_flight[batch.batch_id] = batch

    def _contact_ids_in_flight(self) -> set[int]:
        return {member[0] for batch in self.in_flight.values() for member in batch.members}

    def _send_changed_members(self) -> None:
        full = self.run.kind == SyncKind.FULL
        in_flight = self._contact_ids_in_flight()
        pending: list[tuple[MemberRow, bool]] = []
        rows = member_rows(self.audience, partner_ids=self.run.partner_ids)
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audience-sync")
        try:
            for chunk in _chunks(rows, 1000):
                states = dict(
                    ContactSyncState.objects.filter(
                        audience=self.audience, contact_id__in=[row.contact_id for row in chunk]
                    ).values_list("contact_id", "fingerprint")
                )
                for row in chunk:
                    sent = states.get(row.contact_id)
                    if row.contact_id in in_flight or (sent == row.fingerprint and not full):
                        self._count(unchanged=1)
                        continue
                    pending.append((row, sent is None))
                    if len(pending) == BATCH_MEMBERS:
                        self._submit(pending)
                        pending = []
                self.run.contacts_done += len(chunk)
                self._save_progress("contacts_done", "unchanged", "calls")
            self.run.contacts_done += self.run.skipped
            if pending:
                self._submit(pending)
            while self._calls:
                self._answer(self._calls.popleft())
        except BaseException:
            self._account_for_calls_after_failure()
            raise
        finally:
            self._sender.shutdown(wait=True)
            self._sender = None

    def _submit(self, rows: list[tuple[MemberRow, bool]]) -> None:
        """Hand a batch to the sending thread; meanwhile deal with what it has answered, and now and then poll
        the batches in flight."""
        while self._calls and (self._calls[0].future.done() or len(self._calls) >= CALLS_AHEAD):
            self._answer(self._calls.popleft())
        submitting = sum(1 for call in self._calls if call.rows is not None)
        if len(self.in_flight) + submitting >= MAX_BATCHES_IN_FLIGHT:
            while self._calls:
                self._answer(self._calls.popleft())
            self._wait_for_batches(until=MAX_BATCHES_IN_FLIGHT // 2)
        elif (
            self.in_flight
            and self._submitted_since_poll >= POLL_EVERY_BATCHES
            and time.monotonic() - self._last_poll >= self.poll_interval
        ):
            self._last_poll, self._submitted_since_poll = time.monotonic(), 0
            self._calls.append(_Call(self._sender.submit(self.client.list_batches)))
        members = [(str(row.contact_id), row.member) for row, _ in rows]
        future = self._sender.submit(
            self.client.start_member_upsert_batch, list_id=self.audience.list_id, members=members
        )
        self._calls.append(_Call(future, rows))
        self._submitted_since_poll += 1

    def _answer(self, call: _Call) -> None:
        """What the sending thread got back: a batch to record in the ledger, or statuses to act on."""
        result = call.future.result()  # raises what the call raised
        if call.rows is None:
            self._apply_statuses(result)
        else:
            self._record_batch(result, call.rows)

    def _account_for_calls_after_failure(self) -> None:
        """The run is failing: still record every batch Mailchimp accepted, so the next run polls it instead
        of sending it again. Their own failures (and polls) don't matter any more."""
        while self._calls:
            call = self._calls.popleft()
            try:
                result = call.future.result()
                if call.rows is None:
                    self._count(calls=1)
                else:
                    self._record_batch(result, call.rows)
            except Exception:  # noqa: S112 - the failure being raised says what went wrong
                continue

    def _record_batch(self, status: BatchStatus, rows: list[tuple[MemberRow, bool]]) -> None:
        self._count(calls=1)
        batch = MemberBatch.objects.create(
            audience=self.audience,
            run=self.run,
            batch_id=status.id,
            members=[[row.contact_id, row.member.email, row.fingerprint, first] for row, first in rows],
        )
        self.in_flight[batch.batch_id] = batch
        self._save_progress("calls")

    def _wait_for_batches(self, *, until: int) -> None:
        """Poll Mailchimp (one call for all recent batches) until at most `until` of ours are in flight."""
        while len(self.in_flight) > until:
            self._last_poll, self._submitted_since_poll = time.monotonic(), 0
            self._apply_statuses(self.client.list_batches())
            if len(self.in_flight) > until:
                self.sleep(self.poll_interval)

    def _apply_statuses(self, listed: list[BatchStatus]) -> None:
        statuses = {status.id: status for status in listed}
        self._count(calls=1)
        for batch_id in list(self.in_flight):
            status = statuses.get(batch_id)
            if status is None:  # older than the listed page: ask for it alone
                status = self.client.get_batch(batch_id=batch_id)
                self._count(calls=1)
            if status.is_finished:
                self._finish(self.in_flight.pop(batch_id), status)
        self._save_progress("calls", "created", "updated", "failed", "errors")

    def _finish(self, batch: MemberBatch, status: BatchStatus) -> None:
        errors: dict[str, str] = {}
        retry_later: set[str] = set()
        if status.errored_operations:
            results = self.client.fetch_batch_results(response_body_url=status.response_body_url)
            self._count(calls=1)
            for result in results:
                if result.status_code == 429 or result.status_code >= 500:
                    retry_later.add(result.operation_id)  # Mailchimp could not do it now: not a refusal
                elif not result.ok:
                    response = result.response if isinstance(result.response, dict) else {}
                    detail = response.get("detail") or response.get("title") or f"HTTP {result.status_code}"
                    errors[result.operation_id] = f"{response.get('title', 'Error')}: {detail}"
        now = timezone.now()
        existing = set(Contact.objects.filter(pk__in=[m[0] for m in batch.members]).values_list("pk", flat=True))
        states = []
        for contact_id, email, fingerprint, first in batch.members:
            if str(contact_id) in retry_later:
                # No state recorded: the next run finds the fingerprint changed and sends it again.
                self._count(failed=1)
                self._error(f"{email}: Mailchimp was busy; sent again by the next sync")
                continue
            error = errors.get(str(contact_id), "")
            if error:
                self._count(failed=1)
                self._error(f"{email}: {error}")
            elif first:
                self._count(created=1)
            else:
                self._count(updated=1)
            if contact_id in existing:
                states.append(
                    ContactSyncState(  # by id: setting the instance costs more than the insert itself
                        contact_id=contact_id,
                        audience_id=self.audience.pk,
                        email=email,
                        fingerprint=fingerprint,
                        synced_at=now,
                        last_error=error,
                    )
                )
        with transaction.atomic():
            ContactSyncState.objects.bulk_create(
                states,
                update_conflicts=True,
                unique_fields=["contact", "audience"],
                update_fields=["email", "fingerprint", "synced_at", "last_error"],
            )
            MemberBatch.objects.filter(pk=batch.pk).update(
                status=MemberBatchStatus.FINISHED, errored=len(errors), finished_at=now
            )

    # -- segments ------------------------------------------------------------------------------------
    def _sync_segments(self) -> None:
        plans = [
            self._plan_segment(segment)
            for segment in Segment.objects.filter(audience=self.audience).prefetch_related("product_lines")
        ]
        changes = sum(len(plan.changes) for plan in plans)
        if changes > SEGMENT_CHANGES_ONE_BY_ONE:
            self._change_segments_in_batches([plan for plan in plans if plan.changes])
        else:
            for plan in plans:
                if not plan.changes:
                    continue
                try:
                    result = self.client.update_static_segment(
                        list_id=self.audience.list_id,
                        segment_id=plan.segment.mailchimp_segment_id,
                        add=plan.add,
                        remove=plan.remove,
                    )
                except MailchimpAPIError as exc:
                    plan.failure = exc
                    continue
                self._count(calls=result.calls)
                plan.errors = result.errors
        failure = None
        for plan in plans:
            for error in plan.errors[:20]:
                self._error(f"segment {plan.segment.name}: {error}")
            if plan.failure is not None:
                failure = failure or plan.failure
                continue
            self._record_segment(plan)
            self._count(segments_synced=1)
        self._save_progress("calls", "segments_synced", "errors")
        if failure is not None:  # refused: the run fails; transient: it is retried (the others are recorded)
            raise failure

    def _plan_segment(self, segment: Segment) -> _SegmentPlan:
        """What the segment should hold, what it holds, and the changes in between (creating its static
        segment in Mailchimp first if there is none)."""
        list_id = self.audience.list_id
        # Only addresses Mailchimp accepted: Mailchimp ignores the others in a static segment.
        desired = set(
            selectors.segment_contacts(segment)
            .filter(sync_states__audience=self.audience, sync_states__last_error="")
            .values_list("email", flat=True)
        )
        if segment.mailchimp_segment_id is None:
            created = self.client.create_static_segment(list_id=list_id, name=segment.name)
            self._count(calls=1)
            segment.mailchimp_segment_id = created.id
            Segment.objects.filter(pk=segment.pk).update(mailchimp_segment_id=created.id)
            SegmentMember.objects.filter(segment=segment).delete()
            current: set[str] = set()
        elif self.run.kind == SyncKind.FULL:
            current = set(
                self.client.get_static_segment_emails(list_id=list_id, segment_id=segment.mailchimp_segment_id)
            )
            self._count(calls=max(1, -(-len(current) // 1000)))
        else:
            current = set(SegmentMember.objects.filter(segment=segment).values_list("email", flat=True))
        add, remove = sorted(desired - current), sorted(current - desired)
        return _SegmentPlan(segment, desired, add, remove, static_segment_changes(add=add, remove=remove))

    def _change_segments_in_batches(self, plans: list[_SegmentPlan]) -> None:
        """The segments' changes as batch operations (`POST /lists/{id}/segments/{segment_id}` each), at most
        BATCH_MEMBERS operations per batch; each plan gets the errors Mailchimp reported for its changes."""
        list_id = self.audience.list_id
        by_operation: dict[str, _SegmentPlan] = {}
        operations = []
        for plan in plans:
            for index, body in enumerate(plan.changes):
                operation_id = f"segment-{plan.segment.pk}-{index}"
                by_operation[operation_id] = plan
                path = f"/lists/{list_id}/segments/{plan.segment.mailchimp_segment_id}"
                operations.append(BatchOperation(method="POST", path=path, operation_id=operation_id, body=body))
        for start in range(0, len(operations), BATCH_MEMBERS):
            batch = operations[start : start + BATCH_MEMBERS]
            status = self.client.start_batch(operations=batch)
            self._count(calls=1)
            while True:  # as _wait_for_batches: ask, then wait if it isn't finished
                status = self.client.get_batch(batch_id=status.id)
                self._count(calls=1)
                if status.is_finished:
                    break
                self.sleep(self.poll_interval)
            results = self.client.fetch_batch_results(response_body_url=status.response_body_url)
            self._count(calls=1)
            answered = {result.operation_id for result in results}
            for operation in batch:
                if operation.operation_id not in answered:
                    plan = by_operation[operation.operation_id]
                    plan.failure = plan.failure or MailchimpTransientError(
                        f"segment {plan.segment.name}: batch {status.id} has no result for {operation.operation_id}"
                    )
            for result in results:
                plan = by_operation.get(result.operation_id)
                if plan is None:
                    continue
                response = result.response if isinstance(result.response, dict) else {}
                if result.ok:
                    plan.errors += [str(error.get("error") or error) for error in response.get("errors") or []]
                    continue
                title = str(response.get("title") or "Error")
                detail = str(response.get("detail") or f"HTTP {result.status_code}")
                # As the same call made directly would have failed.
                transient = result.status_code == 429 or result.status_code >= 500
                plan.failure = (MailchimpTransientError if transient else MailchimpAPIError)(
                    f"segment {plan.segment.name}: {title}: {detail}",
                    status=result.status_code,
                    title=title,
                    detail=detail,
                )

    def _record_segment(self, plan: _SegmentPlan) -> None:
        segment, desired, add, remove = plan.segment, plan.desired, plan.add, plan.remove
        # What we last put into the segment is now exactly `desired`: the base of the next diff.
        with transaction.atomic():
            if self.run.kind == SyncKind.FULL:
                SegmentMember.objects.filter(segment=segment).delete()
                add = sorted(desired)
            for start in range(0, len(remove), 1000):
                SegmentMember.objects.filter(segment=segment, email__in=remove[start : start + 1000]).delete()
            SegmentMember.objects.bulk_create(
                [SegmentMember(segment_id=segment.pk, email=email) for email in add],
                ignore_conflicts=True,
                batch_size=1000,
            )
        remote_count = segment.remote_member_count
        if plan.changes or remote_count is None or self.run.kind == SyncKind.FULL:
            remote = self.client.get_static_segment(
                list_id=self.audience.list_id, segment_id=segment.mailchimp_segment_id
            )
            remote_count = remote.member_count
            self._count(calls=1)
        Segment.objects.filter(pk=segment.pk).update(
            member_count=len(desired), remote_member_count=remote_count, last_synced_at=timezone.now()
        )


def _chunks(rows: Iterator[MemberRow], size: int) -> Iterator[list[MemberRow]]:
    chunk: list[MemberRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
