"""Every failure talking to Trading Grid becomes one of these.

Tasks retry on `TradingGridTransientError` only; everything else is permanent for the record at hand.
Messages never carry credentials, tokens or webhook secrets."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured


class TradingGridError(Exception):
    """Base of every Trading Grid connector error."""


class TradingGridConfigurationError(TradingGridError, ImproperlyConfigured):
    """A setting is missing or malformed (names the setting, never its value)."""


class TradingGridAPIError(TradingGridError):
    """Trading Grid answered with an error that retrying will not fix (4xx, GraphQL errors).

    `code`, `message` and `details` come from the contract's `{"error": {"code", "message", "details"}}`
    (or an OAuth2 `{"error": "...", "error_description": "..."}`) when the body has them."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        details: Any = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.method = method
        self.path = path
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.method} {self.path}".strip()
        status = f"HTTP {self.status}" if self.status is not None else "no status"
        code = f" [{self.code}]" if self.code else ""
        return f"Trading Grid {where} failed ({status}){code}: {self.message}"


class TradingGridNotFoundError(TradingGridAPIError):
    """404: the company, partner, issue, document… does not exist (or is not visible to us)."""


class TradingGridAuthError(TradingGridAPIError):
    """The consumer key/secret were refused, a fresh token was refused again, or access is forbidden."""


class TradingGridTransientError(TradingGridError):
    """429, 5xx, timeouts or connection failures that were still failing after our bounded retries.

    `retry_after` (seconds) is what the server asked for, when it said so: a task should wait at least that long.
    `not_processed` is True when Trading Grid cannot have acted on the request (429, 503, or a connection never
    made); False means it may have (a timeout, a dropped connection, another 5xx): a create is then in doubt."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        method: str = "",
        path: str = "",
        not_processed: bool = False,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.not_processed = not_processed
        self.message = message
        self.method = method
        self.path = path
        where = f"{method} {path}".strip()
        status_text = f"HTTP {status}" if status is not None else "no response"
        wait = f", retry after {retry_after:g}s" if retry_after is not None else ""
        super().__init__(f"Trading Grid {where} unavailable ({status_text}{wait}): {message}")
