"""Mailchimp's problem+json errors, as the emulator raises and answers them."""

from __future__ import annotations

import uuid
from typing import Any

ERROR_DOCS = "https://mailchimp.com/developer/marketing/docs/errors/"
INVALID_RESOURCE_DETAIL = (
    "The resource submitted could not be validated. For field-specific details, see the 'errors' array."
)


class Problem(Exception):
    """Raised anywhere in the emulator; the app turns it into a problem+json answer."""

    def __init__(self, status: int, title: str, detail: str, *, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.instance = str(uuid.uuid4())

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": ERROR_DOCS,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": self.instance,
        }
        if self.errors:
            body["errors"] = self.errors
        return body


def not_found(what: str = "resource") -> Problem:
    return Problem(404, "Resource Not Found", f"The requested {what} could not be found.")


def invalid(errors: list[dict[str, str]], detail: str = INVALID_RESOURCE_DETAIL) -> Problem:
    return Problem(400, "Invalid Resource", detail, errors=errors)


def bad_request(detail: str, title: str = "Invalid Resource") -> Problem:
    return Problem(400, title, detail)
