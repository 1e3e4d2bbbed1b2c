"""Trading Grid → Partnerlink: partners, contacts, certifications and issues, by webhook and by polling.

Both paths end in the same services: webhook handlers (partners/tg_handlers.py) re-read the record from Trading
Grid and call `partner_upsert_from_tg` / `issue_upsert_from_tg`; the beat pollers below (run by partners/tasks.py)
call the same functions. Each compares what Trading Grid says with what we hold and writes only the difference,
so one change arriving twice (webhook and poll, or a retried webhook) is applied once: the second sees nothing
changed.

Conflict rule (also in README.md, "Trading Grid sync"):

- **Trading Grid wins for identity and status**: name, legal name, partner type, country, tier, onboarding
  status, compliance status, contract renewal and compliance review dates, trading addresses, certifications,
  and each contact's identity (first and last name, role, phone, language, time zone; the email is the key).
  They are overwritten whenever Trading Grid sends a value. If a partner manager had changed that field in
  Partnerlink (recorded by the admin in `manager_edits`), the overwrite is recorded as a conflict in the
  object's admin history (the partner's, or the contact's) and the mark is cleared.
- **Partnerlink wins for what it owns**: the partner manager and the contacts' Mailchimp state (marketing
  status, invalid email) are never taken from Trading Grid. Region and product lines are Partnerlink's once a
  partner manager has set them here (a non-empty value marked in `manager_edits`); until then Trading Grid's
  apply. A manager who clears the region hands it back to Trading Grid.
- **An empty value from Trading Grid never clears ours** (a missing or unreadable field, an empty list of
  addresses or product lines): payloads can be partial. Two exceptions, because the profile's list is the whole
  truth for them: certifications Trading Grid no longer lists are deleted when the profile carries a
  certification list, and trading addresses are replaced by Trading Grid's list when it has at least one.
- **Contacts are removed only by a `partner.contact.removed` event** (and only when the re-read profile no
  longer lists them), never because a payload lacks them. An email change (`partner.contact.updated` with a
  `previous_email`) renames the contact, keeping its Mailchimp state.
- **Never older over newer**: a profile (or issue) whose `updated_at` is older than the one last applied is
  ignored, so a stale or reordered read cannot undo a newer one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from django.conf import settings
from django.contrib.admin.models import ADDITION, CHANGE
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from connectors import services as connector_services
from connectors.models import EventSource
from connectors.tradinggrid.client import TradingGridClient, get_client
from connectors.tradinggrid.errors import TradingGridAuthError, TradingGridTransientError
from connectors.tradinggrid.payloads import (
    TGIssue,
    TGPartner,
    directory_entry_from_tg,
    issue_from_tg,
    lens_transaction_to_issue,
    parse_datetime,
    partner_from_tg,
    trading_addresses_from_tg,
)
from partners.models import (
    Certification,
    CommunityIssue,
    Contact,
    ContactSource,
    MarketingStatus,
    PartnerType,
    ProductLine,
    SyncCursor,
    TradingAddress,
    TradingPartner,
)
from partners.services import history_record

logger = logging.getLogger(__name__)

# Partner fields Trading Grid owns: overwritten whenever it sends a value.
TG_OWNED_FIELDS = (
    "name",
    "legal_name",
    "partner_type",
    "country_code",
    "tier",
    "onboarding_status",
    "compliance_status",
    "contract_renewal_at",
    "compliance_review_at",
)
# Contact fields Trading Grid owns (the email is the key).
TG_OWNED_CONTACT_FIELDS = ("first_name", "last_name", "role", "phone", "language", "timezone")
# What the admin records as a manager's edit: everything a sync may overwrite or must respect.
TRACKED_PARTNER_FIELDS = (*TG_OWNED_FIELDS, "region", "product_lines", "trading_addresses")
TRACKED_CONTACT_FIELDS = ("email", *TG_OWNED_CONTACT_FIELDS)

WRITE_BACK_STATUSES = (MarketingStatus.UNSUBSCRIBED, MarketingStatus.CLEANED)

DIRECTORY_STREAM = "tradinggrid:partner-directory"
ISSUES_STREAM = "tradinggrid:issues"
LENS_STREAM = "tradinggrid:lens-failures"
# Our own inbox event type for a failed Lens transaction the poll could not match to a partner.
LENS_FAILURE_EVENT = "lens.transaction.failed"
# Lens indexes late now and then: each poll re-reads this much before its cursor (applying twice is harmless).
LENS_OVERLAP = timedelta(minutes=15)
LENS_FIRST_POLL_LOOKBACK = timedelta(days=7)
# Directory keys that say when an entry last changed; without one, every poll re-reads the profile.
_DIRECTORY_STAMP_KEYS = ("lastModified", "lastModifiedDate", "modifiedDate", "updated_at", "updatedAt")
# An unchanged directory entry skips the profile read, but only for this long: should the directory's stamp
# not move with every profile change, a profile is still re-read at least once a day.
PROFILE_REFRESH_AFTER = timedelta(hours=24)


# --- What changed ----------------------------------------------------------------------------------

# Flows that react to partner changes (the onboarding journeys of campaigns/journeys.py) register here at
# start-up. Each is called inside the upsert's transaction, so what it records (its ledger rows) commits or
# rolls back with the change itself: a change applied is never a trigger lost, and one applied twice (webhook
# and poll) is seen once.
partner_change_listeners: list[Callable[[PartnerChange], None]] = []


@dataclass(frozen=True)
class PartnerChange:
    """What one upsert did to a partner: what flows that react to partners (onboarding journeys, F2) read.

    `status_before`/`status_after` are the onboarding status (before is None for a new partner);
    `contacts_changed` maps an email to the fields that changed; `conflicts` are fields Trading Grid
    overwrote after a partner manager had changed them here; `kept` are fields where Trading Grid differs
    but Partnerlink's value stays (see the module docstring)."""

    tg_company_id: str
    source_event: str
    partner_id: int | None = None
    created: bool = False
    stale: bool = False
    changed_fields: tuple[str, ...] = ()
    status_before: str | None = None
    status_after: str | None = None
    contacts_added: tuple[str, ...] = ()
    contacts_changed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    contacts_removed: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(
            self.created or self.changed_fields or self.contacts_added or self.contacts_changed
            or self.contacts_removed
        )

    @property
    def status_changed(self) -> bool:
        return self.status_after is not None and self.status_before != self.status_after

    @property
    def became_approved(self) -> bool:
        """The "partner approved" trigger: approved now and not before (a partner new to us counts)."""
        return self.status_changed and self.status_after == "approved"

    @property
    def profile_updated(self) -> bool:
        """The "profile updated" trigger: an existing partner whose fields changed (see `changed_fields`)."""
        return not self.created and bool(self.changed_fields)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["contacts_changed"] = {email: list(fields) for email, fields in self.contacts_changed.items()}
        return data

    def describe(self) -> str:
        if self.stale:
            return f"{self.tg_company_id}: Trading Grid's record is older than the one applied; nothing changed."
        if not self.changed:
            text = f"{self.tg_company_id}: nothing changed"
        elif self.created:
            text = f"{self.tg_company_id}: created (onboarding status {self.status_after})"
        else:
            text = f"{self.tg_company_id}: " + (
                f"changed {', '.join(self.changed_fields)}" if self.changed_fields else "partner fields unchanged"
            )
            if self.status_changed:
                text += f"; onboarding status {self.status_before} → {self.status_after}"
        if self.contacts_added:
            text += f"; contacts added: {', '.join(self.contacts_added)}"
        if self.contacts_changed:
            text += "; contacts changed: " + ", ".join(
                f"{email} ({', '.join(fields)})" for email, fields in self.contacts_changed.items()
            )
        if self.contacts_removed:
            text += f"; contacts removed: {', '.join(self.contacts_removed)}"
        if self.conflicts:
            text += f"; overwrote Partnerlink edits of: {', '.join(self.conflicts)}"
        if self.kept:
            text += f"; kept Partnerlink's {', '.join(self.kept)}"
        return text + "."


@dataclass(frozen=True)
class IssueChange:
    """What one upsert did to a community issue (alerts, F3, react to created and status changes)."""

    tg_issue_id: str
    partner_company_id: str | None = None
    issue_id: int | None = None
    created: bool = False
    unmatched: bool = False
    stale: bool = False
    changed_fields: tuple[str, ...] = ()
    status_before: str | None = None
    status_after: str | None = None

    @property
    def changed(self) -> bool:
        return self.created or bool(self.changed_fields)

    @property
    def status_changed(self) -> bool:
        return self.status_after is not None and self.status_before != self.status_after

    def describe(self) -> str:
        if self.unmatched:
            whom = self.partner_company_id or "its trading addresses"
            return f"{self.tg_issue_id}: no partner here for {whom}; kept."
        if self.stale:
            return f"{self.tg_issue_id}: Trading Grid's record is older than the one applied; nothing changed."
        if self.created:
            return f"{self.tg_issue_id}: created for {self.partner_company_id} (status {self.status_after})."
        if not self.changed_fields:
            return f"{self.tg_issue_id}: nothing changed."
        text = f"{self.tg_issue_id}: changed {', '.join(self.changed_fields)}"
        if self.status_changed:
            text += f"; status {self.status_before} → {self.status_after}"
        return text + "."


@dataclass
class PollResult:
    stream: str
    seen: int = 0
    fetched: int = 0
    changed: int = 0
    unmatched: int = 0
    failed: int = 0
    skipped: bool = False
    cursor: str = ""

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.stream}: another poll is running; skipped."
        return (
            f"{self.stream}: seen={self.seen} fetched={self.fetched} changed={self.changed} "
            f"unmatched={self.unmatched} failed={self.failed} cursor={self.cursor or '-'}"
        )


# --- Partners --------------------------------------------------------------------------------------


def partner_read_from_tg(*, company_id: str, client: TradingGridClient | None = None) -> TGPartner:
    """The partner as Trading Grid holds it now: its community profile completed by its directory entry
    (name, legal name and trading addresses live in the directory)."""
    client = client or get_client()
    company_id = company_id.strip().upper()
    profile = client.get_partner_profile(company_id=company_id)
    entry = next(
        (
            record
            for record in client.iter_partner_directory(partner_company_id=company_id)
            if (mapped := directory_entry_from_tg(record)) and mapped.tg_company_id == company_id
        ),
        None,
    )
    return partner_from_tg(profile=profile, directory_entry=entry, company_id=company_id)


def partner_sync_from_tg(
    *,
    company_id: str,
    source_event: str,
    removed_contact_emails: Collection[str] = (),
    renamed_contact_emails: Mapping[str, str] | None = None,
    client: TradingGridClient | None = None,
) -> PartnerChange:
    """Re-read one partner from Trading Grid and apply it: what a webhook about a partner leads to."""
    partner = partner_read_from_tg(company_id=company_id, client=client)
    return partner_upsert_from_tg(
        partner=partner,
        source_event=source_event,
        removed_contact_emails=removed_contact_emails,
        renamed_contact_emails=renamed_contact_emails,
    )


@transaction.atomic
def partner_upsert_from_tg(
    *,
    partner: TGPartner,
    source_event: str,
    removed_contact_emails: Collection[str] = (),
    renamed_contact_emails: Mapping[str, str] | None = None,
) -> PartnerChange:
    """Apply Trading Grid's view of a partner (by BUID) under the conflict rule of this module's docstring:
    fields, trading addresses, certifications, product lines and contacts. Writes only what differs and
    returns what changed. `removed_contact_emails` are contacts a `partner.contact.removed` event named;
    `renamed_contact_emails` maps a contact's previous email to its new one."""
    buid = partner.tg_company_id
    obj = _locked_partner(buid)
    created = False
    first_sync = obj is None or obj.tg_synced_at is None
    if obj is None:
        obj, created = _partner_create(partner)
    elif partner.updated_at and obj.tg_updated_at and partner.updated_at < obj.tg_updated_at:
        return PartnerChange(tg_company_id=buid, source_event=source_event, partner_id=obj.pk, stale=True)

    status_before = None if created else obj.onboarding_status
    edits = dict(obj.manager_edits)
    conflicts: list[str] = []
    conflict_notes: list[str] = []
    kept: list[str] = []
    changed = [] if created else _apply_partner_fields(obj, partner, edits, conflicts, conflict_notes, kept)
    if changed:
        obj.save(update_fields=[*changed, "updated_at"])
    if _apply_product_lines(obj, partner, edits, kept, created=created):
        changed.append("product_lines")
    if _apply_trading_addresses(obj, partner, edits, conflicts, conflict_notes, source_event):
        changed.append("trading_addresses")
    if _apply_certifications(obj, partner):
        changed.append("certifications")
    contacts = _apply_contacts(
        obj,
        partner,
        removed=removed_contact_emails,
        renamed=renamed_contact_emails or {},
        source_event=source_event,
    )

    TradingPartner.objects.filter(pk=obj.pk).update(
        tg_raw=_jsonable(partner.raw),
        tg_updated_at=_newest(obj.tg_updated_at, partner.updated_at),
        tg_synced_at=timezone.now(),
        manager_edits=edits,
    )
    change = PartnerChange(
        tg_company_id=buid,
        source_event=source_event,
        partner_id=obj.pk,
        created=created,
        changed_fields=tuple(changed),
        status_before=status_before,
        status_after=obj.onboarding_status,
        contacts_added=contacts.added,
        contacts_changed=contacts.changed,
        contacts_removed=contacts.removed,
        conflicts=tuple(conflicts),
        kept=tuple(kept),
    )
    if change.changed:
        action = ADDITION if created else CHANGE
        history_record(obj=obj, action=action, message=f"Trading Grid ({source_event}): {change.describe()}")
    for note in [*conflict_notes, *contacts.notes]:
        history_record(obj=obj, message=note)
    if change.changed:
        for listener in partner_change_listeners:
            listener(change)
    if created:
        _enqueue_partner_issues_sync(buid)
    if first_sync and not created:
        # Consent changes that waited for Trading Grid to know this partner (see the write-back below).
        partner_marketing_status_write_back_enqueue(partner_ids=[obj.pk])
    return change


def _locked_partner(buid: str) -> TradingPartner | None:
    return TradingPartner.objects.select_for_update().filter(tg_company_id=buid).first()


def _partner_create(partner: TGPartner) -> tuple[TradingPartner, bool]:
    values = {name: value for name in TG_OWNED_FIELDS if (value := _tg_value(partner, name)) is not None}
    values.setdefault("name", partner.tg_company_id)
    values.setdefault("partner_type", PartnerType.SUPPLIER)  # a required field; Trading Grid sent none
    if partner.region:
        values["region"] = partner.region
    try:
        with transaction.atomic():
            return TradingPartner.objects.create(tg_company_id=partner.tg_company_id, **values), True
    except IntegrityError:  # another worker created it meanwhile: update that one instead
        return _locked_partner(partner.tg_company_id), False  # type: ignore[return-value]


def _tg_value(partner: TGPartner, name: str) -> Any:
    """Trading Grid's value for one of our fields, trimmed to fit; None when it sent none."""
    value = getattr(partner, name)
    if value in (None, ""):
        return None
    if isinstance(value, str):
        return value[: TradingPartner._meta.get_field(name).max_length]
    return value


def _ours(obj: TradingPartner, name: str) -> Any:
    value = getattr(obj, name)
    return value.code if name == "country_code" else value  # CountryField holds a Country


def _apply_partner_fields(
    obj: TradingPartner,
    partner: TGPartner,
    edits: dict,
    conflicts: list[str],
    notes: list[str],
    kept: list[str],
) -> list[str]:
    changed = []
    for name in TG_OWNED_FIELDS:
        theirs = _tg_value(partner, name)
        if theirs is None:
            continue
        ours = _ours(obj, name)
        edit = edits.pop(name, None)  # once Trading Grid's value is applied (or agrees), the mark has done its job
        if theirs == ours:
            continue
        if edit:
            conflicts.append(name)
            notes.append(_conflict_note(obj, name, ours, theirs, edit))
        setattr(obj, name, theirs)
        changed.append(name)
    # Region: Partnerlink's once a manager set it here.
    if partner.region and partner.region != obj.region:
        if obj.region and "region" in edits:
            kept.append("region")
        else:
            edits.pop("region", None)
            obj.region = partner.region
            changed.append("region")
    return changed


def _conflict_note(obj, name: str, ours: Any, theirs: Any, edit: Mapping[str, str]) -> str:
    label = obj._meta.get_field(name).verbose_name
    return (
        f"Conflict: Trading Grid overwrote {label} {_show(ours)} with {_show(theirs)}. "
        f"{edit.get('by') or 'A partner manager'} had changed it in Partnerlink on {edit.get('at', '?')[:16]}; "
        f"Trading Grid wins for {label}."
    )


def _show(value: Any) -> str:
    if value in (None, ""):
        return "(empty)"
    if isinstance(value, list | tuple | set):
        return "[" + ", ".join(sorted(str(v) for v in value)) + "]"
    return f"'{value}'"


def _apply_product_lines(obj: TradingPartner, partner: TGPartner, edits: dict, kept: list[str], *, created: bool
                         ) -> bool:
    if not partner.product_lines:
        return False
    current = {line.name.lower() for line in obj.product_lines.all()} if not created else set()
    if current == {name.lower() for name in partner.product_lines}:
        return False
    if current and "product_lines" in edits:
        kept.append("product_lines")
        return False
    edits.pop("product_lines", None)
    obj.product_lines.set(_product_lines_named(partner.product_lines))
    return True


def _product_lines_named(names: Iterable[str]) -> list[ProductLine]:
    """Product lines by name, case-insensitively; missing ones are created (the first spelling wins)."""
    lines = []
    for name in names:
        name = name.strip()[:100]
        line = ProductLine.objects.filter(name__iexact=name).first()
        if line is None:
            try:
                with transaction.atomic():
                    line = ProductLine.objects.create(name=name)
            except IntegrityError:  # created meanwhile by another worker
                line = ProductLine.objects.get(name__iexact=name)
        lines.append(line)
    return lines


def _apply_trading_addresses(
    obj: TradingPartner,
    partner: TGPartner,
    edits: dict,
    conflicts: list[str],
    notes: list[str],
    source_event: str,
) -> bool:
    wanted = [address[:40] for address in partner.trading_addresses]
    if not wanted:
        return False
    held = {a.address: a for a in obj.trading_addresses.all()}
    primary = wanted[0]
    if set(held) == set(wanted) and all(a.is_primary == (a.address == primary) for a in held.values()):
        edits.pop("trading_addresses", None)
        return False
    edit = edits.pop("trading_addresses", None)
    if edit:
        conflicts.append("trading_addresses")
        notes.append(
            f"Conflict: Trading Grid replaced the trading addresses {_show(held)} with {_show(wanted)}. "
            f"{edit.get('by') or 'A partner manager'} had changed them in Partnerlink on {edit.get('at', '?')[:16]}; "
            "Trading Grid wins for trading addresses."
        )
    TradingAddress.objects.filter(partner=obj).exclude(address__in=wanted).delete()
    for address in wanted:
        is_primary = address == primary
        existing = held.get(address)
        if existing is not None:
            if existing.is_primary != is_primary:
                TradingAddress.objects.filter(pk=existing.pk).update(is_primary=is_primary)
            continue
        elsewhere = TradingAddress.objects.select_related("partner").filter(address=address).first()
        if elsewhere is not None:
            # Trading Grid says the address is this partner's now: move it, and say so on the other partner.
            history_record(
                obj=elsewhere.partner,
                message=f"Trading Grid ({source_event}): trading address {address} now belongs to "
                f"{obj.tg_company_id}; removed here.",
            )
            TradingAddress.objects.filter(pk=elsewhere.pk).update(partner=obj, is_primary=is_primary)
        else:
            TradingAddress.objects.create(partner=obj, address=address, is_primary=is_primary)
    return True


def _apply_certifications(obj: TradingPartner, partner: TGPartner) -> bool:
    wanted: dict[tuple[str, str], Any] = {}
    for cert in partner.certifications:
        wanted.setdefault((cert.type[:100], cert.number[:100]), cert)
    authoritative = "certifications" in ((partner.raw or {}).get("profile") or {})
    held = {(c.type, c.number): c for c in obj.certifications.all()}
    changed = False
    for key, cert in wanted.items():
        values = {"issuer": cert.issuer[:200], "issued_at": cert.issued_at, "expires_at": cert.expires_at}
        existing = held.get(key)
        if existing is None:
            Certification.objects.create(partner=obj, type=key[0], number=key[1], **values)
            changed = True
        elif any(getattr(existing, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(existing, name, value)
            existing.save(update_fields=[*values, "updated_at"])
            changed = True
    if authoritative:
        gone = [c.pk for key, c in held.items() if key not in wanted]
        if gone:
            Certification.objects.filter(pk__in=gone).delete()
            changed = True
    return changed


@dataclass
class _ContactsOutcome:
    added: tuple[str, ...] = ()
    changed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


def _apply_contacts(
    obj: TradingPartner,
    partner: TGPartner,
    *,
    removed: Collection[str],
    renamed: Mapping[str, str],
    source_event: str,
) -> _ContactsOutcome:
    outcome = _ContactsOutcome()
    held = {c.email: c for c in Contact.objects.filter(partner=obj)}
    in_tg = {c.email for c in partner.contacts}
    changed: dict[str, list[str]] = {}

    for old, new in renamed.items():
        old, new = old.strip().lower(), new.strip().lower()
        contact = held.get(old)
        if contact is None or old == new or new not in in_tg or old in in_tg:
            continue  # nothing to rename, or Trading Grid lists both (then they are two contacts)
        if new in held:
            outcome.notes.append(
                f"Trading Grid ({source_event}) changed the contact {old} to {new}, but this partner already has "
                f"{new}: {old} is kept as it is."
            )
            continue
        contact.email = new
        contact.save(update_fields=["email", "updated_at"])
        held[new] = held.pop(old)
        changed.setdefault(new, []).append("email")

    added = []
    for tg_contact in partner.contacts:
        contact = held.get(tg_contact.email)
        values = {
            name: value[: Contact._meta.get_field(name).max_length]
            for name in TG_OWNED_CONTACT_FIELDS
            if (value := getattr(tg_contact, name) or "")
        }
        if contact is None:
            held[tg_contact.email] = Contact.objects.create(
                partner=obj, email=tg_contact.email, source=ContactSource.TRADING_GRID, **values
            )
            added.append(tg_contact.email)
            continue
        fields = []
        edits = dict(contact.manager_edits)
        for name, theirs in values.items():
            ours = getattr(contact, name)
            edit = edits.pop(name, None)
            if theirs == ours:
                continue
            if edit:
                history_record(obj=contact, message=_conflict_note(contact, name, ours, theirs, edit))
                outcome.notes.append(f"Conflict on contact {contact.email}: Trading Grid overwrote its {name} "
                                     f"(changed in Partnerlink by {edit.get('by') or 'a partner manager'}).")
            setattr(contact, name, theirs)
            fields.append(name)
        if fields or edits != contact.manager_edits:
            contact.manager_edits = edits
            contact.save(update_fields=[*fields, "manager_edits", "updated_at"])
        if fields:
            changed.setdefault(contact.email, []).extend(fields)

    gone = []
    for email in removed:
        email = email.strip().lower()
        if email in in_tg:
            outcome.notes.append(
                f"Trading Grid ({source_event}) said {email} was removed, but its profile lists it again: kept."
            )
            continue
        contact = held.pop(email, None)
        if contact is not None:
            contact.delete()
            gone.append(email)

    outcome.added = tuple(added)
    outcome.changed = {email: tuple(fields) for email, fields in changed.items()}
    outcome.removed = tuple(gone)
    return outcome


def _enqueue_partner_issues_sync(company_id: str) -> None:
    # Issues raised before we knew the partner were kept unmatched: fetch its issue history once it exists.
    from partners.tasks import tg_partner_issues_sync_task

    tg_partner_issues_sync_task.delay_on_commit(company_id)


# --- Manager edits (the admin records them; the conflict rule reads them) ----------------------------


def partner_manager_edits_record(
    *, partner: TradingPartner, fields: Iterable[str], user: AbstractBaseUser
) -> list[str]:
    """Remember which synced fields a partner manager changed in Partnerlink, and when, so a later sync can
    respect them (region, product lines) or record the conflict when Trading Grid overwrites them."""
    tracked = sorted({name for name in fields if name in TRACKED_PARTNER_FIELDS})
    if tracked:
        partner.manager_edits = _mark_edits(TradingPartner, partner.pk, tracked, user)
    return tracked


def contact_manager_edits_record(*, contact: Contact, fields: Iterable[str], user: AbstractBaseUser) -> list[str]:
    tracked = sorted({name for name in fields if name in TRACKED_CONTACT_FIELDS})
    if tracked:
        contact.manager_edits = _mark_edits(Contact, contact.pk, tracked, user)
    return tracked


@transaction.atomic
def _mark_edits(model, pk: int, fields: list[str], user: AbstractBaseUser) -> dict:
    locked = model.objects.select_for_update().only("manager_edits").get(pk=pk)
    stamp = {"at": timezone.now().isoformat(), "by": user.get_username()}
    edits = {**locked.manager_edits, **{name: stamp for name in fields}}
    model.objects.filter(pk=pk).update(manager_edits=edits)  # not save(): no updated_at bump, no other field
    return edits


# --- Issues and Lens failures ----------------------------------------------------------------------

_ISSUE_FIELDS = (
    "category",
    "reason_code",
    "severity",
    "status",
    "title",
    "description",
    "po_number",
    "asn_id",
    "invoice_number",
    "amount",
    "currency",
    "raised_at",
    "due_at",
    "resolved_at",
)
# A Lens failure's status is the community's and Partnerlink's to move, not Lens's (it only says "failed").
_LENS_KEPT_FIELDS = ("status", "resolved_at", "raised_at")


@transaction.atomic
def issue_upsert_from_tg(*, issue: TGIssue, partner: TradingPartner | None = None) -> IssueChange:
    """Apply a community issue (or a Lens failure presented as one) by its id. The partner is found by the
    issue's BUID unless given; an issue whose partner we don't hold is reported `unmatched` and not stored."""
    existing = CommunityIssue.objects.select_for_update().filter(tg_issue_id=issue.tg_issue_id).first()
    if partner is None and issue.partner_company_id:
        partner = TradingPartner.objects.filter(tg_company_id=issue.partner_company_id).first()
    if partner is None and existing is None:
        return IssueChange(tg_issue_id=issue.tg_issue_id, partner_company_id=issue.partner_company_id, unmatched=True)
    values = _issue_values(issue)
    if existing is None:
        try:
            with transaction.atomic():
                created = CommunityIssue.objects.create(
                    tg_issue_id=issue.tg_issue_id, partner=partner, tg_updated_at=issue.updated_at, **values
                )
        except IntegrityError:  # created meanwhile by another worker: apply to that one
            return issue_upsert_from_tg(issue=issue, partner=partner)
        return IssueChange(
            tg_issue_id=issue.tg_issue_id,
            partner_company_id=partner.tg_company_id,
            issue_id=created.pk,
            created=True,
            changed_fields=tuple(values),
            status_after=created.status,
        )
    buid = existing.partner.tg_company_id
    if issue.updated_at and existing.tg_updated_at and issue.updated_at < existing.tg_updated_at:
        return IssueChange(tg_issue_id=issue.tg_issue_id, partner_company_id=buid, issue_id=existing.pk, stale=True)
    status_before = existing.status
    if issue.source == "lens":
        values = {name: value for name, value in values.items() if name not in _LENS_KEPT_FIELDS}
    changed = [name for name, value in values.items() if getattr(existing, name) != value]
    for name in changed:
        setattr(existing, name, values[name])
    existing.tg_updated_at = _newest(existing.tg_updated_at, issue.updated_at)
    existing.save(update_fields=[*changed, "tg_updated_at", "updated_at"] if changed else ["tg_updated_at"])
    change = IssueChange(
        tg_issue_id=issue.tg_issue_id,
        partner_company_id=buid,
        issue_id=existing.pk,
        changed_fields=tuple(changed),
        status_before=status_before,
        status_after=existing.status,
    )
    if changed:
        history_record(obj=existing, message=f"Trading Grid ({issue.source}): {change.describe()}")
    return change


def _issue_values(issue: TGIssue) -> dict[str, Any]:
    def text(value: str, name: str) -> str:
        return (value or "")[: CommunityIssue._meta.get_field(name).max_length]

    return {
        "category": issue.category,
        "reason_code": text(issue.reason_code, "reason_code"),
        "severity": issue.severity,
        "status": issue.status,
        "title": text(issue.title, "title"),
        "description": issue.description or "",
        "po_number": text(issue.po_number, "po_number"),
        "asn_id": text(issue.asn_id, "asn_id"),
        "invoice_number": text(issue.invoice_number, "invoice_number"),
        "amount": issue.amount,
        "currency": text(issue.currency, "currency"),
        # A required field: an issue without a readable raise time is dated when we first saw it.
        "raised_at": issue.raised_at or issue.updated_at or timezone.now(),
        "due_at": issue.due_at,
        "resolved_at": issue.resolved_at,
    }


def issue_sync_from_tg(*, issue_id: str, client: TradingGridClient | None = None) -> IssueChange:
    """Re-read one community issue and apply it: what an issue webhook leads to."""
    client = client or get_client()
    return issue_upsert_from_tg(issue=issue_from_tg(client.get_issue(issue_id=issue_id)))


def partner_for_trading_addresses(addresses: Iterable[str]) -> TradingPartner | None:
    """The partner holding the first of these `QUALIFIER:ID` addresses we know, or None."""
    addresses = [a.strip().upper() for a in addresses if a]
    if not addresses:
        return None
    found = TradingAddress.objects.select_related("partner").filter(address__in=addresses)
    held = {a.address: a.partner for a in found}
    return next((held[a] for a in addresses if a in held), None)


def lens_failure_upsert_from_tg(
    *, transaction_record: Mapping[str, Any], our_trading_addresses: Collection[str]
) -> IssueChange | None:
    """A failed Lens transaction as an `edi_transaction_failure` issue keyed `lens:<correlationid>`, for the
    partner whose trading address is the other side of it. None when the transaction is not a failure;
    `unmatched` when no partner here has that address."""
    issue = lens_transaction_to_issue(transaction_record, our_trading_addresses=our_trading_addresses)
    if issue is None:
        return None
    partner = partner_for_trading_addresses(issue.partner_trading_addresses)
    if partner is None:
        return IssueChange(
            tg_issue_id=issue.tg_issue_id,
            partner_company_id=", ".join(issue.partner_trading_addresses) or None,
            unmatched=True,
        )
    return issue_upsert_from_tg(issue=issue, partner=partner)


# --- Polling (beat) --------------------------------------------------------------------------------


def sync_cursor_get(*, stream: str) -> str:
    return SyncCursor.objects.filter(stream=stream).values_list("value", flat=True).first() or ""


@transaction.atomic
def sync_cursor_advance(*, stream: str, value: str) -> str:
    """Move a time cursor forward (never back: an overlapping older run cannot rewind it). Returns the value kept."""
    cursor, _ = SyncCursor.objects.select_for_update().get_or_create(stream=stream)
    current = parse_datetime(cursor.value)
    proposed = parse_datetime(value)
    if proposed is not None and (current is None or proposed > current):
        cursor.value = proposed.isoformat()
        cursor.save(update_fields=["value", "updated_at"])
    return cursor.value


# Failures that concern every record, not one: the task retries (transient) or fails loudly (credentials).
_STOP_THE_POLL = (TradingGridTransientError, TradingGridAuthError)


@contextmanager
def _one_poll_at_a_time(stream: str) -> Iterator[bool]:
    """A run that overlaps the previous one (slow host, beat tick) stands down; the lock lapses with the task."""
    key = f"partnerlink:poll-lock:{stream}"
    acquired = cache.add(key, "1", timeout=settings.CELERY_TASK_TIME_LIMIT)
    try:
        yield acquired
    finally:
        if acquired:
            cache.delete(key)


def partners_poll_from_tg(*, client: TradingGridClient | None = None) -> PollResult:
    """Beat: walk the partner directory and apply the profiles that changed since we last read them.

    A directory entry identical to the one we hold (and carrying a change stamp) is skipped without reading
    the profile; a profile identical to the one we hold is not applied again. Partners gone from the
    directory are left as they are."""
    result = PollResult(stream=DIRECTORY_STREAM)
    with _one_poll_at_a_time(DIRECTORY_STREAM) as acquired:
        if not acquired:
            result.skipped = True
            return result
        client = client or get_client()
        started = timezone.now()
        for batch in _batched(client.iter_partner_directory(), 500):
            entries = [(entry, record) for record in batch if (entry := directory_entry_from_tg(record))]
            held = {
                buid: (raw or {}, synced_at)
                for buid, raw, synced_at in TradingPartner.objects.filter(
                    tg_company_id__in=[e.tg_company_id for e, _ in entries]
                ).values_list("tg_company_id", "tg_raw", "tg_synced_at")
            }
            for entry, record in entries:
                result.seen += 1
                stored, synced_at = held.get(entry.tg_company_id, ({}, None))
                fresh = synced_at is not None and synced_at > started - PROFILE_REFRESH_AFTER
                _poll_one_partner(client, entry.tg_company_id, record, stored, fresh, result)
        result.cursor = sync_cursor_advance(stream=DIRECTORY_STREAM, value=started.isoformat())
    logger.info("%s", result)
    return result


def _poll_one_partner(
    client, company_id: str, record: dict, stored: Mapping[str, Any], fresh: bool, result: PollResult
) -> None:
    if fresh and stored.get("directory") == record and any(record.get(key) for key in _DIRECTORY_STAMP_KEYS):
        return
    try:
        profile = client.get_partner_profile(company_id=company_id)
        result.fetched += 1
        if stored.get("profile") == profile and stored.get("directory") == record:
            TradingPartner.objects.filter(tg_company_id=company_id).update(tg_synced_at=timezone.now())
            return
        partner = partner_from_tg(profile=profile, directory_entry=record, company_id=company_id)
        change = partner_upsert_from_tg(partner=partner, source_event="poll")
    except _STOP_THE_POLL:
        raise
    except Exception:  # one odd partner must not stop the others
        logger.exception("Trading Grid poll: partner %s could not be applied", company_id)
        result.failed += 1
        return
    if change.changed:
        result.changed += 1


def issues_poll_from_tg(*, client: TradingGridClient | None = None) -> PollResult:
    """Beat: issues changed since the cursor (`updated_since`, inclusive: the boundary issue comes again and
    changes nothing). Issues of partners we don't hold are kept in the inbox as unmatched."""
    result = PollResult(stream=ISSUES_STREAM)
    with _one_poll_at_a_time(ISSUES_STREAM) as acquired:
        if not acquired:
            result.skipped = True
            return result
        client = client or get_client()
        since = sync_cursor_get(stream=ISSUES_STREAM) or None
        newest = since
        for record in client.iter_issues(updated_since=since):
            result.seen += 1
            try:
                issue = issue_from_tg(record)
                change = issue_upsert_from_tg(issue=issue)
            except _STOP_THE_POLL:
                raise
            except Exception:  # one odd issue must not stop the others
                logger.exception("Trading Grid poll: issue %s could not be applied", record.get("id"))
                result.failed += 1
                continue
            if change.unmatched:
                result.unmatched += 1
                _keep_unmatched(
                    dedupe_key=f"poll:issue:{issue.tg_issue_id}:{record.get('updated_at') or ''}",
                    event_type="issue.updated",
                    data={"partner_company_id": issue.partner_company_id, "issue": record},
                )
            elif change.changed:
                result.changed += 1
            if record.get("updated_at"):
                newest = record["updated_at"]  # oldest change first: the last one seen is the newest
                if result.seen % 200 == 0:
                    sync_cursor_advance(stream=ISSUES_STREAM, value=newest)
        result.cursor = sync_cursor_advance(stream=ISSUES_STREAM, value=newest) if newest else ""
    logger.info("%s", result)
    return result


def lens_failures_poll_from_tg(*, client: TradingGridClient | None = None, now: datetime | None = None
                               ) -> PollResult:
    """Beat: failed Lens transactions (status V/F/H, FA status R/E/T) since the cursor, less an overlap,
    become `edi_transaction_failure` issues. Those no partner here has the address of are kept unmatched."""
    result = PollResult(stream=LENS_STREAM)
    with _one_poll_at_a_time(LENS_STREAM) as acquired:
        if not acquired:
            result.skipped = True
            return result
        client = client or get_client()
        cursor = parse_datetime(sync_cursor_get(stream=LENS_STREAM))
        since = cursor - LENS_OVERLAP if cursor else (now or timezone.now()) - LENS_FIRST_POLL_LOOKBACK
        ours = list(trading_addresses_from_tg(client.get_company().get("tradingAddresses")))
        newest: datetime | None = cursor
        for record in client.iter_failed_transactions(since=since):
            result.seen += 1
            issue = lens_transaction_to_issue(record, our_trading_addresses=ours)
            if issue is None:
                continue
            change = lens_failure_upsert_from_tg(transaction_record=record, our_trading_addresses=ours)
            if change is not None and change.unmatched:
                result.unmatched += 1
                _keep_unmatched(
                    dedupe_key=f"{issue.tg_issue_id}:{issue.reason_code}",
                    event_type=LENS_FAILURE_EVENT,
                    data={"transaction": record, "our_trading_addresses": ours},
                )
            elif change is not None and change.changed:
                result.changed += 1
            newest = _newest(newest, issue.raised_at)
        result.cursor = sync_cursor_advance(stream=LENS_STREAM, value=newest.isoformat()) if newest else ""
    logger.info("%s", result)
    return result


def issues_sync_for_partner_from_tg(*, company_id: str, client: TradingGridClient | None = None) -> PollResult:
    """Every community issue of one partner (run once when the partner first appears here)."""
    result = PollResult(stream=f"tradinggrid:issues:{company_id}")
    client = client or get_client()
    for record in client.iter_issues(partner=company_id):
        result.seen += 1
        change = issue_upsert_from_tg(issue=issue_from_tg(record))
        result.changed += change.changed
        result.unmatched += change.unmatched
    return result


def _keep_unmatched(*, dedupe_key: str, event_type: str, data: dict) -> None:
    """What a poll found but could not attach to a partner goes to the inbox, where it is visible (status
    unmatched) instead of lost behind the cursor."""
    connector_services.inbound_event_record(
        source=EventSource.TRADING_GRID,
        dedupe_key=dedupe_key,
        event_type=event_type,
        payload={"type": event_type, "timestamp": None, "data": _jsonable(data), "found_by": "poll"},
    )


# --- Write-back: Mailchimp consent state onto the partner's TG profile ------------------------------


def partner_marketing_status_write_back(
    *, partner_id: int, client: TradingGridClient | None = None
) -> dict[str, str]:
    """Write the unsubscribed / cleaned contacts of a partner to its Trading Grid profile,
    `custom.marketing_status = {"<email>": "<status>"}`, merged with what the profile already holds.
    Returns what was written; a second run finds nothing pending and writes nothing."""
    pending = list(
        Contact.objects.filter(partner_id=partner_id, marketing_status__in=WRITE_BACK_STATUSES)
        .exclude(marketing_status_in_tg=F("marketing_status"))
        .values_list("pk", "email", "marketing_status")
    )
    if not pending:
        return {}
    partner = TradingPartner.objects.get(pk=partner_id)
    client = client or get_client()
    profile = client.get_partner_profile(company_id=partner.tg_company_id)
    held = dict((profile.get("custom") or {}).get("marketing_status") or {})
    missing = {email: status for _, email, status in pending if held.get(email) != status}
    if missing:
        # PATCH merges `custom` by top-level key: send the whole map so other addresses' entries stay.
        client.update_partner_profile(
            company_id=partner.tg_company_id, changes={"custom": {"marketing_status": {**held, **missing}}}
        )
        history_record(
            obj=partner,
            message="Trading Grid profile: marketing status "
            + ", ".join(f"{email} {status}" for email, status in sorted(missing.items()))
            + ".",
        )
    for pk, _, status in pending:
        # Only if it is still what we wrote: a change meanwhile stays pending for the next run.
        Contact.objects.filter(pk=pk, marketing_status=status).update(marketing_status_in_tg=status)
    return missing


def partner_marketing_status_write_back_enqueue(*, partner_ids: Iterable[int]) -> list[int]:
    """Enqueue the write-back, on commit, for those of these partners Trading Grid has shown us: a partner
    never read from Trading Grid may have no profile there (its first sync enqueues it instead)."""
    from partners.tasks import partner_marketing_status_write_back_task

    known = list(
        TradingPartner.objects.filter(pk__in=list(partner_ids), tg_synced_at__isnull=False)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for partner_id in known:
        partner_marketing_status_write_back_task.delay_on_commit(partner_id)
    return known


def partner_marketing_status_write_back_relay(
    *, now: datetime | None = None, grace: timedelta = timedelta(minutes=2), window: timedelta = timedelta(days=1)
) -> int:
    """Re-enqueue write-backs whose task was lost (broker outage). Contacts that have waited longer than
    `window` are left alone: their partner is missing in Trading Grid or refuses the write (see the logs)."""
    from partners.tasks import partner_marketing_status_write_back_task

    now = now or timezone.now()
    partner_ids = list(
        Contact.objects.filter(
            marketing_status__in=WRITE_BACK_STATUSES,
            partner__tg_synced_at__isnull=False,
            updated_at__lt=now - grace,
            updated_at__gte=now - window,
        )
        .exclude(marketing_status_in_tg=F("marketing_status"))
        .values_list("partner_id", flat=True)
        .distinct()
        .order_by("partner_id")
    )
    for partner_id in partner_ids:
        partner_marketing_status_write_back_task.delay(partner_id)
    return len(partner_ids)


# --- Helpers ---------------------------------------------------------------------------------------


def _newest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _jsonable(value: Any) -> Any:
    """Plain JSON types (the raw records already are; mappings may be read-only views)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value



# --- Our webhook subscription ---------------------------------------------------------------------------


def tg_webhook_subscription_ensure(*, client: TradingGridClient | None = None) -> list[str]:
    """Exactly one Trading Grid webhook subscription points at this site, for every event type, signed with
    the first TRADINGGRID_WEBHOOK_SECRETS (idempotent). Returns what it did."""
    from connectors.tradinggrid.webhooks import WEBHOOK_EVENT_TYPES

    client = client or get_client()
    secrets = settings.TRADINGGRID_WEBHOOK_SECRETS
    if not secrets:
        raise ImproperlyConfigured("TRADINGGRID_WEBHOOK_SECRETS is empty: no webhook subscription can be made.")
    url = f"{settings.PARTNERLINK_PUBLIC_URL}/webhooks/tradinggrid/"
    ours = [sub for sub in client.iter_webhook_subscriptions() if sub.get("url") == url]
    if ours:
        for extra in ours[1:]:
            client.delete_webhook_subscription(subscription_id=str(extra["id"]), missing_ok=True)
        return [f"subscription {ours[0].get('id')} already sends to {url}"] + [
            f"removed duplicate subscription {extra.get('id')}" for extra in ours[1:]
        ]
    created = client.create_webhook_subscription(url=url, event_types=list(WEBHOOK_EVENT_TYPES), secret=secrets[0])
    return [f"subscribed {url} to every event type ({created.get('id')})"]
