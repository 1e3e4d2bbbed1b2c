"""Pure mapping from Trading Grid records to the plain, normalized values our services consume.

Nothing here talks to the network or the database. Every result keeps the record it came from in `raw`.
Unknown or malformed values become `None` (scalars) or are left out (list members), never an exception:
a partner with one odd field must still sync. Dates that are deadlines (certification expiry, contract
renewal, compliance review) are `date`; moments (raised, resolved, updated) are aware UTC `datetime`."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

PARTNER_TYPES = ("supplier", "distributor", "carrier", "3pl", "customer", "reseller")
REGIONS = ("na", "latam", "emea", "apac")
TIERS = ("strategic", "preferred", "standard")
ONBOARDING_STATUSES = ("new", "invited", "registered", "testing", "approved", "suspended", "rejected")
COMPLIANCE_STATUSES = ("unknown", "compliant", "review_due", "non_compliant")
CONTACT_ROLES = ("primary", "technical", "compliance", "finance", "logistics", "sales")
ISSUE_CATEGORIES = (
    "shipment_exception",
    "asn_mismatch",
    "invoice_po_mismatch",
    "chargeback_dispute",
    "edi_transaction_failure",
    "quality_claim",
    "other",
)
ISSUE_SEVERITIES = ("low", "medium", "high", "critical")
ISSUE_STATUSES = ("open", "acknowledged", "awaiting_partner", "under_review", "resolved", "closed")
EDI_TRANSACTION_FAILURE = "edi_transaction_failure"

_ALIASES = {
    "partner_type": {
        "third_party_logistics": "3pl",
        "third-party logistics": "3pl",
        "logistics provider": "3pl",
        "vendor": "supplier",
        "retailer": "customer",
    },
    "region": {
        "north america": "na",
        "north_america": "na",
        "nam": "na",
        "latin america": "latam",
        "latin_america": "latam",
        "la": "latam",
        "europe": "emea",
        "eu": "emea",
        "asia pacific": "apac",
        "asia_pacific": "apac",
        "asia": "apac",
    },
    "compliance_status": {"non-compliant": "non_compliant", "noncompliant": "non_compliant",
                          "review due": "review_due"},
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TRADING_ADDRESS = re.compile(r"^[0-9A-Z]{2}:[^\s:]{1,35}$")

# Lens status letters that are operational issues, with the severity and wording we give them.
LENS_STATUS_ISSUES = {
    "V": ("medium", "validation error"),
    "F": ("high", "delivery failed"),
    "H": ("medium", "on hold"),
}
LENS_FA_STATUS_ISSUES = {
    "R": ("high", "rejected by the partner's functional acknowledgement"),
    "E": ("low", "accepted with errors"),
    "T": ("medium", "functional acknowledgement timed out"),
}


@dataclass(frozen=True, slots=True)
class TGContact:
    email: str
    first_name: str = ""
    last_name: str = ""
    role: str | None = None
    phone: str = ""
    language: str = ""
    timezone: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TGCertification:
    type: str
    number: str = ""
    issuer: str = ""
    issued_at: date | None = None
    expires_at: date | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TGDirectoryEntry:
    tg_company_id: str
    name: str = ""
    legal_name: str = ""
    trading_addresses: tuple[str, ...] = ()
    status: str = ""
    country_code: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TGPartner:
    tg_company_id: str
    name: str = ""
    legal_name: str = ""
    partner_type: str | None = None
    region: str | None = None
    country_code: str | None = None
    tier: str | None = None
    onboarding_status: str | None = None
    compliance_status: str | None = None
    product_lines: tuple[str, ...] = ()
    trading_addresses: tuple[str, ...] = ()
    certifications: tuple[TGCertification, ...] = ()
    contract_renewal_at: date | None = None
    compliance_review_at: date | None = None
    contacts: tuple[TGContact, ...] = ()
    custom: Mapping[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TGIssue:
    """A community issue, or a failed Lens transaction presented as one (`source="lens"`)."""

    tg_issue_id: str
    category: str
    status: str
    title: str
    partner_company_id: str | None = None
    reason_code: str = ""
    severity: str = "medium"
    description: str = ""
    po_number: str = ""
    asn_id: str = ""
    invoice_number: str = ""
    amount: Decimal | None = None
    currency: str = ""
    raised_by: str = ""
    raised_at: datetime | None = None
    due_at: datetime | None = None
    resolved_at: datetime | None = None
    updated_at: datetime | None = None
    source: str = "community"
    correlation_id: str = ""
    partner_trading_addresses: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TGAcknowledgement:
    document_id: str
    partner_company_id: str | None
    contact_email: str | None
    version: str
    acknowledged_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TGRegistration:
    event_id: str
    partner_company_id: str | None
    contact_email: str | None
    registered_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TGAttendance:
    event_id: str
    partner_company_id: str | None
    contact_email: str | None
    attended: bool
    minutes: int
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class TGWebhookEvent:
    """A verified webhook body: `type`, when it happened, and its `data` as sent."""

    type: str
    occurred_at: datetime | None
    data: Mapping[str, Any]
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


# --- Partners --------------------------------------------------------------------------------------


def directory_entry_from_tg(record: Mapping[str, Any]) -> TGDirectoryEntry | None:
    """A partner-directory record, whose shape OpenText does not publish: several spellings are accepted.
    None when it names no company id."""
    company_id = _normalize_buid(_pick(record, "partnerCompanyId", "companyId", "buid", "partnerBuid", "id"))
    if not company_id:
        return None
    name = _text(_pick(record, "partnerCompanyName", "companyName", "name", "displayName"))
    return TGDirectoryEntry(
        tg_company_id=company_id,
        name=name,
        legal_name=_text(_pick(record, "legalName", "legal_name", "partnerLegalName")),
        trading_addresses=trading_addresses_from_tg(
            _pick(record, "tradingAddresses", "trading_addresses", "tradingAddress", "addresses", "ediAddresses")
        ),
        status=_text(_pick(record, "status", "relationshipStatus", "partnerStatus")).lower(),
        country_code=_country(_pick(record, "countryCode", "country_code", "country")
                              or _pick(_as_mapping(record.get("address")), "countryCode", "country")),
        raw=dict(record),
    )


def partner_from_tg(
    *, profile: Mapping[str, Any], directory_entry: Mapping[str, Any] | None = None, company_id: str | None = None
) -> TGPartner:
    """A partner from its community profile, completed by its directory entry (name, addresses) when given.

    `company_id` is used when the profile itself does not carry it."""
    directory = directory_entry_from_tg(directory_entry) if directory_entry else None
    tg_company_id = (
        _normalize_buid(_pick(profile, "company_id", "tg_company_id", "companyId", "partnerCompanyId"))
        or _normalize_buid(company_id)
        or (directory.tg_company_id if directory else "")
    )
    if not tg_company_id:
        raise ValueError("A partner profile without a company id (BUID) cannot be mapped.")
    addresses = trading_addresses_from_tg(_pick(profile, "trading_addresses", "tradingAddresses"))
    if directory:
        addresses = tuple(dict.fromkeys(addresses + directory.trading_addresses))
    contacts = contacts_from_tg(profile.get("contacts") or ())
    return TGPartner(
        tg_company_id=tg_company_id,
        name=_text(_pick(profile, "name", "company_name")) or (directory.name if directory else ""),
        legal_name=_text(_pick(profile, "legal_name", "legalName")) or (directory.legal_name if directory else ""),
        partner_type=_choice(profile.get("partner_type"), PARTNER_TYPES, "partner_type"),
        region=_choice(profile.get("region"), REGIONS, "region"),
        country_code=_country(profile.get("country_code")) or (directory.country_code if directory else None),
        tier=_choice(profile.get("tier"), TIERS),
        onboarding_status=_choice(profile.get("onboarding_status"), ONBOARDING_STATUSES),
        compliance_status=_choice(profile.get("compliance_status"), COMPLIANCE_STATUSES, "compliance_status"),
        product_lines=_product_lines(profile.get("product_lines")),
        trading_addresses=addresses,
        certifications=tuple(
            c for c in (certification_from_tg(r) for r in _as_list(profile.get("certifications"))) if c
        ),
        contract_renewal_at=parse_date(profile.get("contract_renewal_at")),
        compliance_review_at=parse_date(profile.get("compliance_review_at")),
        contacts=contacts,
        custom=dict(_as_mapping(profile.get("custom"))),
        updated_at=parse_datetime(profile.get("updated_at")),
        raw={"profile": dict(profile), "directory": dict(directory_entry) if directory_entry else None},
    )


def contact_from_tg(record: Mapping[str, Any]) -> TGContact | None:
    """A profile contact, or a Community Management user (`contactInformation.email`, `firstName`…).
    None when there is no usable email."""
    info = _as_mapping(record.get("contactInformation"))
    email = normalize_email(_pick(record, "email", "contact_email") or info.get("email"))
    if not email:
        return None
    return TGContact(
        email=email,
        first_name=_text(_pick(record, "first_name", "firstName")),
        last_name=_text(_pick(record, "last_name", "lastName")),
        role=_choice(record.get("role"), CONTACT_ROLES),
        phone=_text(_pick(record, "phone") or info.get("phoneNumber") or info.get("mobile")),
        language=_text(_pick(record, "language", "preferredLanguage")),
        timezone=_text(_pick(record, "timezone", "preferredTimezone")),
        raw=dict(record),
    )


def contacts_from_tg(records: Iterable[Mapping[str, Any]]) -> tuple[TGContact, ...]:
    """Contacts with a usable email, one per email (the first wins)."""
    contacts: dict[str, TGContact] = {}
    for record in records:
        if isinstance(record, Mapping):
            contact = contact_from_tg(record)
            if contact and contact.email not in contacts:
                contacts[contact.email] = contact
    return tuple(contacts.values())


def certification_from_tg(record: Mapping[str, Any]) -> TGCertification | None:
    if not isinstance(record, Mapping):
        return None
    kind = _text(_pick(record, "type", "name"))
    if not kind:
        return None
    return TGCertification(
        type=kind,
        number=_text(record.get("number")),
        issuer=_text(record.get("issuer")),
        issued_at=parse_date(record.get("issued_at")),
        expires_at=parse_date(record.get("expires_at")),
        raw=dict(record),
    )


def trading_addresses_from_tg(value: Any) -> tuple[str, ...]:
    """`QUALIFIER:ID` strings, upper-cased, in order, without duplicates or malformed entries.

    Accepts strings, lists of strings, or dicts such as `{"qualifier": "ZZ", "id": "X"}` / `{"address": "ZZ:X"}`."""
    found: list[str] = []
    for item in _as_list(value):
        if isinstance(item, Mapping):
            joined = _pick(item, "address", "tradingAddress", "value")
            if not joined:
                qualifier = _pick(item, "qualifier", "ediQualifier", "isaQualifier")
                ident = _pick(item, "id", "identifier", "ediId", "isaId")
                joined = f"{qualifier}:{ident}" if qualifier and ident else ""
            item = joined
        if isinstance(item, str):
            address = item.strip().upper()
            if _TRADING_ADDRESS.match(address) and address not in found:
                found.append(address)
    return tuple(found)


# --- Issues ----------------------------------------------------------------------------------------


def issue_from_tg(record: Mapping[str, Any]) -> TGIssue:
    """A community issue (CONTRACT.md fields)."""
    issue_id = _text(record.get("id"))
    if not issue_id:
        raise ValueError("A community issue without an id cannot be mapped.")
    return TGIssue(
        tg_issue_id=issue_id,
        partner_company_id=_normalize_buid(record.get("partner_company_id")) or None,
        category=_choice(record.get("category"), ISSUE_CATEGORIES) or "other",
        reason_code=_text(record.get("reason_code")),
        severity=_choice(record.get("severity"), ISSUE_SEVERITIES) or "medium",
        status=_choice(record.get("status"), ISSUE_STATUSES) or "open",
        title=_text(record.get("title")) or f"Issue {issue_id}",
        description=_text(record.get("description")),
        po_number=_text(record.get("po_number")),
        asn_id=_text(record.get("asn_id")),
        invoice_number=_text(record.get("invoice_number")),
        amount=_decimal(record.get("amount")),
        currency=_text(record.get("currency")).upper()[:3],
        raised_by=_text(record.get("raised_by")),
        raised_at=parse_datetime(record.get("raised_at")),
        due_at=parse_datetime(record.get("due_at")),
        resolved_at=parse_datetime(record.get("resolved_at")),
        updated_at=parse_datetime(record.get("updated_at")),
        raw=dict(record),
    )


def lens_transaction_to_issue(
    transaction: Mapping[str, Any], *, our_trading_addresses: Collection[str] = ()
) -> TGIssue | None:
    """A failed Lens transaction as an `edi_transaction_failure` issue keyed by its correlationid
    (`tg_issue_id = "lens:<correlationid>"`), or None when the transaction is not a failure.

    Failures: status V (validation error), F (delivery failed), H (on hold); FA status R (rejected),
    E (accepted with errors), T (timed out). The partner is the side that is not one of our addresses; the
    caller resolves the address to a BUID."""
    status = _text(transaction.get("status")).upper()
    fa_status = _text(transaction.get("fastatus")).upper()
    if status in LENS_STATUS_ISSUES:
        severity, wording = LENS_STATUS_ISSUES[status]
        reason_code = f"lens_status_{status}"
        raised_at = parse_datetime(transaction.get("statusdate")) or parse_datetime(transaction.get("arrivaltime"))
    elif fa_status in LENS_FA_STATUS_ISSUES:
        severity, wording = LENS_FA_STATUS_ISSUES[fa_status]
        reason_code = f"lens_fa_{fa_status}"
        raised_at = parse_datetime(transaction.get("fastatusdate")) or parse_datetime(transaction.get("arrivaltime"))
    else:
        return None
    correlation_id = _text(transaction.get("correlationid")) or _text(transaction.get("transactionid"))
    if not correlation_id:
        return None
    sender = _text(transaction.get("senderaddress")).upper()
    receiver = _text(transaction.get("receiveraddress")).upper()
    ours = {a.strip().upper() for a in our_trading_addresses}
    partner_addresses = tuple(a for a in dict.fromkeys((sender, receiver)) if a and a not in ours)
    keys = lens_content_keys(transaction)
    editype = _text(transaction.get("editype"))
    sender_name = _text(transaction.get("sendername")) or sender
    receiver_name = _text(transaction.get("receivername")) or receiver
    error_code = _text(transaction.get("errorcode"))
    error_message = _text(transaction.get("externalerrormessage"))
    description_lines = [
        f"EDI {editype or 'transaction'} from {sender_name} ({sender}) to {receiver_name} ({receiver}): {wording}.",
        f"Error {error_code} ({_text(transaction.get('errortype')) or 'unspecified'}): {error_message}"
        if error_code or error_message else "",
        f"Lens transaction {_text(transaction.get('transactionid'))}, correlation {correlation_id}.",
    ]
    return TGIssue(
        tg_issue_id=f"lens:{correlation_id}",
        correlation_id=correlation_id,
        source="lens",
        category=EDI_TRANSACTION_FAILURE,
        reason_code=error_code or reason_code,
        severity=severity,
        status="open",
        title=f"EDI {editype or 'transaction'} {wording}: {sender_name} → {receiver_name}"[:300],
        description="\n".join(line for line in description_lines if line),
        po_number=keys.get("purchase order number", ""),
        asn_id=keys.get("shipment identification", ""),
        invoice_number=keys.get("invoice number", ""),
        raised_by="lens",
        raised_at=raised_at,
        updated_at=raised_at,
        partner_trading_addresses=partner_addresses,
        raw=dict(transaction),
    )


def lens_content_keys(transaction: Mapping[str, Any]) -> dict[str, str]:
    """Lens `contentkeys` (`[{key, value}]`, or a plain mapping) as `{lower-cased key: value}`."""
    raw = transaction.get("contentkeys")
    pairs: Iterable[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        pairs = raw.items()
    else:
        pairs = ((item.get("key"), item.get("value")) for item in _as_list(raw) if isinstance(item, Mapping))
    return {str(k).strip().lower(): _text(v) for k, v in pairs if k and v not in (None, "")}


# --- Documents, events, webhooks -------------------------------------------------------------------


def acknowledgement_from_tg(record: Mapping[str, Any], *, document_id: str) -> TGAcknowledgement:
    return TGAcknowledgement(
        document_id=document_id,
        partner_company_id=_normalize_buid(record.get("partner_company_id")) or None,
        contact_email=normalize_email(record.get("contact_email")),
        version=_text(record.get("version")),
        acknowledged_at=parse_datetime(record.get("acknowledged_at")),
        raw=dict(record),
    )


def registration_from_tg(record: Mapping[str, Any], *, event_id: str) -> TGRegistration:
    return TGRegistration(
        event_id=event_id,
        partner_company_id=_normalize_buid(record.get("partner_company_id")) or None,
        contact_email=normalize_email(record.get("contact_email")),
        registered_at=parse_datetime(record.get("registered_at")),
        raw=dict(record),
    )


def attendance_from_tg(record: Mapping[str, Any], *, event_id: str) -> TGAttendance:
    attended = record.get("attended")
    minutes = _decimal(record.get("minutes"))
    return TGAttendance(
        event_id=event_id,
        partner_company_id=_normalize_buid(record.get("partner_company_id")) or None,
        contact_email=normalize_email(record.get("contact_email")),
        attended=attended is True or str(attended).strip().lower() in ("true", "1", "yes"),
        minutes=max(0, int(minutes)) if minutes is not None else 0,
        raw=dict(record),
    )


def webhook_event_from_tg(payload: Mapping[str, Any]) -> TGWebhookEvent:
    """The `{"type", "timestamp", "data"}` body `webhooks.verify_webhook` returned."""
    event_type = _text(payload.get("type"))
    if not event_type:
        raise ValueError("A webhook body without a type cannot be handled.")
    return TGWebhookEvent(
        type=event_type,
        occurred_at=parse_datetime(payload.get("timestamp")),
        data=dict(_as_mapping(payload.get("data"))),
        raw=dict(payload),
    )


# --- Scalars ---------------------------------------------------------------------------------------


def normalize_email(value: Any) -> str | None:
    """Lower-cased and stripped; None when it is not an address."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    return email if _EMAIL.match(email) else None


def parse_datetime(value: Any) -> datetime | None:
    """ISO 8601 (a trailing Z allowed) or Unix seconds, as an aware UTC datetime; None when unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_date(value: Any) -> date | None:
    """A deadline: `YYYY-MM-DD`, or the UTC date of a datetime; None when unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return parse_datetime(value).date()  # type: ignore[union-attr]
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text[:10]) if len(text) == 10 else _date_of(parse_datetime(text))
        except ValueError:
            return None
    return None


def _date_of(moment: datetime | None) -> date | None:
    return moment.date() if moment else None


def _pick(record: Mapping[str, Any] | None, *names: str) -> Any:
    if not record:
        return None
    for name in names:
        value = record.get(name)
        if value not in (None, "", [], {}):
            return value
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _choice(value: Any, allowed: tuple[str, ...], alias_group: str | None = None) -> str | None:
    if not isinstance(value, str):
        return None
    normalized = value.strip().lower()
    if alias_group:
        normalized = _ALIASES[alias_group].get(normalized, normalized)
    normalized = normalized.replace(" ", "_") if normalized.replace(" ", "_") in allowed else normalized
    return normalized if normalized in allowed else None


def _country(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    code = value.strip().upper()
    return code if len(code) == 2 and code.isalpha() else None


def _normalize_buid(value: Any) -> str:
    return _text(value).upper()


def _product_lines(value: Any) -> tuple[str, ...]:
    names: dict[str, str] = {}
    for item in _as_list(value):
        name = _text(item.get("name") if isinstance(item, Mapping) else item)
        if name and name.lower() not in names:
            names[name.lower()] = name
    return tuple(names.values())


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return [part for part in re.split(r"[,;\s]+", value) if part] if ":" in value else [value]
    return [value]


def _as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
