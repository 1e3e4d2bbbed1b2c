"""The form format of Mailchimp's webhook POSTs, shared by the emulator (which sends it) and our
receiver (which reads it): `type`, `fired_at` and bracketed keys such as `data[merges][FNAME]`.

Receiving, verifying and storing webhooks lives elsewhere; this module only converts the format."""

from __future__ import annotations

import re
from collections.abc import Mapping
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
