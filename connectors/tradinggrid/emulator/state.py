"""The emulator's memory: everything Trading Grid would hold for us, behind one lock.

Both the HTTP layer (contract and control API) and Python callers (seeding, tests) change it through the
methods here. Changes made "by Trading Grid" (the control API, `emit=True`) queue Standard Webhooks for every
matching subscription; every change bumps `updated_at` so polling with `updated_since` finds it."""

from __future__ import annotations

import copy
import fnmatch
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from ..payloads import (
    COMPLIANCE_STATUSES,
    CONTACT_ROLES,
    ISSUE_CATEGORIES,
    ISSUE_SEVERITIES,
    ISSUE_STATUSES,
    ONBOARDING_STATUSES,
    PARTNER_TYPES,
    REGIONS,
    TIERS,
)
from ..webhooks import WEBHOOK_EVENT_TYPES, decode_webhook_secret, generate_webhook_secret

DOCUMENT_KINDS = ("policy", "trading_terms", "operational_guide")
DOCUMENT_VERSION_STATUSES = ("draft", "approved", "withdrawn")
EVENT_KINDS = ("webinar", "training", "business_review")
PROFILE_FIELDS = (
    "partner_type",
    "region",
    "country_code",
    "product_lines",
    "tier",
    "onboarding_status",
    "compliance_status",
    "certifications",
    "contract_renewal_at",
    "compliance_review_at",
    "contacts",
    "custom",
)
CONTACT_FIELDS = ("email", "first_name", "last_name", "role", "phone", "language", "timezone")
ISSUE_FIELDS = (
    "partner_company_id",
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
    "raised_by",
    "raised_at",
    "due_at",
    "resolved_at",
)
ISSUE_PATCHABLE = tuple(f for f in ISSUE_FIELDS if f not in ("partner_company_id", "raised_at", "raised_by"))
POST_FIELDS = ("title", "body_html", "summary", "source", "audience", "published_at")
EVENT_FIELDS = ("kind", "title", "starts_at", "ends_at", "timezone", "join_url", "agenda_html", "materials")
# Standard Webhooks' schedule: at once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about a day in all).
DEFAULT_WEBHOOK_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
DEFAULT_TOKEN_TTL = 10 * 60 * 60
MAX_PAGE_SIZE = 1000

_BUID = re.compile(r"^[A-Z]{2}[0-9]{8}[A-Z0-9]{2}$")
_TRADING_ADDRESS = re.compile(r"^[0-9A-Z]{2}:[^\s:]{1,35}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class EmulatorError(Exception):
    """An error answer in the contract's shape: `{"error": {"code", "message", "details"}}`."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def validation_error(field_name: str, message: str) -> EmulatorError:
    return EmulatorError(400, "validation_error", f"{field_name}: {message}",
                         [{"field": field_name, "message": message}])


def not_found(what: str, ident: str) -> EmulatorError:
    return EmulatorError(404, "not_found", f"{what} {ident} does not exist.")


def iso(moment: datetime | date | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return moment.isoformat()


def parse_moment(value: Any, field_name: str) -> datetime:
    """An ISO 8601 timestamp (Z allowed) or date, as aware UTC; a validation error otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise validation_error(field_name, "is not an ISO 8601 date-time.")
    else:
        raise validation_error(field_name, "is not an ISO 8601 date-time.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass
class FaultRule:
    """One injected failure. `kind`: status (answer `status`), drop (close the connection unanswered),
    latency (wait `seconds`, then carry on). Matches `method` and `path` (glob) when given; fires `times`
    times (None: forever) with `probability`."""

    kind: str = "status"
    status: int = 500
    retry_after: float | None = None
    body: bool = True
    seconds: float = 0.0
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    probability: float = 1.0
    fired: int = 0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        known = {f for f in cls.__dataclass_fields__ if f != "fired"}
        unknown = set(data) - known
        if unknown:
            raise validation_error("fault", f"unknown keys {sorted(unknown)}")
        rule = cls(**{k: v for k, v in data.items() if k in known})
        if rule.kind not in ("status", "drop", "latency"):
            raise validation_error("kind", "must be status, drop or latency")
        if rule.kind == "status" and not 400 <= int(rule.status) <= 599:
            raise validation_error("status", "must be an HTTP error status")
        return rule

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return not self.path or fnmatch.fnmatchcase(path, self.path)


@dataclass
class Delivery:
    id: str
    subscription_id: str
    url: str
    event_type: str
    body: bytes
    created_at: str
    status: str = "pending"  # pending, delivered, failed, cancelled
    attempts: list[dict[str, Any]] = field(default_factory=list)
    next_attempt_at: float = 0.0  # time.monotonic()
    in_flight: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "subscription_id": self.subscription_id,
            "url": self.url,
            "event_type": self.event_type,
            "payload": json.loads(self.body),
            "created_at": self.created_at,
            "status": self.status,
            "attempts": list(self.attempts),
        }


class EmulatorState:
    """Thread-safe in-memory Trading Grid. All public methods take the lock."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        company_id: str,
        company_name: str = "Partnerlink Demo Company",
        our_trading_addresses: Sequence[str] = ("ZZ:PARTNERLINK", "01:987654321"),
        token_ttl: float = DEFAULT_TOKEN_TTL,
        clock: Callable[[], datetime] | None = None,
        random_seed: int = 0,
    ) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.client_id = client_id
        self.client_secret = client_secret
        self.company_id = company_id
        self.company_name = company_name
        self.our_trading_addresses = tuple(our_trading_addresses)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.default_token_ttl = token_ttl
        self.random_seed = random_seed
        self.env_faults: list[FaultRule] = []  # survive reset(): they come from the environment
        self.after_request_hooks: list[Callable[[dict[str, Any]], None]] = []
        self.webhook_delay_scale = 1.0
        self.webhook_retry_schedule: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_SCHEDULE
        self.webhook_timeout = 10.0
        self.reset()

    # --- Lifecycle ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget all data, tokens, faults (except those from the environment) and deliveries."""
        with self.lock:
            self.rng = random.Random(self.random_seed)
            self.token_ttl = self.default_token_ttl
            self.page_size_cap = MAX_PAGE_SIZE
            self.tokens: dict[str, float] = {}
            self.token_requests = 0
            self.partners: dict[str, dict[str, Any]] = {}
            self.users: dict[str, dict[str, Any]] = {}
            self.issues: dict[str, dict[str, Any]] = {}
            self.comments: dict[str, list[dict[str, Any]]] = {}
            self.posts: dict[str, dict[str, Any]] = {}
            self.documents: dict[str, dict[str, Any]] = {}
            self.acknowledgements: dict[str, dict[tuple[str, str, str], dict[str, Any]]] = {}
            self.events: dict[str, dict[str, Any]] = {}
            self.registrations: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
            self.attendance: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
            self.questions: dict[str, list[dict[str, Any]]] = {}
            self.subscriptions: dict[str, dict[str, Any]] = {}
            self.transactions: dict[str, dict[str, Any]] = {}
            self.scrolls: dict[str, dict[str, Any]] = {}
            self.deliveries: dict[str, Delivery] = {}
            self.faults: list[FaultRule] = []
            self.requests: deque[dict[str, Any]] = deque(maxlen=5000)
            self._counters: dict[str, int] = {}
            self._last_tick: datetime | None = None
            self.changed.notify_all()

    # --- Time and ids ---------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock()

    def tick(self) -> datetime:
        """A strictly increasing timestamp for `updated_at`, so `updated_since` never loses an update."""
        with self.lock:
            moment = self.clock()
            if self._last_tick is not None and moment <= self._last_tick:
                moment = self._last_tick + timedelta(microseconds=1)
            self._last_tick = moment
            return moment

    def next_id(self, prefix: str, width: int = 6) -> str:
        with self.lock:
            self._counters[prefix] = self._counters.get(prefix, 0) + 1
            return f"{prefix}{self._counters[prefix]:0{width}d}"

    def random_uuid(self) -> str:
        with self.lock:
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # --- OAuth ----------------------------------------------------------------------------------

    def issue_token(self, client_id: str, client_secret: str) -> dict[str, Any] | None:
        """A new bearer token for valid consumer credentials, else None. Comparisons in constant time."""
        good_id = secrets.compare_digest(client_id.encode(), self.client_id.encode())
        good_secret = secrets.compare_digest(client_secret.encode(), self.client_secret.encode())
        with self.lock:
            self.token_requests += 1
            if not (good_id and good_secret):
                return None
            token = secrets.token_urlsafe(32)
            self.tokens[token] = time.time() + self.token_ttl
            return {"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_ttl)}

    def token_problem(self, token: str | None) -> str | None:
        """Why `token` is refused, or None when it is good."""
        if not token:
            return "missing"
        with self.lock:
            expires_at = self.tokens.get(token)
        if expires_at is None:
            return "invalid"
        if time.time() >= expires_at:
            return "expired"
        return None

    def expire_tokens(self) -> int:
        """Make every issued token expire now (the next call answers 401)."""
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = 0.0
            return len(self.tokens)

    # --- Faults ---------------------------------------------------------------------------------

    def add_faults(self, rules: Iterable[Mapping[str, Any] | FaultRule]) -> list[FaultRule]:
        added = [r if isinstance(r, FaultRule) else FaultRule.from_dict(r) for r in rules]
        with self.lock:
            self.faults.extend(added)
        return added

    def clear_faults(self) -> None:
        with self.lock:
            self.faults = []

    def faults_for(self, method: str, path: str) -> tuple[float, FaultRule | None]:
        """Total added latency and the status/drop rule to apply (if any) for this request."""
        latency = 0.0
        chosen: FaultRule | None = None
        with self.lock:
            for rule in [*self.env_faults, *self.faults]:
                if not rule.matches(method, path):
                    continue
                if rule.probability < 1.0 and self.rng.random() >= rule.probability:
                    continue
                if rule.kind == "latency":
                    rule.fired += 1
                    latency += float(rule.seconds)
                elif chosen is None:
                    rule.fired += 1
                    chosen = rule
        return latency, chosen

    def record_request(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append(entry)

    # --- Company and users [doc] ----------------------------------------------------------------

    def company(self) -> dict[str, Any]:
        return {
            "companyId": self.company_id,
            "companyName": self.company_name,
            "status": "Active",
            "tradingAddresses": [_address_record(a) for a in self.our_trading_addresses],
            "address": {"addressLine1": "1 Demo Way", "city": "Waterloo", "state": "ON", "postalCode": "N2L 0A1",
                        "countryCode": "CA"},
        }

    def directory(self, *, partner_company_id: str | None = None, partner_company_name: str | None = None,
                  trading_address: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            entries = []
            for partner in self.partners.values():
                if partner_company_id and partner["company_id"] != partner_company_id.strip().upper():
                    continue
                if partner_company_name and partner_company_name.strip().lower() not in partner["name"].lower():
                    continue
                if trading_address and trading_address.strip().upper() not in partner["trading_addresses"]:
                    continue
                entries.append(self._directory_entry(partner))
            return entries

    def _directory_entry(self, partner: Mapping[str, Any]) -> dict[str, Any]:
        status = {"approved": "Active", "suspended": "Suspended", "rejected": "Rejected"}.get(
            partner["profile"]["onboarding_status"], "Pending"
        )
        return {
            "partnerCompanyId": partner["company_id"],
            "partnerCompanyName": partner["name"],
            "legalName": partner["legal_name"],
            "status": status,
            "countryCode": partner["profile"].get("country_code") or "",
            "tradingAddresses": [_address_record(a) for a in partner["trading_addresses"]],
            "lastModified": iso(partner["updated_at"]),
        }

    def list_users(self, *, login_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            users = list(self.users.values())
        if login_id:
            users = [u for u in users if u["loginId"].lower() == login_id.strip().lower()]
        return copy.deepcopy(users)

    def get_user(self, user_ref: str) -> dict[str, Any]:
        with self.lock:
            user = self.users.get(user_ref) or next(
                (u for u in self.users.values() if u["loginId"].lower() == user_ref.lower()), None
            )
            if not user:
                raise not_found("User", user_ref)
            return copy.deepcopy(user)

    def create_user(self, data: Mapping[str, Any]) -> dict[str, Any]:
        _require_mapping(data, "user")
        for name in ("loginId", "firstName", "lastName"):
            if not str(data.get(name) or "").strip():
                raise validation_error(name, "is required")
        contact = data.get("contactInformation") or {}
        if not isinstance(contact, Mapping) or not _EMAIL.match(str(contact.get("email") or "").strip()):
            raise validation_error("contactInformation.email", "is required and must be an email address")
        with self.lock:
            if any(u["loginId"].lower() == str(data["loginId"]).lower() for u in self.users.values()):
                raise EmulatorError(409, "conflict", f"loginId {data['loginId']} is taken.")
            user_id = f"GCP{self.next_id('', 10)}"
            user = {
                "userId": user_id,
                "loginId": str(data["loginId"]).strip(),
                "firstName": str(data["firstName"]).strip(),
                "lastName": str(data["lastName"]).strip(),
                "type": data.get("type", "Web"),
                "contactInformation": {k: v for k, v in dict(contact).items() if k != "loginPassword"},
                "address": dict(data.get("address") or {}),
                "preferredLanguage": data.get("preferredLanguage", "en"),
                "preferredTimezone": data.get("preferredTimezone", "UTC"),
                "status": "Active",
            }
            self.users[user_id] = user
            return copy.deepcopy(user)

    def update_user(self, user_ref: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        _require_mapping(changes, "user")
        with self.lock:
            user_id = self.get_user(user_ref)["userId"]
            user = self.users[user_id]
            for key, value in changes.items():
                if key in ("userId", "loginPassword", "userPasswordHint"):
                    continue
                if isinstance(value, Mapping) and isinstance(user.get(key), dict):
                    user[key].update(value)
                else:
                    user[key] = value
            return copy.deepcopy(user)

    def delete_user(self, user_ref: str) -> None:
        with self.lock:
            user_id = self.get_user(user_ref)["userId"]
            del self.users[user_id]

    # --- Partners and profiles --------------------------------------------------------------------

    def create_partner(self, data: Mapping[str, Any], *, emit: bool = False,
                       created_at: datetime | None = None) -> dict[str, Any]:
        """A partner from a profile-shaped dict with `company_id` (or `tg_company_id`), `name`, optional
        `legal_name` and `trading_addresses`."""
        _require_mapping(data, "partner")
        company_id = str(data.get("company_id") or data.get("tg_company_id") or "").strip().upper()
        if not _BUID.match(company_id):
            raise validation_error("company_id", "must be a BUID like GC00804444LX")
        name = str(data.get("name") or "").strip()
        if not name:
            raise validation_error("name", "is required")
        addresses = [str(a).strip().upper() for a in data.get("trading_addresses") or []]
        for address in addresses:
            if not _TRADING_ADDRESS.match(address):
                raise validation_error("trading_addresses", f"{address!r} is not QUALIFIER:ID")
        profile = {
            "partner_type": "supplier",
            "region": "",
            "country_code": "",
            "product_lines": [],
            "tier": "standard",
            "onboarding_status": "new",
            "compliance_status": "unknown",
            "certifications": [],
            "contract_renewal_at": None,
            "compliance_review_at": None,
            "contacts": [],
            "custom": {},
        }
        profile.update(_clean_profile({k: v for k, v in data.items() if k in PROFILE_FIELDS}))
        with self.lock:
            if company_id in self.partners:
                raise EmulatorError(409, "conflict", f"Partner {company_id} exists.")
            taken = {a for p in self.partners.values() for a in p["trading_addresses"]}
            clash = taken.intersection(addresses)
            if clash:
                raise EmulatorError(409, "conflict", f"Trading address {sorted(clash)[0]} belongs to another partner.")
            moment = self.tick()
            partner = {
                "company_id": company_id,
                "name": name,
                "legal_name": str(data.get("legal_name") or name).strip(),
                "trading_addresses": list(dict.fromkeys(addresses)),
                "profile": profile,
                "created_at": created_at or moment,
                "updated_at": moment,
            }
            self.partners[company_id] = partner
            rendered = self.render_profile(company_id)
            if emit:
                self.emit("partner.created", {"company_id": company_id, "partner": rendered})
            return rendered

    def render_profile(self, company_id: str) -> dict[str, Any]:
        with self.lock:
            partner = self._partner(company_id)
            return copy.deepcopy({
                "company_id": partner["company_id"],
                "name": partner["name"],
                "legal_name": partner["legal_name"],
                "trading_addresses": partner["trading_addresses"],
                **partner["profile"],
                "created_at": iso(partner["created_at"]),
                "updated_at": iso(partner["updated_at"]),
            })

    def update_profile(self, company_id: str, changes: Mapping[str, Any], *, emit: bool = False) -> dict[str, Any]:
        """PATCH semantics: listed fields replace, `custom` keys merge (null deletes a key)."""
        _require_mapping(changes, "profile")
        unknown = set(changes) - set(PROFILE_FIELDS)
        if unknown:
            raise validation_error(sorted(unknown)[0], "is not a profile field that can be changed")
        cleaned = _clean_profile(changes)
        with self.lock:
            partner = self._partner(company_id)
            profile = partner["profile"]
            previous_status = profile["onboarding_status"]
            for key, value in cleaned.items():
                if key == "custom":
                    for custom_key, custom_value in value.items():
                        if custom_value is None:
                            profile["custom"].pop(custom_key, None)
                        else:
                            profile["custom"][custom_key] = custom_value
                else:
                    profile[key] = value
            partner["updated_at"] = self.tick()
            rendered = self.render_profile(company_id)
            if emit:
                self.emit("partner.updated", {"company_id": partner["company_id"], "partner": rendered})
                if profile["onboarding_status"] != previous_status:
                    self.emit("partner.status_changed", {
                        "company_id": partner["company_id"],
                        "previous_status": previous_status,
                        "onboarding_status": profile["onboarding_status"],
                        "partner": rendered,
                    })
            return rendered

    def set_partner_status(self, company_id: str, status: str, *, emit: bool = False) -> dict[str, Any]:
        if status not in ONBOARDING_STATUSES:
            raise validation_error("onboarding_status", f"must be one of {', '.join(ONBOARDING_STATUSES)}")
        with self.lock:
            partner = self._partner(company_id)
            previous = partner["profile"]["onboarding_status"]
            partner["profile"]["onboarding_status"] = status
            partner["updated_at"] = self.tick()
            rendered = self.render_profile(company_id)
            if emit:
                self.emit("partner.status_changed", {
                    "company_id": partner["company_id"],
                    "previous_status": previous,
                    "onboarding_status": status,
                    "partner": rendered,
                })
            return rendered

    def add_contact(self, company_id: str, contact: Mapping[str, Any], *, emit: bool = False) -> dict[str, Any]:
        cleaned = _clean_contact(contact, "contact")
        with self.lock:
            partner = self._partner(company_id)
            contacts = partner["profile"]["contacts"]
            if any(c["email"] == cleaned["email"] for c in contacts):
                raise EmulatorError(409, "conflict", f"Contact {cleaned['email']} exists for {company_id}.")
            contacts.append(cleaned)
            partner["updated_at"] = self.tick()
            if emit:
                self.emit("partner.contact.created", {"company_id": partner["company_id"], "contact": cleaned})
            return copy.deepcopy(cleaned)

    def update_contact(self, company_id: str, email: str, changes: Mapping[str, Any], *,
                       emit: bool = False) -> dict[str, Any]:
        _require_mapping(changes, "contact")
        with self.lock:
            partner = self._partner(company_id)
            contact = self._contact(partner, email)
            merged = _clean_contact({**contact, **changes}, "contact")
            contact.clear()
            contact.update(merged)
            partner["updated_at"] = self.tick()
            if emit:
                self.emit("partner.contact.updated", {
                    "company_id": partner["company_id"], "previous_email": email.strip().lower(), "contact": merged,
                })
            return copy.deepcopy(merged)

    def remove_contact(self, company_id: str, email: str, *, emit: bool = False) -> dict[str, Any]:
        with self.lock:
            partner = self._partner(company_id)
            contact = self._contact(partner, email)
            partner["profile"]["contacts"].remove(contact)
            partner["updated_at"] = self.tick()
            if emit:
                self.emit("partner.contact.removed", {"company_id": partner["company_id"], "contact": contact})
            return copy.deepcopy(contact)

    def _partner(self, company_id: str) -> dict[str, Any]:
        partner = self.partners.get(str(company_id).strip().upper())
        if not partner:
            raise not_found("Partner", company_id)
        return partner

    @staticmethod
    def _contact(partner: Mapping[str, Any], email: str) -> dict[str, Any]:
        wanted = email.strip().lower()
        for contact in partner["profile"]["contacts"]:
            if contact["email"] == wanted:
                return contact
        raise not_found("Contact", wanted)

    # --- Issues ---------------------------------------------------------------------------------

    def create_issue(self, data: Mapping[str, Any], *, emit: bool = False) -> dict[str, Any]:
        _require_mapping(data, "issue")
        unknown = set(data) - set(ISSUE_FIELDS) - {"id"}
        if unknown:
            raise validation_error(sorted(unknown)[0], "is not an issue field")
        with self.lock:
            partner = self._partner(str(data.get("partner_company_id") or ""))
            now = self.tick()
            issue = {
                "id": str(data.get("id") or self.next_id("ISS-")),
                "partner_company_id": partner["company_id"],
                "category": "other",
                "reason_code": "",
                "severity": "medium",
                "status": "open",
                "title": "",
                "description": "",
                "po_number": "",
                "asn_id": "",
                "invoice_number": "",
                "amount": None,
                "currency": "",
                "raised_by": "",
                "raised_at": iso(now),
                "due_at": None,
                "resolved_at": None,
            }
            issue.update(_clean_issue({k: v for k, v in data.items() if k not in ("id", "partner_company_id")}))
            if not issue["title"]:
                raise validation_error("title", "is required")
            if issue["id"] in self.issues:
                raise EmulatorError(409, "conflict", f"Issue {issue['id']} exists.")
            issue["created_at"] = iso(now)
            issue["updated_at"] = iso(now)
            self.issues[issue["id"]] = issue
            self.comments[issue["id"]] = []
            if emit:
                self.emit("issue.created", {"partner_company_id": issue["partner_company_id"],
                                            "issue": copy.deepcopy(issue)})
            return copy.deepcopy(issue)

    def get_issue(self, issue_id: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self._issue(issue_id))

    def update_issue(self, issue_id: str, changes: Mapping[str, Any], *, emit: bool = False) -> dict[str, Any]:
        _require_mapping(changes, "issue")
        unknown = set(changes) - set(ISSUE_PATCHABLE)
        if unknown:
            raise validation_error(sorted(unknown)[0], "cannot be changed")
        cleaned = _clean_issue(changes)
        with self.lock:
            issue = self._issue(issue_id)
            previous_status = issue["status"]
            other_changes = {k for k, v in cleaned.items() if k != "status" and issue.get(k) != v}
            issue.update(cleaned)
            now = self.tick()
            if issue["status"] in ("resolved", "closed") and not issue["resolved_at"]:
                issue["resolved_at"] = iso(now)
            issue["updated_at"] = iso(now)
            snapshot = copy.deepcopy(issue)
            if emit:
                if other_changes:
                    self.emit("issue.updated", {"partner_company_id": issue["partner_company_id"],
                                                "changed": sorted(other_changes), "issue": snapshot})
                if issue["status"] != previous_status:
                    self.emit("issue.status_changed", {"partner_company_id": issue["partner_company_id"],
                                                       "previous_status": previous_status, "issue": snapshot})
            return snapshot

    def list_issues(self, *, statuses: Sequence[str] = (), categories: Sequence[str] = (),
                    partner: str | None = None, updated_since: datetime | None = None) -> list[dict[str, Any]]:
        with self.lock:
            issues = [
                i for i in self.issues.values()
                if (not statuses or i["status"] in statuses)
                and (not categories or i["category"] in categories)
                and (not partner or i["partner_company_id"] == partner.strip().upper())
                and (updated_since is None or parse_moment(i["updated_at"], "updated_at") >= updated_since)
            ]
            issues.sort(key=lambda i: (i["updated_at"], i["id"]))
            return copy.deepcopy(issues)

    def add_comment(self, issue_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        _require_mapping(data, "comment")
        body = str(data.get("body") or "").strip()
        if not body:
            raise validation_error("body", "is required")
        with self.lock:
            issue = self._issue(issue_id)
            now = self.tick()
            comment = {
                "id": self.next_id("CMT-"),
                "issue_id": issue["id"],
                "author": str(data.get("author") or "api").strip(),
                "body": body,
                "created_at": iso(now),
            }
            self.comments[issue["id"]].append(comment)
            issue["updated_at"] = iso(now)
            return dict(comment)

    def list_comments(self, issue_id: str) -> list[dict[str, Any]]:
        with self.lock:
            self._issue(issue_id)
            return copy.deepcopy(self.comments[issue_id])

    def _issue(self, issue_id: str) -> dict[str, Any]:
        issue = self.issues.get(issue_id)
        if not issue:
            raise not_found("Issue", issue_id)
        return issue

    # --- Posts ----------------------------------------------------------------------------------

    def create_post(self, data: Mapping[str, Any], *, base_url: str = "") -> dict[str, Any]:
        cleaned = _clean_post(data, creating=True)
        with self.lock:
            now = self.tick()
            post_id = self.next_id("POST-")
            post = {
                "id": post_id,
                "title": "",
                "body_html": "",
                "summary": "",
                "source": None,
                "audience": {"partner_types": [], "regions": []},
                "published_at": iso(now),
                **cleaned,
                "url": f"{base_url}/community/posts/{post_id}",
                "created_at": iso(now),
                "updated_at": iso(now),
            }
            self.posts[post_id] = post
            return copy.deepcopy(post)

    def get_post(self, post_id: str) -> dict[str, Any]:
        with self.lock:
            if post_id not in self.posts:
                raise not_found("Post", post_id)
            return copy.deepcopy(self.posts[post_id])

    def update_post(self, post_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        cleaned = _clean_post(changes, creating=False)
        with self.lock:
            if post_id not in self.posts:
                raise not_found("Post", post_id)
            self.posts[post_id].update(cleaned)
            self.posts[post_id]["updated_at"] = iso(self.tick())
            return copy.deepcopy(self.posts[post_id])

    # --- Documents and acknowledgements ---------------------------------------------------------

    def create_document(self, data: Mapping[str, Any], *, base_url: str = "") -> dict[str, Any]:
        _require_mapping(data, "document")
        unknown = set(data) - {"kind", "title", "description"}
        if unknown:
            raise validation_error(sorted(unknown)[0], "is not a document field")
        if data.get("kind") not in DOCUMENT_KINDS:
            raise validation_error("kind", f"must be one of {', '.join(DOCUMENT_KINDS)}")
        title = str(data.get("title") or "").strip()
        if not title:
            raise validation_error("title", "is required")
        with self.lock:
            now = self.tick()
            document_id = self.next_id("DOC-")
            self.documents[document_id] = {
                "id": document_id,
                "kind": data["kind"],
                "title": title,
                "description": str(data.get("description") or ""),
                "versions": [],
                "url": f"{base_url}/community/documents/{document_id}",
                "created_at": iso(now),
                "updated_at": iso(now),
            }
            self.acknowledgements[document_id] = {}
            return self.render_document(document_id)

    def add_document_version(self, document_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        _require_mapping(data, "version")
        version = str(data.get("version") or "").strip()
        if not version:
            raise validation_error("version", "is required")
        for name in ("file_name", "content_url"):
            if not str(data.get(name) or "").strip():
                raise validation_error(name, "is required")
        sha256 = str(data.get("sha256") or "").strip().lower()
        if not _SHA256.match(sha256):
            raise validation_error("sha256", "must be 64 hex digits")
        status = data.get("status", "approved")
        if status not in DOCUMENT_VERSION_STATUSES:
            raise validation_error("status", f"must be one of {', '.join(DOCUMENT_VERSION_STATUSES)}")
        with self.lock:
            document = self._document(document_id)
            if any(v["version"] == version for v in document["versions"]):
                raise EmulatorError(409, "conflict", f"Version {version} of {document_id} exists.")
            now = self.tick()
            published = data.get("published_at")
            document["versions"].append({
                "version": version,
                "file_name": str(data["file_name"]).strip(),
                "sha256": sha256,
                "content_url": str(data["content_url"]).strip(),
                "status": status,
                "published_at": iso(parse_moment(published, "published_at")) if published else iso(now),
            })
            document["updated_at"] = iso(now)
            return self.render_document(document_id)

    def render_document(self, document_id: str) -> dict[str, Any]:
        with self.lock:
            document = copy.deepcopy(self._document(document_id))
        approved = [v for v in document["versions"] if v["status"] == "approved"]
        document["latest"] = approved[-1] if approved else None
        return document

    def acknowledge_document(self, document_id: str, data: Mapping[str, Any], *,
                             emit: bool = False) -> dict[str, Any]:
        _require_mapping(data, "acknowledgement")
        email = str(data.get("contact_email") or "").strip().lower()
        if not _EMAIL.match(email):
            raise validation_error("contact_email", "must be an email address")
        with self.lock:
            document = self.render_document(document_id)
            partner = self._partner(str(data.get("partner_company_id") or ""))
            version = str(data.get("version") or (document["latest"] or {}).get("version") or "")
            if not any(v["version"] == version for v in document["versions"]):
                raise validation_error("version", f"{document_id} has no version {version!r}")
            now = self.tick()
            acknowledged = data.get("acknowledged_at")
            record = {
                "partner_company_id": partner["company_id"],
                "contact_email": email,
                "version": version,
                "acknowledged_at": iso(parse_moment(acknowledged, "acknowledged_at")) if acknowledged else iso(now),
                "updated_at": iso(now),
            }
            self.acknowledgements[document_id][(partner["company_id"], email, version)] = record
            if emit:
                self.emit("document.acknowledged", {"document_id": document_id,
                                                    "partner_company_id": partner["company_id"],
                                                    "acknowledgement": dict(record)})
            return dict(record)

    def list_acknowledgements(self, document_id: str, *, updated_since: datetime | None = None
                              ) -> list[dict[str, Any]]:
        with self.lock:
            self._document(document_id)
            return _since(self.acknowledgements[document_id].values(), updated_since)

    def _document(self, document_id: str) -> dict[str, Any]:
        document = self.documents.get(document_id)
        if not document:
            raise not_found("Document", document_id)
        return document

    # --- Events ---------------------------------------------------------------------------------

    def create_event(self, data: Mapping[str, Any], *, base_url: str = "") -> dict[str, Any]:
        cleaned = _clean_event(data, creating=True)
        with self.lock:
            now = self.tick()
            event_id = self.next_id("EVT-")
            event = {
                "id": event_id,
                "timezone": "UTC",
                "join_url": "",
                "agenda_html": "",
                "materials": [],
                **cleaned,
                "url": f"{base_url}/community/events/{event_id}",
                "created_at": iso(now),
                "updated_at": iso(now),
            }
            self.events[event_id] = event
            self.registrations[event_id] = {}
            self.attendance[event_id] = {}
            self.questions[event_id] = []
            return copy.deepcopy(event)

    def update_event(self, event_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        cleaned = _clean_event(changes, creating=False)
        with self.lock:
            event = self._event(event_id)
            event.update(cleaned)
            if parse_moment(event["ends_at"], "ends_at") < parse_moment(event["starts_at"], "starts_at"):
                raise validation_error("ends_at", "is before starts_at")
            event["updated_at"] = iso(self.tick())
            return copy.deepcopy(event)

    def register_for_event(self, event_id: str, data: Mapping[str, Any], *, emit: bool = False) -> dict[str, Any]:
        email, partner_id = self._event_person(data)
        with self.lock:
            self._event(event_id)
            now = self.tick()
            registered = data.get("registered_at")
            record = {
                "contact_email": email,
                "partner_company_id": partner_id,
                "registered_at": iso(parse_moment(registered, "registered_at")) if registered else iso(now),
                "updated_at": iso(now),
            }
            self.registrations[event_id][(partner_id, email)] = record
            if emit:
                self.emit("event.registration.created", {"event_id": event_id, "partner_company_id": partner_id,
                                                         "registration": dict(record)})
            return dict(record)

    def record_attendance(self, event_id: str, data: Mapping[str, Any], *, emit: bool = False) -> dict[str, Any]:
        email, partner_id = self._event_person(data)
        attended = data.get("attended", True)
        if not isinstance(attended, bool):
            raise validation_error("attended", "must be true or false")
        minutes = data.get("minutes", 0)
        if not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 0:
            raise validation_error("minutes", "must be a whole number of minutes")
        with self.lock:
            self._event(event_id)
            record = {
                "contact_email": email,
                "partner_company_id": partner_id,
                "attended": attended,
                "minutes": minutes if attended else 0,
                "updated_at": iso(self.tick()),
            }
            self.attendance[event_id][(partner_id, email)] = record
            if emit:
                self.emit("event.attendance.recorded", {"event_id": event_id, "partner_company_id": partner_id,
                                                        "attendance": dict(record)})
            return dict(record)

    def add_question(self, event_id: str, data: Mapping[str, Any], *, emit: bool = False) -> dict[str, Any]:
        email, partner_id = self._event_person(data)
        text = str(data.get("question") or "").strip()
        if not text:
            raise validation_error("question", "is required")
        with self.lock:
            self._event(event_id)
            now = self.tick()
            record = {
                "id": self.next_id("Q-"),
                "contact_email": email,
                "partner_company_id": partner_id,
                "question": text,
                "asked_at": iso(now),
                "updated_at": iso(now),
            }
            self.questions[event_id].append(record)
            if emit:
                self.emit("event.question.created", {"event_id": event_id, "partner_company_id": partner_id,
                                                     "question": dict(record)})
            return dict(record)

    def list_event_records(self, event_id: str, kind: str, *, updated_since: datetime | None = None
                           ) -> list[dict[str, Any]]:
        with self.lock:
            self._event(event_id)
            source = {
                "registrations": lambda: self.registrations[event_id].values(),
                "attendance": lambda: self.attendance[event_id].values(),
                "questions": lambda: self.questions[event_id],
            }[kind]()
            return _since(source, updated_since)

    def _event(self, event_id: str) -> dict[str, Any]:
        event = self.events.get(event_id)
        if not event:
            raise not_found("Event", event_id)
        return event

    def _event_person(self, data: Mapping[str, Any]) -> tuple[str, str]:
        _require_mapping(data, "record")
        email = str(data.get("contact_email") or "").strip().lower()
        if not _EMAIL.match(email):
            raise validation_error("contact_email", "must be an email address")
        with self.lock:
            partner = self._partner(str(data.get("partner_company_id") or ""))
        return email, partner["company_id"]

    # --- Webhook subscriptions and deliveries -------------------------------------------------

    def create_subscription(self, data: Mapping[str, Any]) -> dict[str, Any]:
        _require_mapping(data, "subscription")
        url = str(data.get("url") or "").strip()
        if not url.startswith(("http://", "https://")):
            raise validation_error("url", "must be an http(s) URL")
        event_types = data.get("event_types") or []
        if not isinstance(event_types, list) or not all(isinstance(t, str) for t in event_types):
            raise validation_error("event_types", "must be a list of event types")
        for event_type in event_types:
            if event_type != "*" and event_type not in WEBHOOK_EVENT_TYPES:
                raise validation_error("event_types", f"{event_type!r} is not an event type")
        secret = data.get("secret") or generate_webhook_secret()
        try:
            decode_webhook_secret(str(secret))
        except Exception:  # noqa: BLE001 - any undecodable secret is the caller's mistake
            raise validation_error("secret", "must look like whsec_<base64>")
        with self.lock:
            subscription = {
                "id": self.next_id("WHS-"),
                "url": url,
                "event_types": list(event_types),
                "secret": str(secret),
                "created_at": iso(self.tick()),
            }
            self.subscriptions[subscription["id"]] = subscription
            return dict(subscription)

    def delete_subscription(self, subscription_id: str) -> None:
        with self.lock:
            if subscription_id not in self.subscriptions:
                raise not_found("Webhook subscription", subscription_id)
            del self.subscriptions[subscription_id]
            for delivery in self.deliveries.values():
                if delivery.subscription_id == subscription_id and delivery.status == "pending":
                    delivery.status = "cancelled"
            self.changed.notify_all()

    def emit(self, event_type: str, data: Mapping[str, Any]) -> list[str]:
        """Queue one Standard Webhook per subscription that wants `event_type`; returns the message ids."""
        assert event_type in WEBHOOK_EVENT_TYPES, event_type
        with self.lock:
            body = json.dumps(
                {"type": event_type, "timestamp": iso(self.now()), "data": data}, separators=(",", ":")
            ).encode()
            ids = []
            for subscription in self.subscriptions.values():
                wanted = subscription["event_types"]
                if wanted and "*" not in wanted and event_type not in wanted:
                    continue
                delivery = Delivery(
                    id=f"msg_{secrets.token_hex(12)}",
                    subscription_id=subscription["id"],
                    url=subscription["url"],
                    event_type=event_type,
                    body=body,
                    created_at=iso(self.now()),
                    next_attempt_at=time.monotonic(),
                )
                self.deliveries[delivery.id] = delivery
                ids.append(delivery.id)
            self.changed.notify_all()
            return ids

    def retry_delay(self, attempts_made: int) -> float | None:
        """Seconds to wait before the next attempt after `attempts_made` failures, or None to give up."""
        with self.lock:
            if attempts_made >= len(self.webhook_retry_schedule):
                return None
            return self.webhook_retry_schedule[attempts_made] * self.webhook_delay_scale

    def wait_for_deliveries(self, *, timeout: float = 5.0) -> bool:
        """Block until no delivery is pending (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while any(d.status == "pending" for d in self.deliveries.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
            return True

    def delivery_list(self, *, status: str | None = None, event_type: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                d.as_dict() for d in self.deliveries.values()
                if (status is None or d.status == status) and (event_type is None or d.event_type == event_type)
            ]

    # --- Lens -----------------------------------------------------------------------------------

    def add_transactions(self, transactions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Store Lens transactions (missing ids and times are filled in)."""
        added = []
        with self.lock:
            for data in transactions:
                _require_mapping(data, "transaction")
                now = self.now()
                transaction = {
                    "transactionid": str(data.get("transactionid") or self.random_uuid()),
                    "correlationid": str(data.get("correlationid") or self.random_uuid()),
                    "arrivaltime": iso(now),
                    "status": "C",
                    "statusdate": None,
                    "transactionlevel": "Document",
                    "editype": "850",
                    "category": "EDI",
                    **{k: v for k, v in data.items() if k != "contentkeys"},
                }
                transaction["statusdate"] = transaction["statusdate"] or transaction["arrivaltime"]
                keys = data.get("contentkeys") or {}
                if isinstance(keys, list):
                    keys = {k.get("key"): k.get("value") for k in keys if isinstance(k, Mapping)}
                transaction["contentkeys"] = dict(keys)
                self.transactions[transaction["transactionid"]] = transaction
                added.append(copy.deepcopy(transaction))
        return added

    # --- Snapshot -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything, JSON-ready (the control API's GET /_emulator/state)."""
        with self.lock:
            return {
                "company": self.company(),
                "partners": [self.render_profile(cid) for cid in self.partners],
                "directory": self.directory(),
                "users": list(self.users.values()),
                "issues": list(self.issues.values()),
                "comments": self.comments,
                "posts": list(self.posts.values()),
                "documents": [self.render_document(d) for d in self.documents],
                "acknowledgements": {d: list(a.values()) for d, a in self.acknowledgements.items()},
                "events": list(self.events.values()),
                "registrations": {e: list(r.values()) for e, r in self.registrations.items()},
                "attendance": {e: list(r.values()) for e, r in self.attendance.items()},
                "questions": self.questions,
                "webhook_subscriptions": list(self.subscriptions.values()),
                "webhook_deliveries": [d.as_dict() for d in self.deliveries.values()],
                "lens_transactions": list(self.transactions.values()),
                "faults": [asdict(f) for f in [*self.env_faults, *self.faults]],
                "config": {
                    "token_ttl": self.token_ttl,
                    "page_size_cap": self.page_size_cap,
                    "webhook_delay_scale": self.webhook_delay_scale,
                    "webhook_retry_schedule": list(self.webhook_retry_schedule),
                },
                "counters": {"token_requests": self.token_requests, "tokens_issued": len(self.tokens),
                             "requests": len(self.requests)},
            }


# --- Validation and cleaning -----------------------------------------------------------------------


def _require_mapping(value: Any, what: str) -> None:
    if not isinstance(value, Mapping):
        raise EmulatorError(400, "invalid_body", f"The {what} must be a JSON object.")


def _choice(data: Mapping[str, Any], name: str, allowed: Sequence[str], *, blank: bool = False) -> str:
    value = data[name]
    if blank and value in ("", None):
        return ""
    if value not in allowed:
        raise validation_error(name, f"must be one of {', '.join(allowed)}")
    return value


def _optional_date(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise validation_error(name, "is not an ISO 8601 date")
    return iso(parse_moment(value, name))


def _clean_contact(contact: Any, name: str) -> dict[str, Any]:
    _require_mapping(contact, name)
    unknown = set(contact) - set(CONTACT_FIELDS)
    if unknown:
        raise validation_error(f"{name}.{sorted(unknown)[0]}", "is not a contact field")
    email = str(contact.get("email") or "").strip().lower()
    if not _EMAIL.match(email):
        raise validation_error(f"{name}.email", "must be an email address")
    role = contact.get("role") or ""
    if role and role not in CONTACT_ROLES:
        raise validation_error(f"{name}.role", f"must be one of {', '.join(CONTACT_ROLES)}")
    cleaned = {k: str(contact.get(k) or "").strip() for k in CONTACT_FIELDS}
    cleaned["email"] = email
    return cleaned


def _clean_profile(data: Mapping[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in data.items():
        if key == "partner_type":
            cleaned[key] = _choice(data, key, PARTNER_TYPES)
        elif key == "region":
            cleaned[key] = _choice(data, key, REGIONS, blank=True)
        elif key == "tier":
            cleaned[key] = _choice(data, key, TIERS, blank=True)
        elif key == "onboarding_status":
            cleaned[key] = _choice(data, key, ONBOARDING_STATUSES)
        elif key == "compliance_status":
            cleaned[key] = _choice(data, key, COMPLIANCE_STATUSES)
        elif key == "country_code":
            code = str(value or "").strip().upper()
            if code and not (len(code) == 2 and code.isalpha()):
                raise validation_error(key, "must be an ISO 3166 alpha-2 code")
            cleaned[key] = code
        elif key == "product_lines":
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise validation_error(key, "must be a list of names")
            cleaned[key] = [v.strip() for v in value]
        elif key in ("contract_renewal_at", "compliance_review_at"):
            cleaned[key] = _optional_date(value, key)
        elif key == "certifications":
            if not isinstance(value, list):
                raise validation_error(key, "must be a list")
            certifications = []
            for i, cert in enumerate(value):
                _require_mapping(cert, f"certifications[{i}]")
                if not str(cert.get("type") or "").strip():
                    raise validation_error(f"certifications[{i}].type", "is required")
                certifications.append({
                    "type": str(cert["type"]).strip(),
                    "number": str(cert.get("number") or "").strip(),
                    "issuer": str(cert.get("issuer") or "").strip(),
                    "issued_at": _optional_date(cert.get("issued_at"), f"certifications[{i}].issued_at"),
                    "expires_at": _optional_date(cert.get("expires_at"), f"certifications[{i}].expires_at"),
                })
            cleaned[key] = certifications
        elif key == "contacts":
            if not isinstance(value, list):
                raise validation_error(key, "must be a list")
            contacts = [_clean_contact(c, f"contacts[{i}]") for i, c in enumerate(value)]
            if len({c["email"] for c in contacts}) != len(contacts):
                raise validation_error(key, "lists an email twice")
            cleaned[key] = contacts
        elif key == "custom":
            if not isinstance(value, Mapping):
                raise validation_error(key, "must be an object")
            cleaned[key] = copy.deepcopy(dict(value))
    return cleaned


def _clean_issue(data: Mapping[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in data.items():
        if key == "category":
            cleaned[key] = _choice(data, key, ISSUE_CATEGORIES)
        elif key == "severity":
            cleaned[key] = _choice(data, key, ISSUE_SEVERITIES)
        elif key == "status":
            cleaned[key] = _choice(data, key, ISSUE_STATUSES)
        elif key in ("raised_at", "due_at", "resolved_at"):
            cleaned[key] = iso(parse_moment(value, key)) if value not in (None, "") else None
        elif key == "amount":
            if value in (None, ""):
                cleaned[key] = None
            else:
                try:
                    cleaned[key] = str(round(float(value), 2))
                except (TypeError, ValueError):
                    raise validation_error(key, "must be a number")
        elif key == "currency":
            code = str(value or "").strip().upper()
            if code and not (len(code) == 3 and code.isalpha()):
                raise validation_error(key, "must be an ISO 4217 code")
            cleaned[key] = code
        else:
            cleaned[key] = str(value or "").strip()
    return cleaned


def _clean_post(data: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    _require_mapping(data, "post")
    unknown = set(data) - set(POST_FIELDS)
    if unknown:
        raise validation_error(sorted(unknown)[0], "is not a post field")
    if creating:
        for name in ("title", "body_html"):
            if not str(data.get(name) or "").strip():
                raise validation_error(name, "is required")
    cleaned: dict[str, Any] = {}
    for key, value in data.items():
        if key == "source":
            if value is not None:
                _require_mapping(value, "source")
                if value.get("type") != "mailchimp":
                    raise validation_error("source.type", "must be mailchimp")
            cleaned[key] = dict(value) if value else None
        elif key == "audience":
            _require_mapping(value, "audience")
            for i, partner_type in enumerate(value.get("partner_types") or []):
                if partner_type not in PARTNER_TYPES:
                    raise validation_error(f"audience.partner_types[{i}]", "is not a partner type")
            for i, region in enumerate(value.get("regions") or []):
                if region not in REGIONS:
                    raise validation_error(f"audience.regions[{i}]", "is not a region")
            cleaned[key] = {"partner_types": list(value.get("partner_types") or []),
                            "regions": list(value.get("regions") or [])}
        elif key == "published_at":
            cleaned[key] = iso(parse_moment(value, key)) if value else None
        else:
            cleaned[key] = str(value or "")
    return cleaned


def _clean_event(data: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    _require_mapping(data, "event")
    unknown = set(data) - set(EVENT_FIELDS)
    if unknown:
        raise validation_error(sorted(unknown)[0], "is not an event field")
    if creating:
        for name in ("kind", "title", "starts_at", "ends_at"):
            if data.get(name) in (None, ""):
                raise validation_error(name, "is required")
    cleaned: dict[str, Any] = {}
    for key, value in data.items():
        if key == "kind":
            cleaned[key] = _choice(data, key, EVENT_KINDS)
        elif key in ("starts_at", "ends_at"):
            cleaned[key] = iso(parse_moment(value, key))
        elif key == "materials":
            if not isinstance(value, list):
                raise validation_error(key, "must be a list")
            materials = []
            for i, item in enumerate(value):
                _require_mapping(item, f"materials[{i}]")
                if not item.get("title") or not item.get("url"):
                    raise validation_error(f"materials[{i}]", "needs title and url")
                materials.append({"title": str(item["title"]), "url": str(item["url"])})
            cleaned[key] = materials
        else:
            cleaned[key] = str(value or "")
    if creating and parse_moment(cleaned["ends_at"], "ends_at") < parse_moment(cleaned["starts_at"], "starts_at"):
        raise validation_error("ends_at", "is before starts_at")
    return cleaned


def _since(records: Iterable[Mapping[str, Any]], updated_since: datetime | None) -> list[dict[str, Any]]:
    selected = [
        dict(r) for r in records
        if updated_since is None or parse_moment(r["updated_at"], "updated_at") >= updated_since
    ]
    selected.sort(key=lambda r: r["updated_at"])
    return selected


def _address_record(address: str) -> dict[str, str]:
    qualifier, ident = address.split(":", 1)
    return {"qualifier": qualifier, "id": ident, "address": address}
