"""The emulator's in-memory Mailchimp account: audiences, members, merge fields, tags, segments, list
webhooks, campaigns with reports, batches, journeys and classic automations. One re-entrant lock guards
everything; outbound webhooks only go onto a queue while it is held."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..payloads import MERGE_FIELD_TYPES, MERGE_TAG_PATTERN, normalize_email, subscriber_hash
from ..webhooks import FIRED_AT_FORMAT, WEBHOOK_EVENT_TYPES, encode_bracketed_form
from . import reports
from .problems import Problem, bad_request, invalid, not_found

MEMBER_STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional", "archived")
DEFAULT_MERGE_FIELDS = (
    ("FNAME", "First Name", "text"),
    ("LNAME", "Last Name", "text"),
    ("ADDRESS", "Address", "address"),
    ("PHONE", "Phone Number", "phone"),
    ("BIRTHDAY", "Birthday", "birthday"),
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]{2,30}$")

# (url, form pairs, event type, list id)
WebhookSink = Callable[[str, list[tuple[str, str]], str, str], None]


def iso(when: dt.datetime | None) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat() if when else ""


def short_id(seed: str) -> str:
    return hashlib.md5(seed.encode(), usedforsecurity=False).hexdigest()[:_UNIQUE_EMAIL_ID_LENGTH]


_UNIQUE_EMAIL_ID_LENGTH = 10  # a member's unique email id is a short_id


@dataclass
class MergeField:
    merge_id: int
    tag: str
    name: str
    type: str
    required: bool = False
    public: bool = False
    default_value: str = ""
    display_order: int = 0
    choices: list[str] = field(default_factory=list)
    help_text: str = ""

    def as_json(self, list_id: str) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.choices:
            options["choices"] = self.choices
        if self.type == "date":
            options["date_format"] = "YYYY-MM-DD"
        if self.type == "birthday":
            options["date_format"] = "MM/DD"
        return {
            "merge_id": self.merge_id,
            "tag": self.tag,
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default_value": self.default_value,
            "public": self.public,
            "display_order": self.display_order,
            "options": options,
            "help_text": self.help_text,
            "list_id": list_id,
        }


@dataclass
class Member:
    email: str
    status: str
    merge_fields: dict[str, Any]
    created: dt.datetime
    last_changed: dt.datetime
    language: str = ""
    email_type: str = "html"
    tags: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    web_id: int = 0
    unsubscribe_reason: str = ""

    @property
    def hash(self) -> str:
        return subscriber_hash(self.email)

    @property
    def unique_email_id(self) -> str:
        return short_id(f"unique:{self.email}")


@dataclass
class Segment:
    id: int
    name: str
    created: dt.datetime
    updated: dt.datetime
    member_hashes: set[str] = field(default_factory=set)


@dataclass
class Webhook:
    id: str
    url: str
    events: dict[str, bool]
    sources: dict[str, bool]

    def as_json(self, list_id: str) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": self.events, "sources": self.sources, "list_id": list_id}


@dataclass
class Audience:
    id: str
    name: str
    created: dt.datetime
    merge_fields: dict[str, MergeField] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)
    segments: dict[int, Segment] = field(default_factory=dict)
    webhooks: dict[str, Webhook] = field(default_factory=dict)


@dataclass
class Campaign:
    id: str
    web_id: int
    list_id: str
    segment_id: int | None
    settings: dict[str, Any]
    created: dt.datetime
    status: str = "save"  # save -> (schedule) -> sending -> sent
    html: str = ""
    plain_text: str = ""
    schedule_time: dt.datetime | None = None
    send_time: dt.datetime | None = None
    source: str = "api"  # who sent it, for the `campaign` webhook's sources
    report: reports.CampaignReport | None = None
    template_id: int | None = None
    test_sends: list[dict[str, Any]] = field(default_factory=list)  # each POST …/actions/test


@dataclass
class Template:
    """A user template: HTML whose `mc:edit="name"` elements campaigns fill with their `sections`."""

    id: int
    name: str
    html: str


@dataclass
class Batch:
    id: str
    operations: list[dict[str, Any]]
    submitted: dt.datetime
    base_url: str
    status: str = "pending"  # pending -> started -> finished, one step per poll
    completed: dt.datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    archive: bytes = b""


@dataclass
class Journey:
    id: int
    list_id: str
    name: str
    steps: dict[int, str]


@dataclass
class Automation:
    id: str
    list_id: str
    title: str
    emails: dict[str, str]  # workflow email id -> subject
    queue: list[dict[str, Any]] = field(default_factory=list)


class EmulatorState:
    def __init__(
        self, *, default_list_ids: tuple[str, ...] = (), clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.default_list_ids = default_list_ids
        self.webhook_sink: WebhookSink | None = None
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        with self.lock:
            self.audiences: dict[str, Audience] = {}
            self.campaigns: dict[str, Campaign] = {}
            self.batches: dict[str, Batch] = {}
            self.journeys: dict[int, Journey] = {}
            self.automations: dict[str, Automation] = {}
            self.journey_triggers: list[dict[str, Any]] = []
            self.tag_ids: dict[str, int] = {}
            self.templates: dict[int, Template] = {}
            self._ids = itertools.count(1)
            for list_id in self.default_list_ids:
                self.create_audience(list_id=list_id, name="Partnerlink partners")

    def next_id(self) -> int:
        return next(self._ids)

    def now(self) -> dt.datetime:
        return self.clock().astimezone(dt.UTC).replace(microsecond=0)

    # ------------------------------------------------------------------ audiences
    def create_audience(self, *, list_id: str, name: str) -> Audience:
        with self.lock:
            if list_id in self.audiences:
                return self.audiences[list_id]
            audience = Audience(id=list_id, name=name, created=self.now())
            for order, (tag, label, kind) in enumerate(DEFAULT_MERGE_FIELDS, start=1):
                audience.merge_fields[tag] = MergeField(
                    merge_id=order, tag=tag, name=label, type=kind, display_order=order + 1
                )
            self.audiences[list_id] = audience
            return audience

    def audience(self, list_id: str) -> Audience:
        audience = self.audiences.get(list_id)
        if audience is None:
            raise not_found("list")
        return audience

    def audience_json(self, audience: Audience) -> dict[str, Any]:
        counts = {status: 0 for status in MEMBER_STATUSES}
        for member in audience.members.values():
            counts[member.status] += 1
        return {
            "id": audience.id,
            "web_id": int(hashlib.md5(audience.id.encode(), usedforsecurity=False).hexdigest()[:6], 16),
            "name": audience.name,
            "date_created": iso(audience.created),
            "list_rating": 0,
            "email_type_option": False,
            "visibility": "prv",
            "double_optin": False,
            "stats": {
                "member_count": counts["subscribed"],
                "unsubscribe_count": counts["unsubscribed"],
                "cleaned_count": counts["cleaned"],
                "merge_field_count": len(audience.merge_fields),
            },
        }

    # ------------------------------------------------------------------ merge fields
    def add_merge_field(self, *, list_id: str, body: dict[str, Any]) -> MergeField:
        with self.lock:
            audience = self.audience(list_id)
            kind = body.get("type")
            if kind not in MERGE_FIELD_TYPES:
                raise invalid([{"field": "type", "message": f"Unknown merge field type {kind!r}."}])
            tag = str(body.get("tag") or f"MMERGE{len(audience.merge_fields) + 1}").upper()
            if not MERGE_TAG_PATTERN.match(tag):
                raise invalid([{"field": "tag", "message": "Tags may use 1 to 10 upper-case letters, digits or _."}])
            if tag in audience.merge_fields:
                raise bad_request(f'A Merge Field with the tag "{tag}" already exists for this list.')
            options = body.get("options") or {}
            merge_field = MergeField(
                merge_id=max((f.merge_id for f in audience.merge_fields.values()), default=0) + 1,
                tag=tag,
                name=str(body.get("name") or tag),
                type=kind,
                required=bool(body.get("required", False)),
                public=bool(body.get("public", False)),
                default_value=str(body.get("default_value") or ""),
                display_order=int(body.get("display_order") or len(audience.merge_fields) + 2),
                choices=[str(choice) for choice in options.get("choices") or []],
                help_text=str(body.get("help_text") or ""),
            )
            if kind in ("dropdown", "radio") and not merge_field.choices:
                raise invalid([{"field": "options.choices", "message": "Dropdown and radio fields need choices."}])
            audience.merge_fields[tag] = merge_field
            return merge_field

    def merge_field_errors(self, audience: Audience, values: Any) -> list[dict[str, str]]:
        if values is None:
            return []
        if not isinstance(values, dict):
            return [{"field": "merge_fields", "message": "merge_fields must be an object."}]
        errors = []
        for tag, value in values.items():
            merge_field = audience.merge_fields.get(tag)
            if merge_field is None:
                errors.append({"field": tag, "message": f"Merge field {tag} does not exist on this list."})
                continue
            message = _merge_value_error(merge_field, value)
            if message:
                errors.append({"field": tag, "message": message})
        return errors

    def member_merge_fields(self, audience: Audience, member: Member) -> dict[str, Any]:
        return {tag: member.merge_fields.get(tag, "") for tag in audience.merge_fields}

    # ------------------------------------------------------------------ members
    def find_member(self, audience: Audience, key: str) -> Member | None:
        """By subscriber hash, by email address (Mailchimp accepts both) or by unique email id."""
        if "@" in key:
            key = subscriber_hash(key)
        member = audience.members.get(key.lower())
        if member is None and len(key) == _UNIQUE_EMAIL_ID_LENGTH:
            # Only a key of that length can be a unique email id; anything else (a subscriber hash not on the
            # list, on every new member's PUT) must not pay for a scan of the whole audience.
            member = next((m for m in audience.members.values() if m.unique_email_id == key), None)
        return member

    def member(self, list_id: str, key: str) -> tuple[Audience, Member]:
        audience = self.audience(list_id)
        member = self.find_member(audience, key)
        if member is None:
            raise not_found("contact")
        return audience, member

    def upsert_member(
        self, *, list_id: str, key: str | None, body: dict[str, Any], source: str, mode: str
    ) -> tuple[Member, bool]:
        """The status machine behind PUT (mode 'put'), POST (mode 'add') and PATCH (mode 'patch').
        Returns the member and whether it was created."""
        with self.lock:
            audience = self.audience(list_id)
            email = str(body.get("email_address") or "").strip()
            if mode == "add" or (mode == "put" and email):
                if not _EMAIL.match(email):
                    raise invalid([{"field": "email_address", "message": "Please provide a valid email address."}])
            existing = self.find_member(audience, key) if key else None
            if existing is None and mode == "patch":
                raise not_found("contact")
            if existing is None and key and email and "@" not in key and key.lower() != subscriber_hash(email):
                raise invalid([{"field": "email_address", "message": "The subscriber hash does not match the email."}])
            if existing is None and subscriber_hash(email) in audience.members:
                existing = audience.members[subscriber_hash(email)]
            if existing is not None and mode == "add" and existing.status != "archived":
                raise bad_request(
                    f"{email} is already a list member. Use PUT to insert or update list members.",
                    title="Member Exists",
                )
            errors = self.merge_field_errors(audience, body.get("merge_fields"))
            if errors:
                raise invalid(errors, detail="Your merge fields were invalid.")
            if existing is None or existing.status == "archived":
                return self._create_member(audience, email=email, body=body, source=source, mode=mode), True
            self._update_member(audience, existing, body=body, source=source)
            return existing, False

    def _create_member(self, audience: Audience, *, email: str, body: dict[str, Any], source: str, mode: str) -> Member:
        hashed = subscriber_hash(email)
        if hashed in audience.forgotten:
            raise bad_request(
                f"{email} was permanently deleted and cannot be re-imported. The contact must re-subscribe to get "
                "back on the list.",
                title="Forgotten Email Not Subscribed",
            )
        status = body.get("status") or (body.get("status_if_new") if mode == "put" else None)
        if status not in MEMBER_STATUSES or status == "archived":
            field_name = "status_if_new" if mode == "put" else "status"
            raise invalid([{"field": field_name, "message": "A new member needs a status."}])
        missing = [
            f.tag
            for f in audience.merge_fields.values()
            if f.required and not (body.get("merge_fields") or {}).get(f.tag)
        ]
        if missing and not body.get("_skip_merge_validation"):
            raise invalid(
                [{"field": tag, "message": "This field is required."} for tag in missing],
                detail="Your merge fields were invalid.",
            )
        now = self.now()
        previous = audience.members.get(hashed)
        member = Member(
            email=email,
            status=status,
            merge_fields=dict(body.get("merge_fields") or {}),
            created=previous.created if previous else now,
            last_changed=now,
            language=str(body.get("language") or ""),
            email_type=str(body.get("email_type") or "html"),
            web_id=previous.web_id if previous else self.next_id() + 100000,
        )
        audience.members[hashed] = member
        if status == "subscribed" and audience.webhooks:  # no webhook, no event data to build
            self.emit(audience, "subscribe", self._member_data(audience, member), source)
        return member

    def _update_member(self, audience: Audience, member: Member, *, body: dict[str, Any], source: str) -> None:
        new_email = str(body.get("email_address") or "").strip()
        if new_email and normalize_email(new_email) != normalize_email(member.email):
            self.change_email(list_id=audience.id, key=member.hash, new_email=new_email, source=source)
        status = body.get("status")
        if status and status != member.status:
            self.set_status(audience, member, status=status, source=source, reason="manual")
        changes = {
            tag: value
            for tag, value in (body.get("merge_fields") or {}).items()
            if member.merge_fields.get(tag) != value
        }
        if body.get("language"):
            member.language = str(body["language"])
        if changes:
            member.merge_fields.update(changes)
            member.last_changed = self.now()
            if audience.webhooks:
                self.emit(audience, "profile", self._member_data(audience, member), source)

    def set_status(
        self,
        audience: Audience,
        member: Member,
        *,
        status: str,
        source: str | None,
        reason: str = "manual",
        campaign_id: str = "",
        enforce_compliance: bool = True,
    ) -> None:
        if status not in MEMBER_STATUSES:
            raise invalid([{"field": "status", "message": f"Unknown status {status!r}."}])
        if enforce_compliance and status == "subscribed" and member.status in ("unsubscribed", "cleaned"):
            raise bad_request(
                f"{member.email} is in a compliance state due to unsubscribe, bounce, or compliance review and cannot "
                "be subscribed.",
                title="Member In Compliance State",
            )
        previous, member.status = member.status, status
        member.last_changed = self.now()
        if status == "subscribed" and previous != "subscribed":
            self.emit(audience, "subscribe", self._member_data(audience, member), source)
        elif status == "unsubscribed":
            member.unsubscribe_reason = reason
            data = self._member_data(audience, member)
            data.update({"action": "unsub", "reason": reason, "campaign_id": campaign_id})
            self.emit(audience, "unsubscribe", data, source)
        elif status == "cleaned":
            data = {"list_id": audience.id, "campaign_id": campaign_id, "reason": reason, "email": member.email}
            self.emit(audience, "cleaned", data, source)

    def change_email(self, *, list_id: str, key: str, new_email: str, source: str) -> Member:
        with self.lock:
            audience, member = self.member(list_id, key)
            if not _EMAIL.match(new_email):
                raise invalid([{"field": "email_address", "message": "Please provide a valid email address."}])
            new_hash = subscriber_hash(new_email)
            if new_hash in audience.members and audience.members[new_hash] is not member:
                raise bad_request(f"{new_email} is already a list member.", title="Member Exists")
            old_email, old_hash = member.email, member.hash
            del audience.members[old_hash]
            member.email = new_email
            member.last_changed = self.now()
            audience.members[new_hash] = member
            for segment in audience.segments.values():
                if old_hash in segment.member_hashes:
                    segment.member_hashes.discard(old_hash)
                    segment.member_hashes.add(new_hash)
            data = {
                "list_id": list_id,
                "new_id": member.unique_email_id,
                "new_email": new_email,
                "old_email": old_email,
            }
            self.emit(audience, "upemail", data, source)
            return member

    def archive_member(self, *, list_id: str, key: str) -> None:
        with self.lock:
            audience, member = self.member(list_id, key)
            member.status = "archived"
            member.last_changed = self.now()
            for segment in audience.segments.values():
                segment.member_hashes.discard(member.hash)

    def forget_member(self, *, list_id: str, key: str) -> None:
        """Permanent deletion: the address can never be imported again."""
        with self.lock:
            audience = self.audience(list_id)
            member = self.find_member(audience, key)
            hashed = member.hash if member else (subscriber_hash(key) if "@" in key else key.lower())
            audience.members.pop(hashed, None)
            audience.forgotten.add(hashed)
            for segment in audience.segments.values():
                segment.member_hashes.discard(hashed)

    def batch_subscribe(self, *, list_id: str, body: dict[str, Any], source: str) -> dict[str, Any]:
        """`POST /lists/{id}`. Like Mailchimp, `status` here DOES change an existing member's status (the
        trap our client avoids by sending only `status_if_new`)."""
        with self.lock:
            audience = self.audience(list_id)
            members = body.get("members") or []
            if len(members) > 500:
                raise invalid([{"field": "members", "message": "You may only send 500 members per request."}])
            update_existing = bool(body.get("update_existing"))
            created: list[Member] = []
            updated: list[Member] = []
            errors: list[dict[str, Any]] = []
            seen: set[str] = set()
            for entry in members:
                email = str(entry.get("email_address") or "").strip()
                try:
                    if not _EMAIL.match(email):
                        raise invalid([{"field": "email_address", "message": "Please provide a valid email address."}])
                    if subscriber_hash(email) in seen:
                        raise bad_request(f"{email} appears more than once in this request.")
                    seen.add(subscriber_hash(email))
                    field_errors = self.merge_field_errors(audience, entry.get("merge_fields"))
                    if field_errors:
                        raise invalid(field_errors, detail=field_errors[0]["message"])
                    existing = audience.members.get(subscriber_hash(email))
                    if existing is not None and existing.status != "archived":
                        if not update_existing:
                            raise bad_request(f"{email} is already a list member.", title="Member Exists")
                        if entry.get("status") and entry["status"] != existing.status:
                            self.set_status(
                                audience, existing, status=entry["status"], source=source, enforce_compliance=False
                            )
                        self._update_member(audience, existing, body={**entry, "status": None}, source=source)
                        updated.append(existing)
                    else:
                        created.append(
                            self._create_member(audience, email=email, body=entry, source=source, mode="put")
                        )
                except Problem as problem:
                    first = problem.errors[0] if problem.errors else {}
                    errors.append(
                        {
                            "email_address": email,
                            "error": problem.detail,
                            "error_code": "ERROR_CONTACT_EXISTS"
                            if problem.title == "Member Exists"
                            else "ERROR_GENERIC",
                            "field": first.get("field", ""),
                            "field_message": first.get("message", ""),
                        }
                    )
            return {
                "new_members": [self.member_json(audience, member) for member in created],
                "updated_members": [self.member_json(audience, member) for member in updated],
                "errors": errors,
                "total_created": len(created),
                "total_updated": len(updated),
                "error_count": len(errors),
            }

    def update_tags(self, *, list_id: str, key: str, body: dict[str, Any]) -> None:
        with self.lock:
            _, member = self.member(list_id, key)
            for tag in body.get("tags") or []:
                name = str(tag.get("name") or "").strip()
                if not name:
                    raise invalid([{"field": "tags.name", "message": "Tag names can't be blank."}])
                self.tag_ids.setdefault(name, len(self.tag_ids) + 1)
                if tag.get("status") == "active" and name not in member.tags:
                    member.tags.append(name)
                elif tag.get("status") == "inactive" and name in member.tags:
                    member.tags.remove(name)
            member.last_changed = self.now()

    def add_event(self, *, list_id: str, key: str, body: dict[str, Any]) -> None:
        with self.lock:
            _, member = self.member(list_id, key)
            name = str(body.get("name") or "")
            if not _EVENT_NAME.match(name):
                raise invalid([{"field": "name", "message": "Event names use 2 to 30 letters, digits, _ or -."}])
            properties = body.get("properties") or {}
            if not all(isinstance(value, str) for value in properties.values()):
                raise invalid([{"field": "properties", "message": "Event property values must be strings."}])
            member.events.append(
                {
                    "name": name,
                    "properties": properties,
                    "occurred_at": body.get("occurred_at") or iso(self.now()),
                    "is_syncing": bool(body.get("is_syncing", False)),
                }
            )

    def member_json(self, audience: Audience, member: Member) -> dict[str, Any]:
        names = [member.merge_fields.get("FNAME", ""), member.merge_fields.get("LNAME", "")]
        return {
            "id": member.hash,
            "email_address": member.email,
            "unique_email_id": member.unique_email_id,
            "contact_id": short_id(f"contact:{member.email}"),
            "full_name": " ".join(str(name) for name in names if name),
            "web_id": member.web_id,
            "email_type": member.email_type,
            "status": member.status,
            "unsubscribe_reason": member.unsubscribe_reason,
            "merge_fields": self.member_merge_fields(audience, member),
            "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
            "ip_signup": "",
            "timestamp_signup": iso(member.created),
            "ip_opt": "",
            "timestamp_opt": iso(member.created),
            "member_rating": 2,
            "last_changed": iso(member.last_changed),
            "language": member.language,
            "vip": False,
            "email_client": "",
            "source": "API - Generic",
            "tags_count": len(member.tags),
            "tags": [{"id": self.tag_ids.get(name, 0), "name": name} for name in member.tags],
            "list_id": audience.id,
        }

    def _member_data(self, audience: Audience, member: Member) -> dict[str, Any]:
        """The `data[...]` of subscribe, unsubscribe and profile webhooks."""
        merges = {"EMAIL": member.email, **self.member_merge_fields(audience, member)}
        return {
            "id": member.unique_email_id,
            "list_id": audience.id,
            "email": member.email,
            "email_type": member.email_type,
            "ip_opt": "",
            "web_id": str(member.web_id),
            "merges": {tag: _flat(value) for tag, value in merges.items()},
        }

    # ------------------------------------------------------------------ webhooks
    def webhook_urls_in_use(self, list_id: str) -> set[str]:
        return {webhook.url for webhook in self.audience(list_id).webhooks.values()}

    def add_webhook(self, *, list_id: str, url: str, events: dict[str, bool], sources: dict[str, bool]) -> Webhook:
        with self.lock:
            audience = self.audience(list_id)
            if url in self.webhook_urls_in_use(list_id):
                raise bad_request("Sorry, you can't use the same webhook URL twice.")
            webhook = Webhook(
                id=short_id(f"webhook:{list_id}:{url}:{self.next_id()}"),
                url=url,
                events={event: bool(events.get(event, False)) for event in WEBHOOK_EVENT_TYPES},
                sources={source: bool(sources.get(source, False)) for source in ("user", "admin", "api")},
            )
            audience.webhooks[webhook.id] = webhook
            return webhook

    def emit(self, audience: Audience, event_type: str, data: dict[str, Any], source: str | None) -> None:
        """Queue the webhook POSTs Mailchimp would send. `source` None (bounces) fires whatever the sources."""
        if self.webhook_sink is None:
            return
        for webhook in audience.webhooks.values():
            if not webhook.events.get(event_type):
                continue
            if source is not None and not webhook.sources.get(source):
                continue
            form = {"type": event_type, "fired_at": self.now().strftime(FIRED_AT_FORMAT), "data": data}
            self.webhook_sink(webhook.url, encode_bracketed_form(form), event_type, audience.id)

    # ------------------------------------------------------------------ segments
    def create_segment(self, *, list_id: str, body: dict[str, Any]) -> Segment:
        with self.lock:
            audience = self.audience(list_id)
            if body.get("options"):
                raise bad_request("The emulator only supports static segments (static_segment).")
            name = str(body.get("name") or "").strip()
            if not name:
                raise invalid([{"field": "name", "message": "This value should not be blank."}])
            now = self.now()
            segment = Segment(id=self.next_id() + 1000, name=name, created=now, updated=now)
            for email in body.get("static_segment") or []:
                member = self.find_member(audience, str(email))
                if member is not None and member.status != "archived":
                    segment.member_hashes.add(member.hash)
            audience.segments[segment.id] = segment
            return segment

    def segment(self, list_id: str, segment_id: str) -> tuple[Audience, Segment]:
        audience = self.audience(list_id)
        try:
            segment = audience.segments.get(int(segment_id))
        except ValueError:
            segment = None
        if segment is None:
            raise not_found("segment")
        return audience, segment

    def segment_json(self, audience: Audience, segment: Segment) -> dict[str, Any]:
        active = sum(
            1 for h in segment.member_hashes if h in audience.members and audience.members[h].status == "subscribed"
        )
        return {
            "id": segment.id,
            "name": segment.name,
            "member_count": active,
            "type": "static",
            "created_at": iso(segment.created),
            "updated_at": iso(segment.updated),
            "options": {},
            "list_id": audience.id,
        }

    def change_segment_members(self, *, list_id: str, segment_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            audience, segment = self.segment(list_id, segment_id)
            to_add, to_remove = body.get("members_to_add") or [], body.get("members_to_remove") or []
            if len(to_add) > 500 or len(to_remove) > 500:
                raise invalid([{"field": "members_to_add", "message": "A maximum of 500 members can be sent."}])
            added, removed, unknown = [], [], []
            for email in to_add:
                member = self.find_member(audience, str(email))
                if member is None or member.status == "archived":
                    unknown.append(email)
                elif member.hash not in segment.member_hashes:
                    segment.member_hashes.add(member.hash)
                    added.append(member)
            for email in to_remove:
                member = self.find_member(audience, str(email))
                if member is None:
                    unknown.append(email)
                elif member.hash in segment.member_hashes:
                    segment.member_hashes.discard(member.hash)
                    removed.append(member)
            segment.updated = self.now()
            errors = [{"email_addresses": unknown, "error": "Email addresses are not on the list."}] if unknown else []
            return {
                "members_added": [self.member_json(audience, m) for m in added],
                "members_removed": [self.member_json(audience, m) for m in removed],
                "errors": errors,
                "total_added": len(added),
                "total_removed": len(removed),
                "error_count": len(unknown),
            }

    # ------------------------------------------------------------------ journeys and automations
    def add_journey(self, *, list_id: str, name: str, steps: dict[int, str], journey_id: int | None = None) -> Journey:
        with self.lock:
            self.audience(list_id)
            journey = Journey(id=journey_id or self.next_id() + 5000, list_id=list_id, name=name, steps=dict(steps))
            self.journeys[journey.id] = journey
            return journey

    def trigger_journey(self, *, journey_id: int, step_id: int, email: str) -> None:
        with self.lock:
            journey = self.journeys.get(journey_id)
            if journey is None or step_id not in journey.steps:
                raise not_found("journey step")
            audience = self.audience(journey.list_id)
            member = self.find_member(audience, email) if "@" in email else None
            if member is None or member.status != "subscribed":
                raise bad_request(
                    f"{email} must be a subscribed member of the journey's audience ({journey.list_id}).",
                    title="Bad Request",
                )
            self.journey_triggers.append(
                {
                    "journey_id": journey_id,
                    "step_id": step_id,
                    "email_address": member.email,
                    "list_id": journey.list_id,
                    "received_at": iso(self.now()),
                }
            )

    def add_automation(
        self, *, list_id: str, title: str, emails: dict[str, str], workflow_id: str | None = None
    ) -> Automation:
        with self.lock:
            self.audience(list_id)
            automation = Automation(
                id=workflow_id or short_id(f"workflow:{self.next_id()}"), list_id=list_id, title=title, emails=emails
            )
            self.automations[automation.id] = automation
            return automation

    def queue_automation(self, *, workflow_id: str, email_id: str, email: str) -> dict[str, Any]:
        with self.lock:
            automation = self.automations.get(workflow_id)
            if automation is None or email_id not in automation.emails:
                raise not_found("automation email")
            member = self.find_member(self.audience(automation.list_id), email) if "@" in email else None
            if member is None or member.status != "subscribed":
                raise bad_request(f"{email} must be a subscribed member of the automation's audience.")
            if any(q["email_id"] == email_id and q["email_address"] == member.email for q in automation.queue):
                raise bad_request("The subscriber has already been triggered for this email.")
            entry = {
                "id": member.hash,
                "workflow_id": workflow_id,
                "email_id": email_id,
                "list_id": automation.list_id,
                "list_is_active": True,
                "email_address": member.email,
                "next_send": iso(self.now() + dt.timedelta(minutes=5)),
            }
            automation.queue.append(entry)
            return entry

    # ------------------------------------------------------------------ campaigns
    def create_campaign(self, *, body: dict[str, Any]) -> Campaign:
        with self.lock:
            recipients = body.get("recipients") or {}
            list_id = recipients.get("list_id")
            if not list_id or list_id not in self.audiences:
                raise invalid([{"field": "recipients.list_id", "message": "A valid audience is required."}])
            segment_id = (recipients.get("segment_opts") or {}).get("saved_segment_id")
            if segment_id is not None:
                self.segment(list_id, str(segment_id))
            settings_errors = self.campaign_settings_errors(body.get("settings") or {})
            if settings_errors:
                raise invalid(settings_errors)
            number = self.next_id()
            campaign = Campaign(
                id=short_id(f"campaign:{number}"),
                web_id=200000 + number,
                list_id=list_id,
                segment_id=int(segment_id) if segment_id is not None else None,
                settings=dict(body.get("settings") or {}),
                created=self.now(),
            )
            self.campaigns[campaign.id] = campaign
            return campaign

    @staticmethod
    def campaign_settings_errors(settings: dict[str, Any]) -> list[dict[str, str]]:
        """Mailchimp refuses a reply-to that isn't an email address, with the field named."""
        reply_to = settings.get("reply_to")
        if reply_to and not _EMAIL.match(str(reply_to)):
            return [{"field": "settings.reply_to", "message": "This value should be a valid email."}]
        return []

    def add_template(self, *, name: str, html: str, template_id: int | None = None) -> Template:
        with self.lock:
            template = Template(id=template_id or self.next_id() + 7000, name=name, html=html)
            self.templates[template.id] = template
            return template

    def set_campaign_content(self, *, campaign_id: str, body: dict[str, Any]) -> Campaign:
        """Raw HTML, or a template whose editable sections are filled in (unknown sections are ignored,
        as Mailchimp does)."""
        with self.lock:
            campaign = self.campaign(campaign_id)
            if campaign.status not in ("save", "paused"):
                raise bad_request("The content of a sent or scheduled campaign can't be changed.")
            template_body = body.get("template")
            if template_body:
                template = self.templates.get(int(template_body.get("id") or 0))
                if template is None:
                    raise invalid([{"field": "template.id", "message": "The template does not exist."}])
                campaign.template_id = template.id
                campaign.html = _fill_template(template.html, template_body.get("sections") or {})
                campaign.plain_text = str(body.get("plain_text") or "")
            else:
                campaign.template_id = None
                campaign.html = str(body.get("html") or "")
                campaign.plain_text = str(body.get("plain_text") or "")
            return campaign

    def send_test(self, *, campaign_id: str, body: dict[str, Any]) -> None:
        with self.lock:
            campaign = self.campaign(campaign_id)
            emails = [str(email).strip() for email in body.get("test_emails") or []]
            bad = [email for email in emails if not _EMAIL.match(email)]
            if not emails or bad:
                raise invalid([{"field": "test_emails", "message": "Provide valid email addresses."}])
            if not (campaign.html or campaign.plain_text):
                raise bad_request("The campaign has no content to test.", title="Bad Request")
            campaign.test_sends.append(
                {"emails": emails, "send_type": str(body.get("send_type") or "html"), "at": iso(self.now())}
            )

    def campaign(self, campaign_id: str) -> Campaign:
        campaign = self.campaigns.get(campaign_id)
        if campaign is None:
            raise not_found("campaign")
        self.advance_campaign(campaign)
        return campaign

    def recipients(self, campaign: Campaign) -> list[Member]:
        audience = self.audience(campaign.list_id)
        members = [m for m in audience.members.values() if m.status == "subscribed"]
        if campaign.segment_id is not None:
            segment = audience.segments.get(campaign.segment_id)
            hashes = segment.member_hashes if segment else set()
            members = [m for m in members if m.hash in hashes]
        return sorted(members, key=lambda m: m.email)

    def campaign_json(self, campaign: Campaign) -> dict[str, Any]:
        audience = self.audiences.get(campaign.list_id)
        report = campaign.report
        return {
            "id": campaign.id,
            "web_id": campaign.web_id,
            "type": "regular",
            "create_time": iso(campaign.created),
            "status": campaign.status,
            "emails_sent": report.emails_sent if report else 0,
            "send_time": iso(campaign.send_time),
            "content_type": "template" if campaign.template_id else "html",
            "archive_url": f"http://eepurl.com/{campaign.id[:6]}",
            "long_archive_url": f"https://us21.campaign-archive.com/?u=0e1d2c3b4a5f&id={campaign.id}",
            "recipients": {
                "list_id": campaign.list_id,
                "list_is_active": True,
                "list_name": audience.name if audience else "",
                "segment_text": "",
                "recipient_count": len(report.recipients) if report else len(self.recipients(campaign)),
                "segment_opts": {"saved_segment_id": campaign.segment_id} if campaign.segment_id else {},
            },
            "settings": {
                "subject_line": "",
                "preview_text": "",
                "title": "",
                "from_name": "",
                "reply_to": "",
                **campaign.settings,
                **({"template_id": campaign.template_id} if campaign.template_id else {}),
            },
            "tracking": {"opens": True, "html_clicks": True, "text_clicks": False},
        }

    def checklist(self, campaign: Campaign) -> dict[str, Any]:
        items = []

        def check(ok: bool, item_id: int, heading: str, problem: str) -> None:
            items.append(
                {
                    "type": "success" if ok else "error",
                    "id": item_id,
                    "heading": heading,
                    "details": "" if ok else problem,
                }
            )

        check(bool(self.recipients(campaign)), 1, "Audience", "The audience or segment has no subscribed contacts.")
        check(bool(campaign.settings.get("subject_line")), 2, "Subject line", "The campaign has no subject line.")
        check(bool(campaign.settings.get("from_name")), 3, "From name", "The campaign has no from name.")
        check(bool(campaign.settings.get("reply_to")), 4, "Reply-to address", "The campaign has no reply-to address.")
        check(bool(campaign.html or campaign.plain_text), 5, "Content", "The campaign has no content.")
        return {"is_ready": all(item["type"] == "success" for item in items), "items": items}

    def send_campaign(self, *, campaign_id: str, source: str) -> Campaign:
        with self.lock:
            campaign = self.campaign(campaign_id)
            if campaign.status not in ("save", "paused", "schedule"):
                raise bad_request("This campaign has already been sent or is sending.", title="Bad Request")
            checklist = self.checklist(campaign)
            if not checklist["is_ready"]:
                details = "; ".join(item["details"] for item in checklist["items"] if item["type"] != "success")
                raise bad_request(f"Your Campaign is not ready to send. {details}", title="Bad Request")
            campaign.status = "sending"
            campaign.send_time = self.now()
            campaign.source = source
            return campaign

    def schedule_campaign(self, *, campaign_id: str, schedule_time: str) -> Campaign:
        with self.lock:
            campaign = self.campaign(campaign_id)
            when = dt.datetime.fromisoformat(schedule_time.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            if when.minute % 15 or when.second or when.microsecond:
                raise bad_request("Schedule time must be on the quarter-hour (:00, :15, :30, :45).")
            if when <= self.now():
                raise bad_request("Schedule time must be in the future.")
            if campaign.status not in ("save", "paused", "schedule"):
                raise bad_request("This campaign has already been sent or is sending.")
            if not self.checklist(campaign)["is_ready"]:
                raise bad_request("Your Campaign is not ready to send.")
            campaign.status = "schedule"
            campaign.schedule_time = when.astimezone(dt.UTC)
            return campaign

    def advance_campaign(self, campaign: Campaign) -> None:
        """Lazy progress, like a real send seen by polling: `sending` becomes `sent` on the next read; a
        scheduled campaign is sent once its time has come."""
        with self.lock:
            if campaign.status == "schedule" and campaign.schedule_time and campaign.schedule_time <= self.now():
                campaign.send_time = campaign.schedule_time
                campaign.status = "sending"
            elif campaign.status == "sending":
                self.finish_send(campaign)

    def finish_send(self, campaign: Campaign, *, send_time: dt.datetime | None = None) -> None:
        """Deliver: snapshot the recipients, generate the (deterministic) activity, apply its
        unsubscribes and hard bounces to the members, fire the webhooks."""
        with self.lock:
            if campaign.status == "sent":
                return
            audience = self.audience(campaign.list_id)
            campaign.send_time = send_time or campaign.send_time or self.now()
            campaign.status = "sent"
            recipients = self.recipients(campaign)
            campaign.report = reports.generate(
                campaign_id=campaign.id,
                send_time=campaign.send_time,
                recipients=[m.email for m in recipients],
                urls=reports.links_in(campaign.html),
            )
            by_email = {m.email: m for m in recipients}
            for email in campaign.report.hard_bounces:
                self.set_status(
                    audience, by_email[email], status="cleaned", source=None, reason="hard", campaign_id=campaign.id
                )
            for email in campaign.report.unsubscribed_emails():
                self.set_status(
                    audience,
                    by_email[email],
                    status="unsubscribed",
                    source="user",
                    reason="manual",
                    campaign_id=campaign.id,
                )
            data = {
                "id": campaign.id,
                "subject": campaign.settings.get("subject_line", ""),
                "status": "sent",
                "reason": "",
                "list_id": campaign.list_id,
            }
            self.emit(audience, "campaign", data, campaign.source)

    # ------------------------------------------------------------------ batches
    def add_batch(self, *, operations: list[dict[str, Any]], base_url: str) -> Batch:
        with self.lock:
            if sum(1 for b in self.batches.values() if b.status != "finished") >= 500:
                raise Problem(429, "Too Many Requests", "You have more than 500 pending batches.")
            batch = Batch(
                id=short_id(f"batch:{self.next_id()}"), operations=operations, submitted=self.now(), base_url=base_url
            )
            self.batches[batch.id] = batch
            return batch

    def batch_json(self, batch: Batch) -> dict[str, Any]:
        errored = sum(1 for r in batch.results if r["status_code"] >= 400)
        return {
            "id": batch.id,
            "status": batch.status,
            "total_operations": len(batch.operations),
            "finished_operations": len(batch.results),
            "errored_operations": errored,
            "submitted_at": iso(batch.submitted),
            "completed_at": iso(batch.completed),
            "response_body_url": f"{batch.base_url}/_emulator/batch-results/{batch.id}.tar.gz"
            if batch.status == "finished"
            else "",
        }

    # ------------------------------------------------------------------ snapshot for the control API
    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            for campaign in self.campaigns.values():
                self.advance_campaign(campaign)
            return {
                "lists": {
                    audience.id: {
                        **self.audience_json(audience),
                        "merge_fields": [f.as_json(audience.id) for f in audience.merge_fields.values()],
                        "members": [self.member_json(audience, m) for m in audience.members.values()],
                        "forgotten": sorted(audience.forgotten),
                        "segments": [
                            {
                                **self.segment_json(audience, s),
                                "emails": sorted(
                                    audience.members[h].email for h in s.member_hashes if h in audience.members
                                ),
                            }
                            for s in audience.segments.values()
                        ],
                        "webhooks": [w.as_json(audience.id) for w in audience.webhooks.values()],
                        "events": {m.email: m.events for m in audience.members.values() if m.events},
                    }
                    for audience in self.audiences.values()
                },
                "campaigns": [self.campaign_json(c) for c in self.campaigns.values()],
                "batches": [self.batch_json(b) for b in self.batches.values()],
                "journeys": [
                    {
                        "id": j.id,
                        "list_id": j.list_id,
                        "name": j.name,
                        "steps": [{"id": k, "name": v} for k, v in j.steps.items()],
                    }
                    for j in self.journeys.values()
                ],
                "journey_triggers": list(self.journey_triggers),
                "automations": [
                    {"id": a.id, "list_id": a.list_id, "title": a.title, "emails": a.emails, "queue": a.queue}
                    for a in self.automations.values()
                ],
            }


def _fill_template(html: str, sections: dict[str, Any]) -> str:
    """Replace the content of each `mc:edit="name"` element that `sections` names."""

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in sections:
            return match.group(0)
        return f"{match.group('open')}{sections[name]}</{match.group('tag')}>"

    pattern = re.compile(
        r"(?P<open><(?P<tag>[a-zA-Z0-9]+)\b[^>]*\bmc:edit=\"(?P<name>[^\"]+)\"[^>]*>).*?</(?P=tag)>", re.DOTALL
    )
    return pattern.sub(fill, html)


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return "  ".join(str(v) for v in value.values() if v)
    return "" if value is None else str(value)


def _merge_value_error(merge_field: MergeField, value: Any) -> str:
    """Mailchimp's per-type checks, roughly. Empty always clears the field."""
    if value in ("", None):
        return ""
    kind = merge_field.type
    if kind == "number":
        if isinstance(value, bool):
            return f"{merge_field.tag} must be a number."
        if isinstance(value, int | float):
            return ""
        try:
            float(str(value))
        except ValueError:
            return f"{merge_field.tag} must be a number."
        return ""
    if kind == "address":
        if isinstance(value, dict):
            missing = [key for key in ("addr1", "city", "state", "zip") if not value.get(key)]
            return f"{merge_field.tag} needs {', '.join(missing)}." if missing else ""
        return "" if isinstance(value, str) else f"{merge_field.tag} must be an address."
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return f"{merge_field.tag} must be text."
    text = str(value)
    if kind == "text" and len(text) > 255:
        return f"{merge_field.tag} must be at most 255 characters."
    if kind == "date":
        try:
            dt.date.fromisoformat(text)
        except ValueError:
            return f"{merge_field.tag} must be a date (YYYY-MM-DD)."
    if kind == "birthday" and not re.match(r"^(0[1-9]|1[0-2])/(0[1-9]|[12]\d|3[01])$", text):
        return f"{merge_field.tag} must be a birthday (MM/DD)."
    if kind in ("url", "imageurl") and not re.match(r"^https?://\S+$", text):
        return f"{merge_field.tag} must be a URL."
    if kind in ("dropdown", "radio") and text not in merge_field.choices:
        return f"{merge_field.tag} must be one of: {', '.join(merge_field.choices)}."
    if kind == "zip" and not re.match(r"^[0-9A-Za-z -]{3,10}$", text):
        return f"{merge_field.tag} must be a postal code."
    return ""
