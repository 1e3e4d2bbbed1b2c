"""The form format of Mailchimp's webhook POSTs, shared by the emulator (which sends it) and our
receiver (which reads it): `type`, `fired_at` and bracketed keys such as `data[merges][FNAME]`.

The receiving view (connectors/views.py) checks the URL secret with `secret_is_valid`, and stores
`normalize_webhook(form)` under `webhook_dedupe_key(form)`."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Any

FIRED_AT_FORMAT = "%Y-%m-%d %H:%M:%S"  # UTC, no offset: how Mailchimp writes `fired_at`
WEBHOOK_EVENT_TYPES = ("subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign")

_KEY_PATTERN = re.compile(r"^(?P<head>[^\[\]]+)(?P<rest>(?:\[[^\[\]]*\])*)$")
_SEGMENT_PATTERN = re.compile(r"\[([^\[\]]*)\]")


def parse_bracketed_form(form: Mapping[str, Any]) -> dict[str, Any]:
    """`{"data[merges][FNAME]": "Ada", "type": "profile"}`
    -> `{"data": {"merges": {"FNAME": "Ada"}}, "type": "profile"}`.

    Takes a dict or a Django QueryDict (its last value per key). Numeric segments stay string keys of a dict.
    Raises ValueError naming the key when a key is malformed or clashes with another one."""
    result: dict[str, Any] = {}
    for key, value in form.items():
        path = _key_path(key)
        node = result
        for depth, segment in enumerate(path[:-1]):
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                raise ValueError(f"form key {key!r} clashes with the value at {_display(path[: depth + 1])!r}")
            node = child
        leaf = path[-1]
        if isinstance(node.get(leaf), dict):
            raise ValueError(f"form key {key!r} clashes with nested keys under it")
        node[leaf] = value
    return result


def encode_bracketed_form(values: Mapping[str, Any], *, prefix: str = "") -> list[tuple[str, str]]:
    """The inverse of parse_bracketed_form: nested dicts to `(bracketed key, text)` pairs, in order."""
    pairs: list[tuple[str, str]] = []
    for key, value in values.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            pairs.extend(encode_bracketed_form(value, prefix=name))
        elif value is None:
            pairs.append((name, ""))
        else:
            pairs.append((name, str(value)))
    return pairs


def _key_path(key: str) -> list[str]:
    match = _KEY_PATTERN.match(key)
    if not match:
        raise ValueError(f"malformed form key {key!r}")
    segments = [match.group("head"), *_SEGMENT_PATTERN.findall(match.group("rest"))]
    if any(segment == "" for segment in segments):
        raise ValueError(f"form key {key!r} has an empty [] segment")
    return segments


def _display(path: list[str]) -> str:
    return path[0] + "".join(f"[{segment}]" for segment in path[1:])


# --- Receiving ------------------------------------------------------------------------------------
MEMBER_EVENT_TYPES = ("subscribe", "unsubscribe", "profile", "upemail", "cleaned")


def normalize_webhook(form: Mapping[str, Any]) -> dict[str, Any]:
    """One normalized event from a webhook POST's form: `type`, `fired_at` (ISO 8601, UTC), `list_id`, and
    per type `email`, `old_email`/`new_email`, `reason`, `action`, `campaign_id`, `merges`, `subject`,
    `status`. Emails are lower-cased. Raises ValueError naming what is missing or malformed."""
    parsed = parse_bracketed_form(form)
    event_type = str(parsed.get("type") or "").strip()
    if event_type not in WEBHOOK_EVENT_TYPES:
        raise ValueError(f"unknown or missing type {event_type!r}")
    fired_at_text = str(parsed.get("fired_at") or "").strip()
    try:
        fired_at = dt.datetime.strptime(fired_at_text, FIRED_AT_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"fired_at {fired_at_text!r} is not YYYY-MM-DD HH:MM:SS") from None
    data = parsed.get("data") or {}
    if not isinstance(data, dict):
        raise ValueError("data is not a set of bracketed keys")
    event: dict[str, Any] = {
        "type": event_type,
        "fired_at": fired_at.isoformat(),
        "list_id": str(data.get("list_id") or ""),
    }
    if event_type == "upemail":
        event["old_email"] = _email(data, "old_email")
        event["new_email"] = _email(data, "new_email")
        event["email"] = event["new_email"]
    elif event_type == "campaign":
        event["campaign_id"] = _required(data, "id")
        event["subject"] = str(data.get("subject") or "")
        event["status"] = str(data.get("status") or "")
    else:
        event["email"] = _email(data, "email")
        merges = data.get("merges") or {}
        event["merges"] = {str(k): str(v) for k, v in merges.items()} if isinstance(merges, dict) else {}
        for key in ("reason", "action", "campaign_id", "email_type", "ip_opt", "ip_signup"):
            if data.get(key):
                event[key] = str(data[key])
        if data.get("language"):
            event["language"] = str(data["language"])
    return event


def webhook_dedupe_key(form: Mapping[str, Any]) -> str:
    """The same POST delivered twice (Mailchimp retries for 75 minutes) has the same key."""
    canonical = "&".join(f"{key}={form[key]}" for key in sorted(form))
    return "mc:" + hashlib.sha256(canonical.encode()).hexdigest()


def secret_is_valid(candidate: str, secrets: Sequence[str]) -> bool:
    """Constant-time comparison against every configured secret (several during rotation)."""
    candidate_bytes = candidate.encode()
    matched = False
    for secret in secrets:
        if secret and hmac.compare_digest(candidate_bytes, secret.encode()):
            matched = True
    return matched


def _required(data: Mapping[str, Any], key: str) -> str:
    value = str(data.get(key) or "").strip()
    if not value:
        raise ValueError(f"data[{key}] is missing")
    return value


def _email(data: Mapping[str, Any], key: str) -> str:
    value = _required(data, key).lower()
    if "@" not in value:
        raise ValueError(f"data[{key}] {value!r} is not an email address")
    return value
