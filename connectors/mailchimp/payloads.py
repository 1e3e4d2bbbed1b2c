"""Pure helpers that build what we send to Mailchimp and read what it sends back. No I/O here."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

# `cleaned` is a state Mailchimp reaches by itself; we never ask for it.
StatusIfNew = Literal["subscribed", "pending", "unsubscribed", "transactional"]
STATUSES_IF_NEW: frozenset[str] = frozenset({"subscribed", "pending", "unsubscribed", "transactional"})

MERGE_FIELD_TYPES: frozenset[str] = frozenset(
    {"text", "number", "address", "phone", "date", "url", "imageurl", "radio", "dropdown", "birthday", "zip"}
)
# Mailchimp keeps at most 10 characters of a tag: upper-case letters, digits and underscores.
MERGE_TAG_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,9}$")

# Mailchimp's per-call caps.
MAX_BATCH_SUBSCRIBE_MEMBERS = 500
MAX_STATIC_SEGMENT_CHANGES = 500
MAX_PAGE_SIZE = 1000


def normalize_email(email: str) -> str:
    """The form Mailchimp hashes: trimmed and lower-cased."""
    return email.strip().lower()


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the hex MD5 of the lower-cased address.

    Always send this, never the address: the SDK rewrites "server" anywhere in the URL."""
    return hashlib.md5(normalize_email(email).encode("utf-8"), usedforsecurity=False).hexdigest()


def chunked(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of at most `size` items."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# --- Merge fields -------------------------------------------------------------------------------
@dataclass(frozen=True)
class MergeFieldSpec:
    """A merge field we need on the audience. `tag` is how we find it again."""

    tag: str
    name: str
    type: str = "text"
    required: bool = False
    public: bool = False
    choices: tuple[str, ...] = ()  # dropdown and radio only
    help_text: str = ""

    def __post_init__(self) -> None:
        validate_merge_tag(self.tag)
        if self.type not in MERGE_FIELD_TYPES:
            raise ValueError(f"merge field {self.tag}: unknown type {self.type!r}")
        if self.choices and self.type not in ("dropdown", "radio"):
            raise ValueError(f"merge field {self.tag}: only dropdown and radio fields take choices")


def validate_merge_tag(tag: str) -> str:
    if not MERGE_TAG_PATTERN.match(tag):
        raise ValueError(
            f"merge tag {tag!r} is not valid: 1 to 10 upper-case letters, digits or underscores, starting with a letter"
        )
    return tag


def merge_field_create_body(spec: MergeFieldSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tag": spec.tag,
        "name": spec.name,
        "type": spec.type,
        "required": spec.required,
        "public": spec.public,
    }
    if spec.choices:
        body["options"] = {"choices": list(spec.choices)}
    if spec.help_text:
        body["help_text"] = spec.help_text
    return body


def merge_field_value(value: Any) -> str | int | float:
    """One value in the form Mailchimp stores: numbers stay numbers, None clears the field,
    collections (product lines) become a comma-separated text, dates become YYYY-MM-DD."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable):
        return ", ".join(str(item) for item in value)
    return str(value)


def merge_fields_payload(values: Mapping[str, Any]) -> dict[str, str | int | float]:
    """`{TAG: value}` ready for a member body; raises ValueError naming a bad tag."""
    return {validate_merge_tag(tag): merge_field_value(value) for tag, value in values.items()}


# --- Members ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemberUpsert:
    """One contact to create or update. There is deliberately no `status`: an existing member keeps
    theirs (never resubscribe someone who unsubscribed); `status_if_new` only applies to new members."""

    email: str
    merge_fields: Mapping[str, Any] = field(default_factory=dict)
    status_if_new: StatusIfNew = "subscribed"
    language: str = ""

    def __post_init__(self) -> None:
        if "@" not in self.email:
            raise ValueError(f"not an email address: {self.email!r}")
        if self.status_if_new not in STATUSES_IF_NEW:
            raise ValueError(f"{self.email}: status_if_new must be one of {sorted(STATUSES_IF_NEW)}")


def member_upsert_body(member: MemberUpsert) -> dict[str, Any]:
    """Body of `PUT /lists/{id}/members/{hash}` and of one batch-subscribe entry. Never `status`."""
    body: dict[str, Any] = {
        "email_address": member.email.strip(),
        "status_if_new": member.status_if_new,
    }
    if member.merge_fields:
        body["merge_fields"] = merge_fields_payload(member.merge_fields)
    if member.language:
        body["language"] = member.language
    return body


def find_duplicate_emails(members: Iterable[MemberUpsert]) -> list[str]:
    seen: set[str] = set()
    duplicates: list[str] = []
    for member in members:
        email = normalize_email(member.email)
        if email in seen and email not in duplicates:
            duplicates.append(email)
        seen.add(email)
    return duplicates


def member_tags_body(*, active: Iterable[str] = (), inactive: Iterable[str] = (), is_syncing: bool) -> dict[str, Any]:
    tags = [{"name": name, "status": "active"} for name in active]
    tags += [{"name": name, "status": "inactive"} for name in inactive]
    if not tags:
        raise ValueError("no tags to change")
    return {"tags": tags, "is_syncing": is_syncing}


# --- Static segments ----------------------------------------------------------------------------
def static_segment_changes(
    *, add: Sequence[str], remove: Sequence[str], size: int = MAX_STATIC_SEGMENT_CHANGES
) -> list[dict[str, list[str]]]:
    """Bodies for `POST /lists/{id}/segments/{segment_id}`: at most `size` additions and `size` removals each."""
    add_chunks = list(chunked(list(add), size))
    remove_chunks = list(chunked(list(remove), size))
    bodies = []
    for index in range(max(len(add_chunks), len(remove_chunks))):
        body: dict[str, list[str]] = {}
        if index < len(add_chunks):
            body["members_to_add"] = add_chunks[index]
        if index < len(remove_chunks):
            body["members_to_remove"] = remove_chunks[index]
        bodies.append(body)
    return bodies


# --- Campaign scheduling ------------------------------------------------------------------------
def quarter_hour_slot(when: dt.datetime) -> dt.datetime:
    """The first quarter hour (:00, :15, :30, :45) at or after `when`, in UTC. Mailchimp only schedules
    on the quarter hour, and rounding up never sends before the time asked for."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("schedule time must be timezone-aware")
    utc = when.astimezone(dt.UTC)
    floor = utc.replace(minute=utc.minute - utc.minute % 15, second=0, microsecond=0)
    return floor if floor == utc else floor + dt.timedelta(minutes=15)


def format_mailchimp_datetime(when: dt.datetime) -> str:
    """ISO 8601 with an explicit +00:00 offset, the form Mailchimp documents."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat()


def parse_mailchimp_datetime(value: str) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# --- Batch operations ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchOperation:
    """One call inside `POST /batches`. `path` is without /3.0; `body` is sent as a JSON string."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    operation_id: str
    body: Mapping[str, Any] | None = None
    params: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or self.path.startswith("/3.0/"):
            raise ValueError(f"batch operation {self.operation_id}: path must start with / and omit /3.0")


def batch_operation_payload(operation: BatchOperation) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "method": operation.method,
        "path": operation.path,
        "operation_id": operation.operation_id,
    }
    if operation.params:
        payload["params"] = dict(operation.params)
    if operation.body is not None:
        payload["body"] = json.dumps(operation.body)
    return payload


@dataclass(frozen=True)
class BatchOperationResult:
    operation_id: str
    status_code: int
    response: Any  # the decoded JSON answer; None when the operation answered without a body

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


def parse_batch_results(archive: bytes) -> list[BatchOperationResult]:
    """Read the gzipped tar Mailchimp serves at `response_body_url`: JSON files, each an array of
    `{status_code, operation_id, response}` where `response` is itself a JSON string. Read in memory,
    never extracted to disk."""
    results: list[BatchOperationResult] = []
    try:
        tar = tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz")
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise ValueError(f"batch results are not a gzipped tar: {exc}") from exc
    with tar:
        for member in sorted(tar.getmembers(), key=lambda item: item.name):
            if not member.isfile() or not member.name.endswith(".json"):
                continue
            extracted = tar.extractfile(member)
            if extracted is None:
                continue
            try:
                entries = json.loads(extracted.read().decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"batch results file {member.name} is not JSON: {exc}") from exc
            if not isinstance(entries, list):
                raise ValueError(f"batch results file {member.name} is not a JSON array")
            for entry in entries:
                results.append(_batch_result(entry, file_name=member.name))
    return results


def _batch_result(entry: Any, *, file_name: str) -> BatchOperationResult:
    if not isinstance(entry, dict) or "status_code" not in entry:
        raise ValueError(f"batch results file {file_name}: entry without status_code: {entry!r:.200}")
    raw = entry.get("response")
    response: Any = None
    if isinstance(raw, str) and raw.strip():
        try:
            response = json.loads(raw)
        except json.JSONDecodeError:
            response = raw  # keep what Mailchimp said even when it isn't JSON
    elif raw not in (None, ""):
        response = raw
    return BatchOperationResult(
        operation_id=str(entry.get("operation_id") or ""),
        status_code=int(entry["status_code"]),
        response=response,
    )
