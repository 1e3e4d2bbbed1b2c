"""The emulator as a WSGI app: Mailchimp's API under /3.0 and a control API under /_emulator/.

Each /3.0 request goes: connection cap (the 11th concurrent request gets an empty 429) -> optional hold
-> injected faults -> API key -> validation against the OpenAPI spec -> the handler."""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hmac
import io
import json
import re
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from ..contract import spec_validator, validate_request
from ..payloads import normalize_email
from .delivery import WebhookDispatcher
from .faults import Fault, FaultInjector
from .problems import Problem, bad_request, invalid, not_found
from .state import EmulatorState, iso, short_id

HEALTH = "Everything's Chimpy!"


@dataclass
class ApiRequest:
    method: str
    path: str  # without /3.0
    params: dict[str, str]
    query: MultiDict
    body: Any
    base_url: str
    source: str = "api"


Handler = Callable[[ApiRequest], tuple[int, Any]]


class MailchimpEmulator:
    """Thread-safe and in-memory. `api_key` is what Basic auth (any user) or a Bearer token must carry."""

    def __init__(
        self,
        *,
        api_key: str,
        list_ids: tuple[str, ...] = (),
        access_tokens: tuple[str, ...] = (),
        max_connections: int = 10,
        faults: tuple[Fault, ...] = (),
        fault_seed: int = 0,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.api_key = api_key
        self.base_url = ""  # set by the server: http://127.0.0.1:PORT
        self.api_url = ""  # base_url + /3.0, what MAILCHIMP_API_URL should be
        self.access_tokens = access_tokens
        self.max_connections = max_connections
        self.state = EmulatorState(default_list_ids=list_ids, clock=clock)
        self.webhooks = WebhookDispatcher()
        self.state.webhook_sink = self.webhooks.enqueue
        self.faults = FaultInjector(seed=fault_seed)
        self._standing_faults = faults
        for fault in faults:
            self.faults.add(fault)
        self._counter_lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.rejected_for_concurrency = 0
        self.request_log: collections.deque[dict[str, Any]] = collections.deque(maxlen=2000)
        self._gate = threading.Event()
        self._gate.set()
        self._interrupt = threading.Event()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._register_routes()
        spec_validator()  # load the spec now (about a second), not during the first request

    # ------------------------------------------------------------------ Python control API
    def reset(self, *, seed_demo: bool = False) -> None:
        """Back to empty (the configured audiences only), faults and holds cleared, deliveries forgotten."""
        self.cut_short_waits()
        self.faults.clear()
        for fault in self._standing_faults:
            self.faults.add(Fault(**{k: v for k, v in vars(fault).items() if k != "id"}))
        self.webhooks.drain(timeout=5)
        self.webhooks.reset()
        self.state.reset()
        with self._counter_lock:
            self.max_in_flight = self.in_flight
            self.rejected_for_concurrency = 0
            self.request_log.clear()
        if seed_demo:
            from .demo import seed_demo as seed

            seed(self)

    def cut_short_waits(self) -> None:
        """End injected latencies and holds now (a timed-out client has long gone)."""
        self._interrupt.set()
        self._interrupt = threading.Event()
        self.release()

    def hold(self) -> None:
        """Park /3.0 requests (after they count as in flight) until release(): deterministic concurrency tests."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def add_member(
        self,
        *,
        list_id: str,
        email: str,
        status: str = "subscribed",
        merge_fields: dict[str, Any] | None = None,
        source: str = "admin",
    ) -> dict[str, Any]:
        """Put a member in place directly, any status, as an admin in the web app would."""
        with self.state.lock:
            audience = self.state.audience(list_id)
            member = self.state.find_member(audience, email)
            if member is None or member.status == "archived":
                member = self.state._create_member(
                    audience,
                    email=email,
                    body={"status": status, "merge_fields": merge_fields or {}},
                    source=source,
                    mode="add",
                )
            else:
                if status != member.status:
                    self.state.set_status(audience, member, status=status, source=source, enforce_compliance=False)
                if merge_fields:
                    member.merge_fields.update(merge_fields)
            return self.state.member_json(audience, member)

    def unsubscribe_member(
        self, *, list_id: str, email: str, reason: str = "manual", campaign_id: str = "", source: str = "user"
    ) -> None:
        with self.state.lock:
            audience, member = self.state.member(list_id, email)
            self.state.set_status(
                audience, member, status="unsubscribed", source=source, reason=reason, campaign_id=campaign_id
            )

    def clean_member(self, *, list_id: str, email: str, reason: str = "hard", campaign_id: str = "") -> None:
        """A bounce: Mailchimp cleans the address itself, so the webhook fires whatever the sources."""
        with self.state.lock:
            audience, member = self.state.member(list_id, email)
            self.state.set_status(
                audience, member, status="cleaned", source=None, reason=reason, campaign_id=campaign_id
            )

    def change_member_email(self, *, list_id: str, email: str, new_email: str, source: str = "user") -> None:
        self.state.change_email(list_id=list_id, key=email, new_email=new_email, source=source)

    def update_member_profile(
        self, *, list_id: str, email: str, merge_fields: dict[str, Any], source: str = "user"
    ) -> None:
        with self.state.lock:
            audience, member = self.state.member(list_id, email)
            errors = self.state.merge_field_errors(audience, merge_fields)
            if errors:
                raise invalid(errors, detail="Your merge fields were invalid.")
            self.state._update_member(audience, member, body={"merge_fields": merge_fields}, source=source)

    def forget_member(self, *, list_id: str, email: str) -> None:
        self.state.forget_member(list_id=list_id, key=email)

    def add_journey(
        self, *, list_id: str, name: str, steps: dict[int, str], journey_id: int | None = None
    ) -> dict[str, Any]:
        journey = self.state.add_journey(list_id=list_id, name=name, steps=steps, journey_id=journey_id)
        return {
            "id": journey.id,
            "list_id": list_id,
            "name": name,
            "steps": [{"id": k, "name": v} for k, v in steps.items()],
        }

    def add_automation(
        self, *, list_id: str, title: str, emails: dict[str, str], workflow_id: str | None = None
    ) -> dict[str, Any]:
        automation = self.state.add_automation(list_id=list_id, title=title, emails=emails, workflow_id=workflow_id)
        return {"id": automation.id, "list_id": list_id, "title": title, "emails": emails}

    def send_campaign_now(
        self, *, campaign_id: str, send_time: dt.datetime | None = None, source: str = "admin"
    ) -> None:
        """Send (and finish sending) a campaign at once, as an admin would in the web app."""
        with self.state.lock:
            campaign = self.state.campaign(campaign_id)
            if campaign.status in ("save", "paused", "schedule"):
                self.state.send_campaign(campaign_id=campaign_id, source=source)
            self.state.finish_send(campaign, send_time=send_time)

    def add_template(self, *, name: str, html: str, template_id: int | None = None) -> dict[str, Any]:
        """A user template; its `mc:edit="name"` elements are the sections a campaign can fill."""
        template = self.state.add_template(name=name, html=html, template_id=template_id)
        return {"id": template.id, "name": template.name}

    def test_sends(self, *, campaign_id: str) -> list[dict[str, Any]]:
        """The test emails sent for a campaign (`POST /campaigns/{id}/actions/test`), oldest first."""
        with self.state.lock:
            return list(self.state.campaign(campaign_id).test_sends)

    def journey_triggers(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.journey_triggers)

    def members(self, *, list_id: str) -> dict[str, dict[str, Any]]:
        """Members by lower-cased address."""
        with self.state.lock:
            audience = self.state.audience(list_id)
            return {normalize_email(m.email): self.state.member_json(audience, m) for m in audience.members.values()}

    def stats(self) -> dict[str, Any]:
        with self._counter_lock:
            return {
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "rejected_for_concurrency": self.rejected_for_concurrency,
                "max_connections": self.max_connections,
            }

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        try:
            response = self.handle(request)
        except _DropConnection:
            _drop(environ)
            raise ConnectionAbortedError("connection dropped on purpose") from None
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        if request.path.startswith("/_emulator/"):
            try:
                return self._control(request)
            except Problem as problem:
                return _problem_response(problem)
            except (ValueError, KeyError, TypeError) as exc:
                return _problem_response(bad_request(f"Bad control request: {exc}", title="Bad Request"))
        if request.path != "/3.0" and not request.path.startswith("/3.0/"):
            return _problem_response(not_found())
        with self._in_flight_slot() as admitted:
            if not admitted:
                return Response(b"", status=429)  # under load Mailchimp answers without a body
            return self._api(request)

    @contextmanager
    def _in_flight_slot(self) -> Iterator[bool]:
        with self._counter_lock:
            if self.in_flight >= self.max_connections:
                self.rejected_for_concurrency += 1
                admitted = False
            else:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                admitted = True
        try:
            yield admitted
        finally:
            if admitted:
                with self._counter_lock:
                    self.in_flight -= 1

    def _api(self, request: Request) -> Response:
        api_path = request.path[len("/3.0") :] or "/"
        if not self._gate.is_set():
            self._gate.wait(timeout=30)
        hit = self.faults.match(method=request.method, path=api_path)
        if hit.latency:
            self._interrupt.wait(hit.latency)
        if hit.fault is not None:
            if hit.fault.drop:
                raise _DropConnection
            response = _fault_response(hit.fault)
            self._log(request.method, request.path, response.status_code)
            return response
        if not self._authorized(request.headers.get("Authorization", "")):
            response = _problem_response(
                Problem(
                    401,
                    "API Key Invalid",
                    "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
                )
            )
            self._log(request.method, request.path, 401)
            return response
        status, body = self.dispatch(
            method=request.method,
            path=request.path,
            query=request.args,
            raw_body=request.get_data(),
            base_url=request.host_url.rstrip("/"),
        )
        self._log(request.method, request.path, status)
        return _json_response(status, body)

    def dispatch(
        self,
        *,
        method: str,
        path: str,
        query: MultiDict,
        raw_body: bytes,
        base_url: str,
        source: str = "api",
        validated: bool = False,
    ) -> tuple[int, Any]:
        """Validate and run one API call (`path` with /3.0). Also runs each operation of a batch, which
        was validated (`validated`) when the batch was submitted."""
        try:
            violation = None
            if not validated:
                violation = validate_request(
                    method=method, path=path, query=list(query.items(multi=True)), body=raw_body
                )
            if violation is not None:
                if violation.kind == "path":
                    raise not_found()
                if violation.kind == "method":
                    raise Problem(405, "Method Not Allowed", f"The requested method {method} is not allowed here.")
                raise invalid([{"field": e.field, "message": e.message} for e in violation.errors])
            api_path = path[len("/3.0") :] or "/"
            for route_method, pattern, handler in self._routes:
                match = pattern.fullmatch(api_path)
                if match and route_method == method:
                    body = _json_body(raw_body) if method in ("POST", "PUT", "PATCH") else None
                    request = ApiRequest(method, api_path, match.groupdict(), query, body, base_url, source)
                    return handler(request)
            raise Problem(501, "Not Implemented", f"The emulator does not implement {method} {path}.")
        except Problem as problem:
            return problem.status, problem.as_json()
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Input the spec lets through but a handler can't use (e.g. an unparsable date).
            problem = bad_request(f"The emulator could not use this request: {exc.__class__.__name__}: {exc}")
            return problem.status, problem.as_json()

    def _authorized(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                _, _, key = base64.b64decode(credentials).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return hmac.compare_digest(key.encode(), self.api_key.encode())
        if scheme.lower() == "bearer":
            tokens = (self.api_key, *self.access_tokens)
            return any(hmac.compare_digest(credentials.encode(), token.encode()) for token in tokens)
        return False

    def _log(self, method: str, path: str, status: int) -> None:
        with self._counter_lock:
            self.request_log.append({"method": method, "path": path, "status": status})

    # ------------------------------------------------------------------ API routes
    def _register_routes(self) -> None:
        seg = r"(?P<{}>[^/]+)"
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/ping", lambda r: (200, {"health_status": HEALTH})),
            ("GET", "/lists/{list_id}", self._get_list),
            ("POST", "/lists/{list_id}", self._batch_subscribe),
            ("GET", "/lists/{list_id}/members", self._list_members),
            ("POST", "/lists/{list_id}/members", self._add_member),
            ("GET", "/lists/{list_id}/members/{key}", self._get_member),
            ("PUT", "/lists/{list_id}/members/{key}", self._put_member),
            ("PATCH", "/lists/{list_id}/members/{key}", self._patch_member),
            ("DELETE", "/lists/{list_id}/members/{key}", self._archive_member),
            ("POST", "/lists/{list_id}/members/{key}/actions/delete-permanent", self._forget_member),
            ("GET", "/lists/{list_id}/members/{key}/tags", self._get_tags),
            ("POST", "/lists/{list_id}/members/{key}/tags", self._post_tags),
            ("GET", "/lists/{list_id}/members/{key}/events", self._get_events),
            ("POST", "/lists/{list_id}/members/{key}/events", self._post_event),
            ("GET", "/lists/{list_id}/members/{key}/activity-feed", self._activity_feed),
            ("GET", "/lists/{list_id}/merge-fields", self._get_merge_fields),
            ("POST", "/lists/{list_id}/merge-fields", self._post_merge_field),
            ("GET", "/lists/{list_id}/segments", self._list_segments),
            ("POST", "/lists/{list_id}/segments", self._create_segment),
            ("GET", "/lists/{list_id}/segments/{segment_id}", self._get_segment),
            ("POST", "/lists/{list_id}/segments/{segment_id}", self._change_segment),
            ("DELETE", "/lists/{list_id}/segments/{segment_id}", self._delete_segment),
            ("GET", "/lists/{list_id}/segments/{segment_id}/members", self._segment_members),
            ("GET", "/lists/{list_id}/webhooks", self._list_webhooks),
            ("POST", "/lists/{list_id}/webhooks", self._create_webhook),
            ("GET", "/lists/{list_id}/webhooks/{webhook_id}", self._get_webhook),
            ("DELETE", "/lists/{list_id}/webhooks/{webhook_id}", self._delete_webhook),
            ("POST", "/batches", self._start_batch),
            ("GET", "/batches", self._list_batches),
            ("GET", "/batches/{batch_id}", self._get_batch),
            ("POST", "/customer-journeys/journeys/{journey_id}/steps/{step_id}/actions/trigger", self._trigger),
            ("POST", "/automations/{workflow_id}/emails/{email_id}/queue", self._queue_automation),
            ("GET", "/automations/{workflow_id}/emails/{email_id}/queue", self._get_automation_queue),
            ("POST", "/campaigns", self._create_campaign),
            ("GET", "/campaigns", self._list_campaigns),
            ("GET", "/campaigns/{campaign_id}", self._get_campaign),
            ("PATCH", "/campaigns/{campaign_id}", self._patch_campaign),
            ("GET", "/campaigns/{campaign_id}/content", self._get_content),
            ("PUT", "/campaigns/{campaign_id}/content", self._put_content),
            ("GET", "/campaigns/{campaign_id}/send-checklist", self._checklist),
            ("POST", "/campaigns/{campaign_id}/actions/send", self._send),
            ("POST", "/campaigns/{campaign_id}/actions/schedule", self._schedule),
            ("POST", "/campaigns/{campaign_id}/actions/unschedule", self._unschedule),
            ("POST", "/campaigns/{campaign_id}/actions/test", self._send_test),
            ("GET", "/reports/{campaign_id}", self._report),
            ("GET", "/reports/{campaign_id}/email-activity", self._email_activity),
            ("GET", "/reports/{campaign_id}/click-details", self._click_details),
            ("GET", "/reports/{campaign_id}/unsubscribed", self._unsubscribed),
        ]
        for method, template, handler in routes:
            pattern = re.sub(r"\{(\w+)\}", lambda m: seg.format(m.group(1)), template)
            self._routes.append((method, re.compile(pattern), handler))

    # members
    def _get_list(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            return 200, self.state.audience_json(self.state.audience(r.params["list_id"]))

    def _batch_subscribe(self, r: ApiRequest) -> tuple[int, Any]:
        return 200, self.state.batch_subscribe(list_id=r.params["list_id"], body=r.body or {}, source=r.source)

    def _list_members(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            audience = self.state.audience(r.params["list_id"])
            members = list(audience.members.values())
            if r.query.get("status"):
                members = [m for m in members if m.status == r.query["status"]]
            page, total = _page(members, r.query)
            return 200, {
                "members": [self.state.member_json(audience, m) for m in page],
                "list_id": audience.id,
                "total_items": total,
            }

    def _upsert(self, r: ApiRequest, mode: str) -> tuple[int, Any]:
        body = dict(r.body or {})
        body["_skip_merge_validation"] = r.query.get("skip_merge_validation", "").lower() == "true"
        with self.state.lock:
            member, _ = self.state.upsert_member(
                list_id=r.params["list_id"], key=r.params.get("key"), body=body, source=r.source, mode=mode
            )
            return 200, self.state.member_json(self.state.audience(r.params["list_id"]), member)

    def _add_member(self, r: ApiRequest) -> tuple[int, Any]:
        return self._upsert(r, "add")

    def _put_member(self, r: ApiRequest) -> tuple[int, Any]:
        return self._upsert(r, "put")

    def _patch_member(self, r: ApiRequest) -> tuple[int, Any]:
        return self._upsert(r, "patch")

    def _get_member(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            audience, member = self.state.member(r.params["list_id"], r.params["key"])
            return 200, self.state.member_json(audience, member)

    def _archive_member(self, r: ApiRequest) -> tuple[int, Any]:
        self.state.archive_member(list_id=r.params["list_id"], key=r.params["key"])
        return 204, None

    def _forget_member(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            self.state.member(r.params["list_id"], r.params["key"])
            self.state.forget_member(list_id=r.params["list_id"], key=r.params["key"])
        return 204, None

    def _get_tags(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            _, member = self.state.member(r.params["list_id"], r.params["key"])
            tags = [{"id": self.state.tag_ids.get(name, 0), "name": name, "date_added": ""} for name in member.tags]
            return 200, {"tags": tags, "total_items": len(tags)}

    def _post_tags(self, r: ApiRequest) -> tuple[int, Any]:
        self.state.update_tags(list_id=r.params["list_id"], key=r.params["key"], body=r.body or {})
        return 204, None

    def _get_events(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            _, member = self.state.member(r.params["list_id"], r.params["key"])
            page, total = _page(member.events, r.query)
            return 200, {"events": page, "total_items": total}

    def _post_event(self, r: ApiRequest) -> tuple[int, Any]:
        self.state.add_event(list_id=r.params["list_id"], key=r.params["key"], body=r.body or {})
        return 204, None

    def _activity_feed(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            _, member = self.state.member(r.params["list_id"], r.params["key"])
            activity: list[dict[str, Any]] = []
            for campaign in self.state.campaigns.values():
                report = campaign.report
                if campaign.list_id != r.params["list_id"] or report is None or member.email not in report.recipients:
                    continue
                title = campaign.settings.get("title") or campaign.settings.get("subject_line", "")
                activity.append(
                    {
                        "activity_type": "sent",
                        "created_at_timestamp": iso(report.send_time),
                        "campaign_id": campaign.id,
                        "campaign_title": title,
                    }
                )
                for event in report.activity.get(member.email, []):
                    activity.append(
                        {
                            "activity_type": event["action"],
                            "created_at_timestamp": event["timestamp"],
                            "campaign_id": campaign.id,
                            "campaign_title": title,
                            "link_clicked": event.get("url", ""),
                        }
                    )
            for event in member.events:
                activity.append(
                    {
                        "activity_type": "event",
                        "created_at_timestamp": event["occurred_at"],
                        "event_name": event["name"],
                        "event_properties": event["properties"],
                    }
                )
            activity.sort(key=lambda item: item["created_at_timestamp"], reverse=True)
            page, total = _page(activity, r.query)
            return 200, {
                "email_id": member.hash,
                "list_id": r.params["list_id"],
                "activity": page,
                "total_items": total,
            }

    # merge fields
    def _get_merge_fields(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            audience = self.state.audience(r.params["list_id"])
            page, total = _page(list(audience.merge_fields.values()), r.query)
            return 200, {
                "merge_fields": [f.as_json(audience.id) for f in page],
                "list_id": audience.id,
                "total_items": total,
            }

    def _post_merge_field(self, r: ApiRequest) -> tuple[int, Any]:
        merge_field = self.state.add_merge_field(list_id=r.params["list_id"], body=r.body or {})
        return 200, merge_field.as_json(r.params["list_id"])

    # segments
    def _list_segments(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            audience = self.state.audience(r.params["list_id"])
            page, total = _page(list(audience.segments.values()), r.query)
            return 200, {
                "segments": [self.state.segment_json(audience, s) for s in page],
                "list_id": audience.id,
                "total_items": total,
            }

    def _create_segment(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            segment = self.state.create_segment(list_id=r.params["list_id"], body=r.body or {})
            return 200, self.state.segment_json(self.state.audience(r.params["list_id"]), segment)

    def _get_segment(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            audience, segment = self.state.segment(r.params["list_id"], r.params["segment_id"])
            return 200, self.state.segment_json(audience, segment)

    def _change_segment(self, r: ApiRequest) -> tuple[int, Any]:
        return 200, self.state.change_segment_members(
            list_id=r.params["list_id"], segment_id=r.params["segment_id"], body=r.body or {}
        )

    def _delete_segment(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            audience, segment = self.state.segment(r.params["list_id"], r.params["segment_id"])
            del audience.segments[segment.id]
        return 204, None

    def _segment_members(self, r: ApiRequest) -> tuple[int, Any]:
        statuses = {"subscribed"}
        for status, flag in (
            ("unsubscribed", "include_unsubscribed"),
            ("cleaned", "include_cleaned"),
            ("transactional", "include_transactional"),
        ):
            if r.query.get(flag, "").lower() == "true":
                statuses.add(status)
        with self.state.lock:
            audience, segment = self.state.segment(r.params["list_id"], r.params["segment_id"])
            members = sorted(
                (audience.members[h] for h in segment.member_hashes if h in audience.members),
                key=lambda m: m.email,
            )
            members = [m for m in members if m.status in statuses]
            page, total = _page(members, r.query)
            return 200, {"members": [self.state.member_json(audience, m) for m in page], "total_items": total}

    # list webhooks
    def _list_webhooks(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            audience = self.state.audience(r.params["list_id"])
            hooks = [w.as_json(audience.id) for w in audience.webhooks.values()]
            return 200, {"webhooks": hooks, "list_id": audience.id, "total_items": len(hooks)}

    def _create_webhook(self, r: ApiRequest) -> tuple[int, Any]:
        body = r.body or {}
        url = str(body.get("url") or "")
        with self.state.lock:
            self.state.audience(r.params["list_id"])
            if url in self.state.webhook_urls_in_use(r.params["list_id"]):
                raise bad_request("Sorry, you can't use the same webhook URL twice.")
        if not re.match(r"^https?://\S+$", url):
            raise invalid([{"field": "url", "message": "Please enter a valid URL."}])
        # Outside the lock: our receiver may call the API while answering.
        reachable, outcome = self.webhooks.verify(url)
        if not reachable:
            raise invalid(
                [
                    {
                        "field": "url",
                        "message": f"We couldn't verify the URL is working ({outcome}). "
                        "Please double-check and try again.",
                    }
                ]
            )
        webhook = self.state.add_webhook(
            list_id=r.params["list_id"], url=url, events=body.get("events") or {}, sources=body.get("sources") or {}
        )
        return 200, webhook.as_json(r.params["list_id"])

    def _get_webhook(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            webhook = self.state.audience(r.params["list_id"]).webhooks.get(r.params["webhook_id"])
            if webhook is None:
                raise not_found("webhook")
            return 200, webhook.as_json(r.params["list_id"])

    def _delete_webhook(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            if self.state.audience(r.params["list_id"]).webhooks.pop(r.params["webhook_id"], None) is None:
                raise not_found("webhook")
        return 204, None

    # batches
    def _start_batch(self, r: ApiRequest) -> tuple[int, Any]:
        operations = (r.body or {}).get("operations") or []
        batch = self.state.add_batch(operations=operations, base_url=r.base_url)
        with self.state.lock:
            return 200, self.state.batch_json(batch)

    def _list_batches(self, r: ApiRequest) -> tuple[int, Any]:
        """Listing polls every unfinished batch once, as reading each would."""
        with self.state.lock:
            unfinished = [b for b in self.state.batches.values() if b.status in ("pending", "started")]
        for batch in unfinished:
            self._advance_batch(batch, base_url=r.base_url)
        with self.state.lock:
            page, total = _page(list(self.state.batches.values()), r.query)
            return 200, {"batches": [self.state.batch_json(b) for b in page], "total_items": total}

    def _get_batch(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            batch = self.state.batches.get(r.params["batch_id"])
            if batch is None:
                raise not_found("batch")
        self._advance_batch(batch, base_url=r.base_url)
        with self.state.lock:
            return 200, self.state.batch_json(batch)

    def _advance_batch(self, batch: Any, *, base_url: str) -> None:
        """Each poll moves the batch one step: pending -> started (operations run) -> finished (archive ready)."""
        with self.state.lock:
            step = batch.status
            if step == "pending":
                batch.status = "preprocessing"  # a concurrent poll must not run the operations again
        if step == "pending":
            results = [self._run_operation(operation, base_url=base_url) for operation in batch.operations]
            with self.state.lock:
                batch.results, batch.status = results, "started"
        elif step == "started":
            with self.state.lock:
                batch.archive = _results_archive(batch.id, batch.results)
                batch.status, batch.completed = "finished", self.state.now()

    def _run_operation(self, operation: dict[str, Any], *, base_url: str) -> dict[str, Any]:
        params = operation.get("params") or {}
        query = MultiDict([(k, _query_text(v)) for k, v in params.items()])
        raw = operation.get("body")
        status, body = self.dispatch(
            method=str(operation.get("method", "GET")).upper(),
            path="/3.0" + str(operation.get("path", "")),
            query=query,
            raw_body=(raw if isinstance(raw, str) else json.dumps(raw) if raw is not None else "").encode(),
            base_url=base_url,
            validated=True,
        )
        return {
            "status_code": status,
            "operation_id": operation.get("operation_id") or "",
            "response": json.dumps(body) if body is not None else "",
        }

    # journeys and automations
    def _trigger(self, r: ApiRequest) -> tuple[int, Any]:
        self.state.trigger_journey(
            journey_id=int(r.params["journey_id"]),
            step_id=int(r.params["step_id"]),
            email=str((r.body or {}).get("email_address") or ""),
        )
        return 204, None

    def _queue_automation(self, r: ApiRequest) -> tuple[int, Any]:
        entry = self.state.queue_automation(
            workflow_id=r.params["workflow_id"],
            email_id=r.params["email_id"],
            email=str((r.body or {}).get("email_address") or ""),
        )
        return 200, entry

    def _get_automation_queue(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            automation = self.state.automations.get(r.params["workflow_id"])
            if automation is None or r.params["email_id"] not in automation.emails:
                raise not_found("automation email")
            queue = [q for q in automation.queue if q["email_id"] == r.params["email_id"]]
            return 200, {
                "workflow_id": automation.id,
                "email_id": r.params["email_id"],
                "queue": queue,
                "total_items": len(queue),
            }

    # campaigns
    def _create_campaign(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            return 200, self.state.campaign_json(self.state.create_campaign(body=r.body or {}))

    def _list_campaigns(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            campaigns = [self.state.campaign(c) for c in list(self.state.campaigns)]
            if r.query.get("status"):
                campaigns = [c for c in campaigns if c.status == r.query["status"]]
            if r.query.get("list_id"):
                campaigns = [c for c in campaigns if c.list_id == r.query["list_id"]]
            for key, keep in (("since_send_time", lambda sent, bound: sent >= bound),
                              ("before_send_time", lambda sent, bound: sent < bound)):
                if r.query.get(key):
                    bound = dt.datetime.fromisoformat(r.query[key].replace("Z", "+00:00"))
                    bound = bound if bound.tzinfo else bound.replace(tzinfo=dt.UTC)
                    campaigns = [c for c in campaigns if c.send_time is not None and keep(c.send_time, bound)]
            sort_field = r.query.get("sort_field")
            if sort_field in ("send_time", "create_time"):
                oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
                campaigns.sort(
                    key=lambda c: (c.send_time or oldest) if sort_field == "send_time" else c.created,
                    reverse=str(r.query.get("sort_dir") or "").upper() == "DESC",
                )
            page, total = _page(campaigns, r.query)
            return 200, {"campaigns": [self.state.campaign_json(c) for c in page], "total_items": total}

    def _get_campaign(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            return 200, self.state.campaign_json(self.state.campaign(r.params["campaign_id"]))

    def _patch_campaign(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            campaign = self.state.campaign(r.params["campaign_id"])
            if campaign.status != "save":
                raise bad_request("Only campaigns that haven't been sent or scheduled can be changed.")
            changes = (r.body or {}).get("settings") or {}
            errors = self.state.campaign_settings_errors(changes)
            if errors:
                raise invalid(errors)
            campaign.settings.update(changes)
            return 200, self.state.campaign_json(campaign)

    def _get_content(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            campaign = self.state.campaign(r.params["campaign_id"])
            return 200, {"html": campaign.html, "plain_text": campaign.plain_text, "archive_html": campaign.html}

    def _put_content(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            campaign = self.state.set_campaign_content(campaign_id=r.params["campaign_id"], body=r.body or {})
            campaign.plain_text = campaign.plain_text or _plain_text(campaign.html)
            return 200, {"html": campaign.html, "plain_text": campaign.plain_text, "archive_html": campaign.html}

    def _checklist(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            return 200, self.state.checklist(self.state.campaign(r.params["campaign_id"]))

    def _send(self, r: ApiRequest) -> tuple[int, Any]:
        self.state.send_campaign(campaign_id=r.params["campaign_id"], source=r.source)
        return 204, None

    def _schedule(self, r: ApiRequest) -> tuple[int, Any]:
        self.state.schedule_campaign(
            campaign_id=r.params["campaign_id"], schedule_time=str((r.body or {}).get("schedule_time") or "")
        )
        return 204, None

    def _send_test(self, r: ApiRequest) -> tuple[int, Any]:
        self.state.send_test(campaign_id=r.params["campaign_id"], body=r.body or {})
        return 204, None

    def _unschedule(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            campaign = self.state.campaign(r.params["campaign_id"])
            if campaign.status != "schedule":
                raise bad_request("This campaign is not scheduled.")
            campaign.status, campaign.schedule_time = "save", None
        return 204, None

    # reports
    def _sent_report(self, campaign_id: str) -> Any:
        campaign = self.state.campaign(campaign_id)
        if campaign.report is None:
            raise not_found("campaign report")
        return campaign, campaign.report

    def _report(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            campaign, report = self._sent_report(r.params["campaign_id"])
            audience = self.state.audiences.get(campaign.list_id)
            return 200, report.summary(
                list_name=audience.name if audience else "",
                list_id=campaign.list_id,
                subject=campaign.settings.get("subject_line", ""),
                title=campaign.settings.get("title", ""),
            )

    def _email_activity(self, r: ApiRequest) -> tuple[int, Any]:
        since = r.query.get("since")
        since_time = dt.datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
        if since_time is not None and since_time.tzinfo is None:
            since_time = since_time.replace(tzinfo=dt.UTC)
        with self.state.lock:
            campaign, report = self._sent_report(r.params["campaign_id"])
            rows = report.email_activity(list_id=campaign.list_id, since=since_time)
            page, total = _page(rows, r.query)
            return 200, {"emails": page, "campaign_id": campaign.id, "total_items": total}

    def _click_details(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            campaign, report = self._sent_report(r.params["campaign_id"])
            page, total = _page(report.click_details(), r.query)
            return 200, {"urls_clicked": page, "campaign_id": campaign.id, "total_items": total}

    def _unsubscribed(self, r: ApiRequest) -> tuple[int, Any]:
        with self.state.lock:
            campaign, report = self._sent_report(r.params["campaign_id"])
            rows = [
                {
                    "email_id": short_id(email),
                    "email_address": email,
                    "timestamp": iso(when),
                    "reason": "",
                    "campaign_id": campaign.id,
                    "list_id": campaign.list_id,
                }
                for email, when in report.unsubscribes
            ]
            page, total = _page(rows, r.query)
            return 200, {"unsubscribes": page, "campaign_id": campaign.id, "total_items": total}

    # ------------------------------------------------------------------ control API
    def _control(self, request: Request) -> Response:
        path, method = request.path[len("/_emulator") :], request.method
        body = request.get_json(silent=True) or {}
        batch_match = re.fullmatch(r"/batch-results/([^/]+)\.tar\.gz", path)
        if batch_match and method == "GET":
            # Stands in for Mailchimp's pre-signed storage URL: no credentials needed.
            with self.state.lock:
                batch = self.state.batches.get(batch_match.group(1))
                if batch is None or batch.status != "finished":
                    raise not_found("batch results")
                return Response(batch.archive, status=200, content_type="application/x-gzip")
        member_match = re.fullmatch(r"/lists/([^/]+)/members/([^/]+)/([a-z-]+)", path)
        if member_match and method == "POST":
            list_id, email, action = member_match.groups()
            source = body.get("source", "user")
            if action == "unsubscribe":
                self.unsubscribe_member(
                    list_id=list_id,
                    email=email,
                    reason=body.get("reason", "manual"),
                    campaign_id=body.get("campaign_id", ""),
                    source=source,
                )
            elif action == "clean":
                self.clean_member(
                    list_id=list_id,
                    email=email,
                    reason=body.get("reason", "hard"),
                    campaign_id=body.get("campaign_id", ""),
                )
            elif action == "change-email":
                self.change_member_email(list_id=list_id, email=email, new_email=body["new_email"], source=source)
            elif action == "profile":
                self.update_member_profile(
                    list_id=list_id, email=email, merge_fields=body["merge_fields"], source=source
                )
            elif action == "forget":
                self.forget_member(list_id=list_id, email=email)
            else:
                raise not_found("control action")
            return _json_response(200, {"ok": True})
        members_match = re.fullmatch(r"/lists/([^/]+)/members", path)
        if members_match:
            if method == "POST":
                return _json_response(
                    200,
                    self.add_member(
                        list_id=members_match.group(1),
                        email=body["email"],
                        status=body.get("status", "subscribed"),
                        merge_fields=body.get("merge_fields"),
                        source=body.get("source", "admin"),
                    ),
                )
            return _json_response(200, list(self.members(list_id=members_match.group(1)).values()))
        send_match = re.fullmatch(r"/campaigns/([^/]+)/send", path)
        if send_match and method == "POST":
            send_time = dt.datetime.fromisoformat(body["send_time"]) if body.get("send_time") else None
            self.send_campaign_now(
                campaign_id=send_match.group(1), send_time=send_time, source=body.get("source", "admin")
            )
            with self.state.lock:
                return _json_response(200, self.state.campaign_json(self.state.campaign(send_match.group(1))))
        simple: dict[tuple[str, str], Callable[[], Any]] = {
            ("POST", "/reset"): lambda: self.reset(seed_demo=bool(body.get("seed_demo"))) or {"ok": True},
            ("POST", "/seed-demo"): lambda: self._seed_demo(),
            ("GET", "/state"): lambda: {
                **self.state.snapshot(),
                "webhook_deliveries": self.webhooks.snapshot(),
                "stats": self.stats(),
                "faults": self.faults.describe(),
            },
            ("POST", "/lists"): lambda: self.state.audience_json(
                self.state.create_audience(list_id=body["id"], name=body.get("name", body["id"]))
            ),
            ("POST", "/journeys"): lambda: self.add_journey(
                list_id=body["list_id"],
                name=body.get("name", "Journey"),
                steps={int(k): v for k, v in (body.get("steps") or {}).items()},
                journey_id=body.get("id"),
            ),
            ("GET", "/journey-triggers"): self.journey_triggers,
            ("POST", "/templates"): lambda: self.add_template(
                name=body.get("name", "Template"), html=body["html"], template_id=body.get("id")
            ),
            ("POST", "/automations"): lambda: self.add_automation(
                list_id=body["list_id"],
                title=body.get("title", "Automation"),
                emails=body.get("emails") or {},
                workflow_id=body.get("id"),
            ),
            ("GET", "/webhook-deliveries"): lambda: (self.webhooks.drain(timeout=10), self.webhooks.snapshot())[1],
            ("POST", "/webhook-deliveries/flush"): lambda: {"drained": self.webhooks.drain(timeout=10)},
            ("GET", "/faults"): self.faults.describe,
            ("POST", "/faults"): lambda: [
                vars(self.faults.add(Fault.from_json(item))) for item in (body if isinstance(body, list) else [body])
            ],
            ("DELETE", "/faults"): lambda: self.faults.clear() or {"ok": True},
            ("POST", "/hold"): lambda: self.hold() or {"ok": True},
            ("POST", "/release"): lambda: self.release() or {"ok": True},
            ("GET", "/stats"): self.stats,
            ("GET", "/requests"): lambda: list(self.request_log),
        }
        action = simple.get((method, path))
        if action is None:
            raise not_found("control endpoint")
        return _json_response(200, action())

    def _seed_demo(self) -> dict[str, Any]:
        from .demo import seed_demo

        return seed_demo(self)


class _DropConnection(Exception):
    pass


def _drop(environ: dict[str, Any]) -> None:
    """Close the connection without a byte of answer: the client sees the remote end disconnect."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _fault_response(fault: Fault) -> Response:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    status = int(fault.status or 500)
    if fault.answers_empty:
        return Response(b"", status=status, headers=headers)
    titles = {
        429: "Too Many Requests",
        500: "Internal Server Error",
        502: "Bad Gateway",
        503: "Service Unavailable",
        403: "Forbidden",
    }
    problem = Problem(status, titles.get(status, "Error"), "Injected by the emulator.")
    response = _problem_response(problem)
    response.headers.extend(headers)
    return response


def _problem_response(problem: Problem) -> Response:
    return Response(
        json.dumps(problem.as_json()),
        status=problem.status,
        content_type="application/problem+json; charset=utf-8",
        headers={"X-Request-Id": problem.instance},
    )


def _json_response(status: int, body: Any) -> Response:
    if status == 204 or body is None:
        return Response(b"", status=status)
    if status >= 400 and isinstance(body, dict) and "title" in body:
        return Response(json.dumps(body), status=status, content_type="application/problem+json; charset=utf-8")
    return Response(json.dumps(body), status=status, content_type="application/json; charset=utf-8")


def _json_body(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)  # the SDK's bodiless POSTs send `null`, which loads as None
    except ValueError as exc:
        raise Problem(400, "JSON Parse Error", f"We encountered an unspecified JSON parsing error: {exc}") from exc


def _page(items: list[Any], query: MultiDict) -> tuple[list[Any], int]:
    count = min(int(query.get("count") or 10), 1000)
    offset = int(query.get("offset") or 0)
    return items[offset : offset + count], len(items)


def _query_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _plain_text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def _results_archive(batch_id: str, results: list[dict[str, Any]]) -> bytes:
    """A gzipped tar of JSON files of up to 100 results each, like Mailchimp's batch output."""
    buffer = io.BytesIO()
    # gzip's own default level: level 9 (tarfile's default) takes three times as long for a few % smaller archives.
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        directory = tarfile.TarInfo(batch_id)
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for index in range(0, max(len(results), 1), 100):
            data = json.dumps(results[index : index + 100]).encode()
            info = tarfile.TarInfo(f"{batch_id}/{short_id(f'{batch_id}:{index}')}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
