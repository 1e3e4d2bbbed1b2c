"""Every failure the Mailchimp connector raises, in one hierarchy.

Callers decide with two questions: retry later (`MailchimpTransientError`) or mark the record failed
(`MailchimpAPIError`, `MailchimpConfigurationError`). Messages carry the method, path, status, title and
Mailchimp's request id (`instance`), never the API key.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class FieldError:
    """One entry of a problem+json `errors` array: which field, and what Mailchimp said about it."""

    field: str
    message: str


class MailchimpError(Exception):
    """Base class: anything that went wrong talking to Mailchimp."""

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        title: str = "",
        detail: str = "",
        instance: str = "",
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.instance = instance
        self.method = method
        self.path = path
        super().__init__(message or self._describe())

    def _describe(self) -> str:
        parts = []
        if self.method or self.path:
            parts.append(f"{self.method} {self.path}".strip() + ":")
        if self.status is not None:
            parts.append(str(self.status))
        if self.title:
            parts.append(self.title)
        text = " ".join(parts)
        if self.detail:
            text = f"{text} - {self.detail}" if text else self.detail
        if self.instance:
            text = f"{text} (request id {self.instance})"
        return text or self.__class__.__name__


class MailchimpAPIError(MailchimpError):
    """Mailchimp refused the request (4xx with a problem+json body): retrying won't help."""

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        title: str = "",
        detail: str = "",
        instance: str = "",
        method: str = "",
        path: str = "",
        problem_type: str = "",
        errors: list[FieldError] | None = None,
    ) -> None:
        self.problem_type = problem_type  # the problem+json `type` URL
        self.errors = list(errors or [])
        super().__init__(
            message, status=status, title=title, detail=detail, instance=instance, method=method, path=path
        )

    def _describe(self) -> str:
        text = super()._describe()
        if self.errors:
            text += " [" + "; ".join(f"{error.field}: {error.message}" for error in self.errors) + "]"
        return text

    @property
    def is_not_found(self) -> bool:
        return self.status == 404

    @property
    def is_compliance_refusal(self) -> bool:
        """The member unsubscribed, was cleaned or was permanently deleted: never retry with `status`."""
        return self.title in ("Member In Compliance State", "Forgotten Email Not Subscribed")


class MailchimpTransientError(MailchimpError):
    """Try again later: 429, 5xx, a timeout, a refused or dropped connection, a non-2xx answer without a
    body, or no free connection slot. `retry_after` is in seconds when the server sent `Retry-After`."""

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        title: str = "",
        detail: str = "",
        instance: str = "",
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(
            message, status=status, title=title, detail=detail, instance=instance, method=method, path=path
        )


class MailchimpConfigurationError(MailchimpError, ImproperlyConfigured):
    """The settings can't make a working client (no API key, no data centre, an unusable URL)."""
