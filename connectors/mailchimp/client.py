"""The Mailchimp Marketing API client: the only module that imports `mailchimp_marketing`.

Wraps the official SDK (pinned ==3.0.80) and owns what it gets wrong: its 120 s default timeout, its
silent `requests.Response` return for non-2xx answers without a body, its `url.replace("server", dc)`
on the whole URL (so members are always addressed by subscriber hash), and its lack of any cap on
concurrent connections. Every request goes through one transport that tells the request observers
(the test suite's contract check), holds a connection slot, sends, and maps failures to errors.py.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import mailchimp_marketing
import requests
from django.conf import settings
from mailchimp_marketing.api_client import ApiClientError

from .errors import (
    FieldError,
    MailchimpAPIError,
    MailchimpConfigurationError,
    MailchimpError,
    MailchimpTransientError,
)
from .limiter import ConnectionLimiter, LocalConnectionLimiter, build_limiter
from .payloads import (
    MAX_BATCH_SUBSCRIBE_MEMBERS,
    MAX_PAGE_SIZE,
    BatchOperation,
    BatchOperationResult,
    MemberUpsert,
    MergeFieldSpec,
    batch_operation_payload,
    chunked,
    find_duplicate_emails,
    format_mailchimp_datetime,
    member_tags_body,
    member_upsert_body,
    merge_field_create_body,
    normalize_email,
    parse_batch_results,
    quarter_hour_slot,
    static_segment_changes,
    subscriber_hash,
)
from .webhooks import WEBHOOK_EVENT_TYPES

logger = logging.getLogger(__name__)

_DATA_CENTRE = re.compile(r"^[a-z]+[0-9]+$")
_EVENT_NAME = re.compile(r"^[A-Za-z0-9_-]{2,30}$")
WEBHOOK_SOURCES = ("user", "admin", "api")
_USER_AGENT = "partnerlink (mailchimp-marketing-python 3.0.80)"


# --- Request observers --------------------------------------------------------------------------
@dataclass(frozen=True)
class OutboundRequest:
    """What the client is about to send. `path` includes /3.0; `body` is the exact JSON text, or None."""

    method: str
    url: str
    path: str
    query: tuple[tuple[str, str], ...]
    body: str | None


# Called before every request, in order. The test suite appends a contract checker here.
request_observers: list[Callable[[OutboundRequest], None]] = []


# --- Results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BulkUpsertError:
    email: str
    error: str
    error_code: str = ""
    field: str = ""
    field_message: str = ""


@dataclass(frozen=True)
class BulkUpsertCall:
    """What one `POST /lists/{id}` (at most 500 members) did."""

    new_emails: list[str]
    updated_emails: list[str]
    errors: list[BulkUpsertError]


@dataclass(frozen=True)
class BulkUpsertResult:
    calls: list[BulkUpsertCall] = field(default_factory=list)

    @property
    def new_emails(self) -> list[str]:
        return [email for call in self.calls for email in call.new_emails]

    @property
    def updated_emails(self) -> list[str]:
        return [email for call in self.calls for email in call.updated_emails]

    @property
    def errors(self) -> list[BulkUpsertError]:
        return [error for call in self.calls for error in call.errors]


@dataclass(frozen=True)
class StaticSegment:
    id: int
    name: str
    member_count: int


@dataclass(frozen=True)
class SegmentChangeResult:
    added: int
    removed: int
    errors: list[str]  # Mailchimp's messages, e.g. for addresses not on the list
    calls: int


@dataclass(frozen=True)
class BatchStatus:
    id: str
    status: str  # pending | preprocessing | started | finalizing | finished
    total_operations: int
    finished_operations: int
    errored_operations: int
    response_body_url: str

    @property
    def is_finished(self) -> bool:
        return self.status == "finished"

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> BatchStatus:
        return cls(
            id=str(data.get("id", "")),
            status=str(data.get("status", "")),
            total_operations=int(data.get("total_operations") or 0),
            finished_operations=int(data.get("finished_operations") or 0),
            errored_operations=int(data.get("errored_operations") or 0),
            response_body_url=str(data.get("response_body_url") or ""),
        )


# --- The client ---------------------------------------------------------------------------------
class MailchimpClient:
    """One per process is enough (see get_client()); safe to share between threads."""

    def __init__(
        self,
        *,
        api_key: str,
        server_prefix: str = "",
        api_url: str = "",
        timeout: float = 10.0,
        limiter: ConnectionLimiter | None = None,
    ) -> None:
        if not api_key:
            raise MailchimpConfigurationError("MAILCHIMP_API_KEY is not set")
        data_centre = server_prefix or (api_key.rsplit("-", 1)[1] if "-" in api_key else "")
        if not _DATA_CENTRE.match(data_centre):
            raise MailchimpConfigurationError(
                "Cannot tell the Mailchimp data centre: the API key has no '-us21'-style suffix and "
                "MAILCHIMP_SERVER_PREFIX is not set"
            )
        base_url = (api_url or f"https://{data_centre}.api.mailchimp.com/3.0").rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or not parts.path.endswith("/3.0"):
            raise MailchimpConfigurationError(
                f"MAILCHIMP_API_URL must be an http(s) URL ending in /3.0, not {base_url!r}"
            )
        if "server" in base_url:
            # The SDK replaces "server" anywhere in the URL with the data centre.
            raise MailchimpConfigurationError("MAILCHIMP_API_URL must not contain the text 'server'")
        if timeout <= 0:
            raise MailchimpConfigurationError("MAILCHIMP_TIMEOUT must be positive")

        self.base_url = base_url
        self.data_centre = data_centre
        self.timeout = timeout
        self.limiter: ConnectionLimiter = limiter or LocalConnectionLimiter(limit=10)
        self._sdk = mailchimp_marketing.Client()
        self._sdk.set_config({"api_key": api_key, "server": data_centre, "timeout": timeout})
        self._sdk.api_client.host = base_url
        self._sdk.api_client.default_headers["User-Agent"] = _USER_AGENT
        self._sdk.api_client.request = _Transport(self._sdk.api_client.request, self.limiter)

    def __repr__(self) -> str:  # never show the key
        return f"<MailchimpClient {self.base_url} timeout={self.timeout:g}s>"

    @classmethod
    def from_settings(cls) -> MailchimpClient:
        return cls(
            api_key=settings.MAILCHIMP_API_KEY,
            server_prefix=settings.MAILCHIMP_SERVER_PREFIX,
            api_url=settings.MAILCHIMP_API_URL,
            timeout=settings.MAILCHIMP_TIMEOUT,
            limiter=build_limiter(
                redis_url=settings.REDIS_URL,
                api_key=settings.MAILCHIMP_API_KEY,
                limit=settings.MAILCHIMP_MAX_CONNECTIONS,
                request_timeout=settings.MAILCHIMP_TIMEOUT,
            ),
        )

    # -- health --
    def ping(self) -> str:
        """Mailchimp's health status ("Everything's Chimpy!"); raises when the key or the host is wrong."""
        return str(self._call(self._sdk.ping.get).get("health_status", ""))

    # -- merge fields --
    def get_merge_fields(self, *, list_id: str) -> list[dict[str, Any]]:
        return list(
            self._pages(
                lambda count, offset: self._sdk.lists.get_list_merge_fields(list_id, count=count, offset=offset),
                "merge_fields",
            )
        )

    def ensure_merge_fields(self, *, list_id: str, fields: Sequence[MergeFieldSpec]) -> list[str]:
        """Create the merge fields whose tag the audience lacks; returns the tags created. Idempotent:
        existing fields are left as they are, even when their name or type differs."""
        existing = {item.get("tag") for item in self.get_merge_fields(list_id=list_id)}
        created = []
        for spec in fields:
            if spec.tag in existing:
                continue
            try:
                self._call(self._sdk.lists.add_list_merge_field, list_id, merge_field_create_body(spec))
            except MailchimpAPIError as exc:
                # Another worker may have created it since we looked.
                if exc.status == 400 and spec.tag in {f.get("tag") for f in self.get_merge_fields(list_id=list_id)}:
                    continue
                raise
            created.append(spec.tag)
        return created

    # -- members --
    def upsert_member(self, *, list_id: str, member: MemberUpsert) -> dict[str, Any]:
        """Create or update one member with PUT and `status_if_new`: an existing member keeps its status."""
        return self._call(
            self._sdk.lists.set_list_member, list_id, subscriber_hash(member.email), member_upsert_body(member)
        )

    def get_member(self, *, list_id: str, email: str) -> dict[str, Any] | None:
        """The member, or None when the address isn't on the audience."""
        try:
            return self._call(self._sdk.lists.get_list_member, list_id, subscriber_hash(email))
        except MailchimpAPIError as exc:
            if exc.is_not_found:
                return None
            raise

    def iter_member_statuses(self, *, list_id: str) -> Iterator[tuple[str, str]]:
        """(email, status) of every member of the audience, 1000 per call: what a full sync reads back."""
        members = self._pages(
            lambda count, offset: self._sdk.lists.get_list_members_info(
                list_id, count=count, offset=offset, fields=["members.email_address", "members.status", "total_items"]
            ),
            "members",
        )
        for member in members:
            yield normalize_email(member.get("email_address", "")), str(member.get("status") or "")

    def bulk_upsert_members(self, *, list_id: str, members: Sequence[MemberUpsert]) -> BulkUpsertResult:
        """Batch subscribe (`POST /lists/{id}`, `update_existing: true`) in calls of at most 500.

        Existing members keep their status: entries carry `status_if_new`, never `status`, because this
        endpoint does change an existing member's status. Each call is idempotent, so after a failure part
        way through, the whole list can be sent again."""
        duplicates = find_duplicate_emails(members)
        if duplicates:
            raise ValueError(f"bulk upsert lists these addresses more than once: {', '.join(duplicates[:10])}")
        result = BulkUpsertResult()
        for chunk in chunked(list(members), MAX_BATCH_SUBSCRIBE_MEMBERS):
            body = {"members": [member_upsert_body(member) for member in chunk], "update_existing": True}
            data = self._call(self._sdk.lists.batch_list_members, list_id, body)
            result.calls.append(
                BulkUpsertCall(
                    new_emails=[normalize_email(m.get("email_address", "")) for m in data.get("new_members") or []],
                    updated_emails=[
                        normalize_email(m.get("email_address", "")) for m in data.get("updated_members") or []
                    ],
                    errors=[
                        BulkUpsertError(
                            email=normalize_email(str(error.get("email_address") or "")),
                            error=str(error.get("error") or ""),
                            error_code=str(error.get("error_code") or ""),
                            field=str(error.get("field") or ""),
                            field_message=str(error.get("field_message") or ""),
                        )
                        for error in data.get("errors") or []
                    ],
                )
            )
        return result

    def update_member_tags(
        self,
        *,
        list_id: str,
        email: str,
        active: Iterable[str] = (),
        inactive: Iterable[str] = (),
        is_syncing: bool = True,
    ) -> None:
        """Add (`active`) and remove (`inactive`) tags. `is_syncing=True` keeps tag-based automations
        from firing: a sync mirrors data, journeys are started explicitly."""
        body = member_tags_body(active=active, inactive=inactive, is_syncing=is_syncing)
        self._call(self._sdk.lists.update_list_member_tags, list_id, subscriber_hash(email), body)

    def get_member_activity(self, *, list_id: str, email: str, count: int = 50) -> list[dict[str, Any]]:
        data = self._call(
            self._sdk.lists.get_list_member_activity_feed, list_id, subscriber_hash(email), count=min(count, 1000)
        )
        return list(data.get("activity") or [])

    def create_member_event(
        self,
        *,
        list_id: str,
        email: str,
        name: str,
        properties: dict[str, Any] | None = None,
        occurred_at: dt.datetime | None = None,
        is_syncing: bool = False,
    ) -> None:
        """Record a custom event on the member (e.g. `webinar_attended`); events can start journeys."""
        if not _EVENT_NAME.match(name):
            raise ValueError(f"event name {name!r}: 2 to 30 letters, digits, '_' or '-'")
        body: dict[str, Any] = {"name": name, "is_syncing": is_syncing}
        if properties:
            body["properties"] = {str(key): str(value) for key, value in properties.items()}
        if occurred_at is not None:
            body["occurred_at"] = format_mailchimp_datetime(occurred_at)
        self._call(self._sdk.lists.create_list_member_event, list_id, subscriber_hash(email), body)

    # -- static segments --
    def create_static_segment(self, *, list_id: str, name: str, emails: Sequence[str] = ()) -> StaticSegment:
        """A static segment with these members (addresses not on the audience are ignored)."""
        first, rest = list(emails[:500]), list(emails[500:])
        data = self._call(self._sdk.lists.create_segment, list_id, {"name": name, "static_segment": first})
        segment_id = int(data["id"])
        if rest:
            self.update_static_segment(list_id=list_id, segment_id=segment_id, add=rest)
            data = self._call(self._sdk.lists.get_segment, list_id, str(segment_id))
        return StaticSegment(
            id=segment_id, name=str(data.get("name", name)), member_count=int(data.get("member_count") or 0)
        )

    def get_static_segment(self, *, list_id: str, segment_id: int) -> StaticSegment:
        data = self._call(self._sdk.lists.get_segment, list_id, str(segment_id))
        return StaticSegment(
            id=int(data["id"]), name=str(data.get("name", "")), member_count=int(data.get("member_count") or 0)
        )

    def get_static_segment_emails(self, *, list_id: str, segment_id: int) -> list[str]:
        """Everyone in the segment, unsubscribed and cleaned members included, so a diff sees the real membership."""
        members = self._pages(
            lambda count, offset: self._sdk.lists.get_segment_members_list(
                list_id,
                str(segment_id),
                count=count,
                offset=offset,
                include_unsubscribed=True,
                include_cleaned=True,
                include_transactional=True,
            ),
            "members",
        )
        return [normalize_email(member.get("email_address", "")) for member in members]

    def update_static_segment(
        self, *, list_id: str, segment_id: int, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> SegmentChangeResult:
        """Apply a diff, at most 500 additions and 500 removals per call."""
        added = removed = calls = 0
        errors: list[str] = []
        for body in static_segment_changes(add=add, remove=remove):
            # The SDK takes the body first here, unlike everywhere else.
            data = self._call(self._sdk.lists.batch_segment_members, body, list_id, str(segment_id))
            calls += 1
            added += int(data.get("total_added") or 0)
            removed += int(data.get("total_removed") or 0)
            errors += [str(error.get("error") or error) for error in data.get("errors") or []]
        return SegmentChangeResult(added=added, removed=removed, errors=errors, calls=calls)

    # -- batch operations --
    def start_batch(self, *, operations: Sequence[BatchOperation]) -> BatchStatus:
        if not operations:
            raise ValueError("a batch needs at least one operation")
        body = {"operations": [batch_operation_payload(operation) for operation in operations]}
        return BatchStatus.from_api(self._call(self._sdk.batches.start, body))

    def get_batch(self, *, batch_id: str) -> BatchStatus:
        return BatchStatus.from_api(self._call(self._sdk.batches.status, batch_id))

    def list_batches(self, *, count: int = MAX_PAGE_SIZE) -> list[BatchStatus]:
        """The account's most recent batches in one call: polling many in-flight batches at once."""
        data = self._call(self._sdk.batches.list, count=min(count, MAX_PAGE_SIZE))
        return [BatchStatus.from_api(item) for item in data.get("batches") or []]

    def start_member_upsert_batch(self, *, list_id: str, members: Sequence[tuple[str, MemberUpsert]]) -> BatchStatus:
        """Upsert up to 500 members in one batch of `PUT /lists/{id}/members/{hash}` operations, each
        `(operation_id, member)`. PUT with `status_if_new` is the one upsert whose documented meaning is
        "new members get this status, existing members keep theirs", whatever their state."""
        if not 0 < len(members) <= MAX_BATCH_SUBSCRIBE_MEMBERS:
            raise ValueError(f"a member batch holds 1 to {MAX_BATCH_SUBSCRIBE_MEMBERS} members, not {len(members)}")
        operations = [
            BatchOperation(
                method="PUT",
                path=f"/lists/{list_id}/members/{subscriber_hash(member.email)}",
                operation_id=operation_id,
                body=member_upsert_body(member),
            )
            for operation_id, member in members
        ]
        return self.start_batch(operations=operations)

    def wait_for_batch(self, *, batch_id: str, timeout: float, poll_interval: float = 2.0) -> BatchStatus:
        """Poll until the batch is finished; MailchimpTransientError when it isn't within `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get_batch(batch_id=batch_id)
            if status.is_finished:
                return status
            if time.monotonic() >= deadline:
                raise MailchimpTransientError(f"batch {batch_id} still {status.status} after {timeout:g} s")
            time.sleep(poll_interval)

    def fetch_batch_results(self, *, response_body_url: str) -> list[BatchOperationResult]:
        """Download and read a finished batch's results. The URL is pre-signed storage, so no credentials go
        with it."""
        if not response_body_url:
            raise ValueError("the batch has no response_body_url yet (is it finished?)")
        with self.limiter.slot():
            try:
                response = requests.get(response_body_url, timeout=self.timeout)
            except requests.RequestException as exc:
                raise MailchimpTransientError(f"downloading batch results failed: {exc.__class__.__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise MailchimpTransientError(
                f"downloading batch results answered {response.status_code}", status=response.status_code
            )
        if not response.ok:
            raise MailchimpAPIError(
                f"downloading batch results answered {response.status_code}", status=response.status_code
            )
        return parse_batch_results(response.content)

    # -- journeys and automations --
    def trigger_journey_step(self, *, journey_id: int, step_id: int, email: str) -> None:
        """Start a customer journey step for a subscribed member of the journey's audience."""
        self._call(self._sdk.customerJourneys.trigger, int(journey_id), int(step_id), {"email_address": email.strip()})

    def queue_automation_email(self, *, workflow_id: str, workflow_email_id: str, email: str) -> dict[str, Any]:
        """Add a subscriber to a classic automation email's queue."""
        return self._call(
            self._sdk.automations.add_workflow_email_subscriber,
            workflow_id,
            workflow_email_id,
            {"email_address": email.strip()},
        )

    # -- campaigns --
    def create_campaign(
        self,
        *,
        list_id: str,
        subject_line: str,
        from_name: str,
        reply_to: str,
        title: str = "",
        preview_text: str = "",
        segment_id: int | None = None,
    ) -> dict[str, Any]:
        recipients: dict[str, Any] = {"list_id": list_id}
        if segment_id is not None:
            recipients["segment_opts"] = {"saved_segment_id": int(segment_id)}
        campaign_settings = {"subject_line": subject_line, "from_name": from_name, "reply_to": reply_to}
        if title:
            campaign_settings["title"] = title
        if preview_text:
            campaign_settings["preview_text"] = preview_text
        body = {"type": "regular", "recipients": recipients, "settings": campaign_settings}
        return self._call(self._sdk.campaigns.create, body)

    def get_campaign(self, *, campaign_id: str) -> dict[str, Any]:
        return self._call(self._sdk.campaigns.get, campaign_id)

    def list_campaigns(
        self,
        *,
        status: str | None = None,
        since_send_time: dt.datetime | None = None,
        before_send_time: dt.datetime | None = None,
        count: int = 25,
        offset: int = 0,
        newest_first: bool = True,
    ) -> dict[str, Any]:
        """One page of `GET /campaigns` (`{"campaigns": [...], "total_items": N}`), sorted by send time."""
        params: dict[str, Any] = {
            "count": max(1, min(int(count), MAX_PAGE_SIZE)),
            "offset": max(0, int(offset)),
            "sort_field": "send_time",
            "sort_dir": "DESC" if newest_first else "ASC",
        }
        if status:
            params["status"] = status
        if since_send_time is not None:
            params["since_send_time"] = format_mailchimp_datetime(since_send_time)
        if before_send_time is not None:
            params["before_send_time"] = format_mailchimp_datetime(before_send_time)
        return self._call(self._sdk.campaigns.list, **params)

    def iter_sent_campaigns(self, *, since: dt.datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every sent campaign (sent at or after `since`), oldest first, following all pages of 1000."""
        extra = {"since_send_time": since} if since is not None else {}
        return self._pages(
            lambda count, offset: self.list_campaigns(
                status="sent", count=count, offset=offset, newest_first=False, **extra
            ),
            "campaigns",
        )

    def update_campaign_settings(
        self,
        *,
        campaign_id: str,
        subject_line: str,
        from_name: str,
        reply_to: str,
        title: str = "",
        preview_text: str = "",
    ) -> dict[str, Any]:
        """Change a draft campaign's subject, sender and preview text (`PATCH /campaigns/{id}`); Mailchimp
        refuses once it is scheduled or sent."""
        campaign_settings = {"subject_line": subject_line, "from_name": from_name, "reply_to": reply_to}
        if title:
            campaign_settings["title"] = title
        campaign_settings["preview_text"] = preview_text  # sent even when empty, so a removed one is removed
        return self._call(self._sdk.campaigns.update, campaign_id, {"settings": campaign_settings})

    def set_campaign_content(
        self,
        *,
        campaign_id: str,
        html: str = "",
        plain_text: str = "",
        template_id: int | None = None,
        sections: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Raw HTML, or a saved template with its editable sections (`mc:edit` names) filled in."""
        if (template_id is None) == (not html):
            raise ValueError("campaign content is either html or a template id, exactly one of them")
        body: dict[str, Any] = {"html": html} if template_id is None else {}
        if template_id is not None:
            filled = {str(name): str(value) for name, value in (sections or {}).items()}
            body["template"] = {"id": int(template_id), "sections": filled}
        if plain_text:
            body["plain_text"] = plain_text
        return self._call(self._sdk.campaigns.set_content, campaign_id, body)

    def get_campaign_content(self, *, campaign_id: str) -> dict[str, Any]:
        return self._call(self._sdk.campaigns.get_content, campaign_id)

    def get_send_checklist(self, *, campaign_id: str) -> dict[str, Any]:
        """`{is_ready, items[{type, id, heading, details}]}`: what Mailchimp says before a send."""
        return self._call(self._sdk.campaigns.get_send_checklist, campaign_id)

    def send_campaign(self, *, campaign_id: str) -> None:
        self._call(self._sdk.campaigns.send, campaign_id)

    def send_test_email(self, *, campaign_id: str, emails: Sequence[str], send_type: str = "html") -> None:
        """Send the campaign as it stands to these addresses (`POST /campaigns/{id}/actions/test`); they need
        not be on the audience. Mailchimp caps tests per day by plan."""
        addresses = [email.strip() for email in emails if email and email.strip()]
        if not addresses:
            raise ValueError("a test email needs at least one address")
        if send_type not in ("html", "plaintext"):
            raise ValueError("send_type is html or plaintext")
        self._call(self._sdk.campaigns.send_test_email, campaign_id, {"test_emails": addresses, "send_type": send_type})

    def unschedule_campaign(self, *, campaign_id: str) -> None:
        """Back to a draft (`POST /campaigns/{id}/actions/unschedule`); refused once sending has started."""
        self._call(self._sdk.campaigns.unschedule, campaign_id)

    def schedule_campaign(self, *, campaign_id: str, send_at: dt.datetime) -> dt.datetime:
        """Schedule for the first quarter hour at or after `send_at` (Mailchimp only takes :00, :15, :30
        and :45, in UTC); returns the slot used."""
        slot = quarter_hour_slot(send_at)
        self._call(self._sdk.campaigns.schedule, campaign_id, {"schedule_time": format_mailchimp_datetime(slot)})
        return slot

    # -- reports --
    def get_campaign_report(self, *, campaign_id: str) -> dict[str, Any]:
        return self._call(self._sdk.reports.get_campaign_report, campaign_id)

    def iter_email_activity(self, *, campaign_id: str, since: dt.datetime | None = None) -> Iterator[dict[str, Any]]:
        """Every recipient's activity (`{email_address, activity[{action, timestamp, url}]}`), following all
        pages of 1000. With `since`, only activity after that moment."""
        extra = {"since": format_mailchimp_datetime(since)} if since is not None else {}
        return self._pages(
            lambda count, offset: self._sdk.reports.get_email_activity_for_campaign(
                campaign_id, count=count, offset=offset, **extra
            ),
            "emails",
        )

    def get_email_activity(self, *, campaign_id: str, since: dt.datetime | None = None) -> list[dict[str, Any]]:
        return list(self.iter_email_activity(campaign_id=campaign_id, since=since))

    def get_click_details(self, *, campaign_id: str) -> list[dict[str, Any]]:
        """Per link: `{id, url, total_clicks, unique_clicks, …}`, all pages."""
        return list(
            self._pages(
                lambda count, offset: self._sdk.reports.get_campaign_click_details(
                    campaign_id, count=count, offset=offset
                ),
                "urls_clicked",
            )
        )

    # -- list webhooks --
    def create_list_webhook(
        self,
        *,
        list_id: str,
        url: str,
        events: Iterable[str],
        sources: Iterable[str] = ("user", "admin"),
    ) -> dict[str, Any]:
        """Register our receiver. Mailchimp GETs `url` first and refuses the webhook unless it answers 2xx.
        The default sources leave out `api`: changes we make ourselves needn't come back to us."""
        wanted_events, wanted_sources = set(events), set(sources)
        unknown = (wanted_events - set(WEBHOOK_EVENT_TYPES)) | (wanted_sources - set(WEBHOOK_SOURCES))
        if unknown:
            raise ValueError(f"unknown webhook events or sources: {sorted(unknown)}")
        body = {
            "url": url,
            "events": {event: event in wanted_events for event in WEBHOOK_EVENT_TYPES},
            "sources": {source: source in wanted_sources for source in WEBHOOK_SOURCES},
        }
        return self._call(self._sdk.lists.create_list_webhook, list_id, body)

    def list_webhooks(self, *, list_id: str) -> list[dict[str, Any]]:
        return list(self._call(self._sdk.lists.get_list_webhooks, list_id).get("webhooks") or [])

    def delete_list_webhook(self, *, list_id: str, webhook_id: str) -> None:
        self._call(self._sdk.lists.delete_list_webhook, list_id, webhook_id)

    # -- plumbing --
    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one SDK method; unwrap what the transport raised, and turn the SDK's bare
        `requests.Response` (204 and other empty 2xx answers) into an empty dict."""
        try:
            data = method(*args, **kwargs)
        except ApiClientError as exc:
            # The SDK wraps whatever the transport raised; ours already says everything.
            if isinstance(exc.text, BaseException):
                raise exc.text from None
            raise MailchimpAPIError(f"unexpected SDK error: {exc.text!r:.300}", status=exc.status_code) from None
        if isinstance(data, requests.Response):
            return {}
        if isinstance(data, str):
            # A 2xx with a body that isn't JSON: nothing we asked for answers like that.
            raise MailchimpTransientError(f"Mailchimp answered a non-JSON body: {data[:200]!r}")
        return data

    def _pages(self, fetch: Callable[[int, int], Any], key: str) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self._call(fetch, MAX_PAGE_SIZE, offset)
            items = page.get(key) or []
            yield from items
            offset += len(items)
            if not items or offset >= int(page.get("total_items") or 0):
                return


class _Transport:
    """Stands in for the SDK's `ApiClient.request`: observers, connection slot, send, error mapping."""

    def __init__(self, send: Callable[..., requests.Response], limiter: ConnectionLimiter) -> None:
        self._send = send
        self._limiter = limiter

    def __call__(
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> requests.Response:
        parts = urlsplit(url)
        query = tuple((str(key), _query_text(value)) for key, value in (query_params or []) if value is not None)
        # The SDK json.dumps the body of every POST, PUT and PATCH, None included ("null").
        text = _json_text(body) if method in ("POST", "PUT", "PATCH") else None
        outbound = OutboundRequest(method=method, url=url, path=parts.path, query=query, body=text)
        for observer in list(request_observers):
            observer(outbound)
        with self._limiter.slot():
            try:
                response = self._send(method, url, query_params, headers=headers, body=body)
            except requests.Timeout as exc:
                raise _logged(
                    MailchimpTransientError(
                        f"{method} {parts.path}: timed out ({exc.__class__.__name__})", method=method, path=parts.path
                    )
                ) from exc
            except requests.RequestException as exc:
                raise _logged(
                    MailchimpTransientError(
                        f"{method} {parts.path}: connection failed ({exc.__class__.__name__})",
                        method=method,
                        path=parts.path,
                    )
                ) from exc
        if not response.ok:
            raise _logged(_error_from_response(response, method=method, path=parts.path))
        return response


def _error_from_response(response: requests.Response, *, method: str, path: str) -> MailchimpError:
    status = response.status_code
    problem = _problem(response)
    common = {
        "status": status,
        "title": str(problem.get("title") or ""),
        "detail": str(problem.get("detail") or ""),
        "instance": str(problem.get("instance") or response.headers.get("X-Request-Id") or ""),
        "method": method,
        "path": path,
    }
    # No body at all (429/403/5xx under load) is Mailchimp saying "not now", not "never".
    if status == 429 or status >= 500 or not response.content.strip():
        return MailchimpTransientError(retry_after=_retry_after(response.headers.get("Retry-After")), **common)
    if not problem:
        common["detail"] = response.text[:200]
    errors = [
        FieldError(field=str(item.get("field") or ""), message=str(item.get("message") or ""))
        for item in problem.get("errors") or []
        if isinstance(item, dict)
    ]
    return MailchimpAPIError(problem_type=str(problem.get("type") or ""), errors=errors, **common)


def _problem(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _logged(error: MailchimpError) -> MailchimpError:
    level = logging.WARNING if isinstance(error, MailchimpTransientError) else logging.ERROR
    logger.log(
        level,
        "Mailchimp %s %s failed: status=%s title=%r request_id=%s (%s)",
        error.method,
        error.path,
        error.status,
        error.title,
        error.instance or "-",
        error,  # our own message: method, path, status, detail; never the key
    )
    return error


def _query_text(value: Any) -> str:
    return str(value)  # what requests sends: the SDK's booleans go out as True/False


def _json_text(body: Any) -> str:
    return json.dumps(body)


# --- One client per process ---------------------------------------------------------------------
_client_lock = threading.Lock()
_client: tuple[tuple[Any, ...], MailchimpClient] | None = None


def get_client() -> MailchimpClient:
    """The process's client, built from settings; rebuilt when those settings change (tests)."""
    global _client
    fingerprint = (
        settings.MAILCHIMP_API_KEY,
        settings.MAILCHIMP_SERVER_PREFIX,
        settings.MAILCHIMP_API_URL,
        settings.MAILCHIMP_TIMEOUT,
        settings.MAILCHIMP_MAX_CONNECTIONS,
        settings.REDIS_URL,
    )
    with _client_lock:
        if _client is None or _client[0] != fingerprint:
            _client = (fingerprint, MailchimpClient.from_settings())
        return _client[1]


def reset_client() -> None:
    global _client
    with _client_lock:
        _client = None


def _forget_client_after_fork() -> None:
    # A forked worker (Celery prefork) builds its own client rather than sharing its parent's; the lock
    # is replaced, not taken, because the fork may have happened while another thread held it.
    global _client, _client_lock
    _client_lock = threading.Lock()
    _client = None


os.register_at_fork(after_in_child=_forget_client_after_fork)
