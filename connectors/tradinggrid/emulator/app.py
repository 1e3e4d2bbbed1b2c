"""The emulator's HTTP face: the contract's paths (checked like the real host: OAuth2, paging, errors, faults)
and a control API under `/_emulator/` (no auth, no faults) that tests and the demo use to act as Trading Grid."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import socket
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import lens
from .state import MAX_PAGE_SIZE, EmulatorError, EmulatorState, FaultRule, parse_moment, validation_error

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024
DIRECTORY = "/TGCommunityServices/v1/companies/<company_id>"
COMMUNITY = "/community/v1"
CONTROL = "/_emulator"

URLS = Map(
    [
        # OAuth2 and the Community Management API [doc]
        Rule("/v1/oauth2/tokens", methods=["POST"], endpoint="token"),
        Rule(DIRECTORY, methods=["GET"], endpoint="company"),
        Rule(f"{DIRECTORY}/partnerDirectory", methods=["GET"], endpoint="directory"),
        Rule(f"{DIRECTORY}/users", methods=["GET", "POST"], endpoint="users"),
        Rule(f"{DIRECTORY}/users/<user_id>", methods=["GET", "PUT", "DELETE"], endpoint="user"),
        # Lens [doc]
        Rule("/visibility_transaction_search", methods=["POST"], endpoint="lens"),
        # Community API [ours]
        Rule(f"{COMMUNITY}/partners/<company_id>/profile", methods=["GET", "PATCH"], endpoint="profile"),
        Rule(f"{COMMUNITY}/issues", methods=["GET"], endpoint="issues"),
        Rule(f"{COMMUNITY}/issues/<issue_id>", methods=["GET", "PATCH"], endpoint="issue"),
        Rule(f"{COMMUNITY}/issues/<issue_id>/comments", methods=["GET", "POST"], endpoint="comments"),
        Rule(f"{COMMUNITY}/posts", methods=["POST"], endpoint="posts"),
        Rule(f"{COMMUNITY}/posts/<post_id>", methods=["GET", "PATCH"], endpoint="post"),
        Rule(f"{COMMUNITY}/documents", methods=["POST"], endpoint="documents"),
        Rule(f"{COMMUNITY}/documents/<document_id>", methods=["GET"], endpoint="document"),
        Rule(f"{COMMUNITY}/documents/<document_id>/versions", methods=["POST"], endpoint="document_versions"),
        Rule(f"{COMMUNITY}/documents/<document_id>/acknowledgements", methods=["GET"], endpoint="acknowledgements"),
        Rule(f"{COMMUNITY}/events", methods=["POST"], endpoint="events"),
        Rule(f"{COMMUNITY}/events/<event_id>", methods=["PATCH"], endpoint="event"),
        Rule(f"{COMMUNITY}/events/<event_id>/<any(registrations, attendance, questions):kind>", methods=["GET"],
             endpoint="event_records"),
        Rule(f"{COMMUNITY}/webhook-subscriptions", methods=["GET", "POST"], endpoint="subscriptions"),
        Rule(f"{COMMUNITY}/webhook-subscriptions/<subscription_id>", methods=["DELETE"], endpoint="subscription"),
        # Control API (outside the contract)
        Rule(f"{CONTROL}/health", methods=["GET"], endpoint="ctl_health"),
        Rule(f"{CONTROL}/reset", methods=["POST"], endpoint="ctl_reset"),
        Rule(f"{CONTROL}/seed", methods=["POST"], endpoint="ctl_seed"),
        Rule(f"{CONTROL}/state", methods=["GET"], endpoint="ctl_state"),
        Rule(f"{CONTROL}/requests", methods=["GET"], endpoint="ctl_requests"),
        Rule(f"{CONTROL}/config", methods=["POST"], endpoint="ctl_config"),
        Rule(f"{CONTROL}/faults", methods=["GET", "POST", "DELETE"], endpoint="ctl_faults"),
        Rule(f"{CONTROL}/tokens/expire", methods=["POST"], endpoint="ctl_expire_tokens"),
        Rule(f"{CONTROL}/webhooks/deliveries", methods=["GET"], endpoint="ctl_deliveries"),
        Rule(f"{CONTROL}/webhooks/config", methods=["POST"], endpoint="ctl_webhook_config"),
        Rule(f"{CONTROL}/partners", methods=["POST"], endpoint="ctl_partners"),
        Rule(f"{CONTROL}/partners/<company_id>/status", methods=["POST"], endpoint="ctl_partner_status"),
        Rule(f"{CONTROL}/partners/<company_id>/profile", methods=["PATCH"], endpoint="ctl_partner_profile"),
        Rule(f"{CONTROL}/partners/<company_id>/contacts", methods=["POST"], endpoint="ctl_contacts"),
        Rule(f"{CONTROL}/partners/<company_id>/contacts/<email>", methods=["PATCH", "DELETE"],
             endpoint="ctl_contact"),
        Rule(f"{CONTROL}/issues", methods=["POST"], endpoint="ctl_issues"),
        Rule(f"{CONTROL}/issues/<issue_id>", methods=["PATCH"], endpoint="ctl_issue"),
        Rule(f"{CONTROL}/issues/<issue_id>/status", methods=["POST"], endpoint="ctl_issue_status"),
        Rule(f"{CONTROL}/documents/<document_id>/acknowledgements", methods=["POST"], endpoint="ctl_acknowledge"),
        Rule(f"{CONTROL}/events/<event_id>/registrations", methods=["POST"], endpoint="ctl_register"),
        Rule(f"{CONTROL}/events/<event_id>/attendance", methods=["POST"], endpoint="ctl_attendance"),
        Rule(f"{CONTROL}/events/<event_id>/questions", methods=["POST"], endpoint="ctl_question"),
        Rule(f"{CONTROL}/lens/transactions", methods=["POST"], endpoint="ctl_transactions"),
    ],
    strict_slashes=False,
)


class DropConnection(ConnectionResetError):
    """Raised after the socket is shut: werkzeug's server treats it as a dropped connection and says nothing."""


class EmulatorApp:
    """A WSGI application over one `EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        request = Request(environ)
        response = self.handle(request)
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        adapter = URLS.bind_to_environ(request.environ)
        is_control = request.path.startswith(CONTROL)
        started = time.monotonic()
        try:
            endpoint, args = adapter.match()
        except MethodNotAllowed:
            return _error(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}.")
        except NotFound:
            return _error(404, "not_found", f"No such resource: {request.path}.")
        except HTTPException as exc:  # e.g. a redirect from strict slashes
            return exc.get_response(request.environ)

        if not is_control:
            fault_response = self._apply_faults(request, started)
            if fault_response is not None:
                self._record(request, fault_response.status_code, started, fault=True)
                return fault_response
        try:
            if not is_control and endpoint != "token":
                self._authenticate(request)
            response = getattr(self, f"on_{endpoint}")(request, **args)
        except EmulatorError as exc:
            response = _error(exc.status, exc.code, exc.message, exc.details,
                              headers=_auth_challenge(exc) if exc.status == 401 else None)
        if not is_control:
            self._record(request, response.status_code, started)
        return response

    # --- Cross-cutting --------------------------------------------------------------------------

    def _apply_faults(self, request: Request, started: float) -> Response | None:
        latency, rule = self.state.faults_for(request.method, request.path)
        if latency:
            time.sleep(latency)
        if rule is None:
            return None
        if rule.kind == "drop":
            self._record(request, 0, started, fault=True)
            self._drop(request)
        headers = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = f"{rule.retry_after:g}"
        if not rule.body:
            return Response(b"", status=rule.status, headers=headers)
        code = {429: "rate_limited", 503: "service_unavailable"}.get(rule.status, "internal_error")
        return _error(rule.status, code, "Injected fault.", headers=headers)

    @staticmethod
    def _drop(request: Request) -> None:
        sock = request.environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise DropConnection("Injected dropped connection.")

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else None
        problem = self.state.token_problem(token)
        if problem == "missing":
            raise EmulatorError(401, "unauthorized", "A bearer token is required.")
        if problem == "invalid":
            raise EmulatorError(401, "invalid_token", "The access token is not valid.")
        if problem == "expired":
            raise EmulatorError(401, "invalid_token", "The access token has expired.")

    def _record(self, request: Request, status: int, started: float, *, fault: bool = False) -> None:
        entry = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode("latin-1"),
            "status": status,
            "fault": fault,
            "ms": int((time.monotonic() - started) * 1000),
        }
        self.state.record_request(entry)
        for hook in list(self.state.after_request_hooks):
            hook(entry)

    def _company_guard(self, company_id: str) -> None:
        if company_id.strip().upper() != self.state.company_id:
            raise EmulatorError(403, "forbidden", f"This client may not act for company {company_id}.")

    # --- OAuth2 [doc] ---------------------------------------------------------------------------

    def on_token(self, request: Request) -> Response:
        if request.args.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type",
                          "error_description": "grant_type must be client_credentials."}, 400)
        client_id, client_secret = _basic_credentials(request)
        issued = self.state.issue_token(client_id, client_secret)
        if issued is None:
            return _json({"error": "invalid_client", "error_description": "Client authentication failed."}, 401,
                         headers={"WWW-Authenticate": 'Basic realm="tradinggrid"'})
        return _json(issued, headers={"Cache-Control": "no-store"})

    # --- Community Management [doc] -------------------------------------------------------------

    def on_company(self, request: Request, company_id: str) -> Response:
        self._company_guard(company_id)
        return _json(self.state.company())

    def on_directory(self, request: Request, company_id: str) -> Response:
        self._company_guard(company_id)
        entries = self.state.directory(
            partner_company_id=request.args.get("partnerCompanyId"),
            partner_company_name=request.args.get("partnerCompanyName"),
            trading_address=request.args.get("tradingAddress"),
        )
        return _json({"total": len(entries), "partners": entries})

    def on_users(self, request: Request, company_id: str) -> Response:
        self._company_guard(company_id)
        if request.method == "POST":
            user = self.state.create_user(_body(request))
            return _json({"uniqueId": user["userId"]}, 201)
        return _json(self.state.list_users(login_id=request.args.get("loginId")))

    def on_user(self, request: Request, company_id: str, user_id: str) -> Response:
        self._company_guard(company_id)
        if request.method == "PUT":
            return _json(self.state.update_user(user_id, _body(request)))
        if request.method == "DELETE":
            self.state.delete_user(user_id)
            return Response(status=204)
        return _json(self.state.get_user(user_id))

    # --- Lens [doc] -----------------------------------------------------------------------------

    def on_lens(self, request: Request) -> Response:
        if request.mimetype == "application/graphql":
            query, variables, operation = request.get_data(as_text=True), None, None
        else:
            body = _body(request)
            query, variables, operation = body.get("query"), body.get("variables"), body.get("operationName")
        if not isinstance(query, str) or not query.strip():
            raise EmulatorError(400, "invalid_query", "A GraphQL query is required.")
        if variables is not None and not isinstance(variables, Mapping):
            raise EmulatorError(400, "invalid_query", "variables must be an object.")
        return _json(lens.execute(self.state, query=query, variables=variables, operation_name=operation))

    # --- Community [ours] -----------------------------------------------------------------------

    def on_profile(self, request: Request, company_id: str) -> Response:
        if request.method == "PATCH":
            return _json(self.state.update_profile(company_id, _body(request)))
        return _json(self.state.render_profile(company_id))

    def on_issues(self, request: Request) -> Response:
        issues = self.state.list_issues(
            statuses=_csv_arg(request, "status"),
            categories=_csv_arg(request, "category"),
            partner=request.args.get("partner"),
            updated_since=_since_arg(request),
        )
        return self._page(request, issues)

    def on_issue(self, request: Request, issue_id: str) -> Response:
        if request.method == "PATCH":
            return _json(self.state.update_issue(issue_id, _body(request)))
        return _json(self.state.get_issue(issue_id))

    def on_comments(self, request: Request, issue_id: str) -> Response:
        if request.method == "POST":
            return _json(self.state.add_comment(issue_id, _body(request)), 201)
        return self._page(request, self.state.list_comments(issue_id))

    def on_posts(self, request: Request) -> Response:
        return _json(self.state.create_post(_body(request), base_url=_base(request)), 201)

    def on_post(self, request: Request, post_id: str) -> Response:
        if request.method == "PATCH":
            return _json(self.state.update_post(post_id, _body(request)))
        return _json(self.state.get_post(post_id))

    def on_documents(self, request: Request) -> Response:
        return _json(self.state.create_document(_body(request), base_url=_base(request)), 201)

    def on_document(self, request: Request, document_id: str) -> Response:
        return _json(self.state.render_document(document_id))

    def on_document_versions(self, request: Request, document_id: str) -> Response:
        return _json(self.state.add_document_version(document_id, _body(request)), 201)

    def on_acknowledgements(self, request: Request, document_id: str) -> Response:
        records = self.state.list_acknowledgements(document_id, updated_since=_since_arg(request))
        return self._page(request, records)

    def on_events(self, request: Request) -> Response:
        return _json(self.state.create_event(_body(request), base_url=_base(request)), 201)

    def on_event(self, request: Request, event_id: str) -> Response:
        return _json(self.state.update_event(event_id, _body(request)))

    def on_event_records(self, request: Request, event_id: str, kind: str) -> Response:
        records = self.state.list_event_records(event_id, kind, updated_since=_since_arg(request))
        return self._page(request, records)

    def on_subscriptions(self, request: Request) -> Response:
        if request.method == "POST":
            return _json(self.state.create_subscription(_body(request)), 201)
        with self.state.lock:
            # The secret is shown once, when the subscription is created.
            listed = [{k: v for k, v in s.items() if k != "secret"} for s in self.state.subscriptions.values()]
        return self._page(request, listed)

    def on_subscription(self, request: Request, subscription_id: str) -> Response:
        self.state.delete_subscription(subscription_id)
        return Response(status=204)

    def _page(self, request: Request, items: list[dict[str, Any]]) -> Response:
        offset = _int_arg(request, "offset", 0, minimum=0)
        count = _int_arg(request, "count", 100, minimum=1)
        if count > MAX_PAGE_SIZE:
            raise validation_error("count", f"must be at most {MAX_PAGE_SIZE}")
        count = min(count, self.state.page_size_cap)  # a host may answer fewer than asked
        page = items[offset:offset + count]
        return _json({"total": len(items), "offset": offset, "count": len(page), "items": page})

    # --- Control API ----------------------------------------------------------------------------

    def on_ctl_health(self, request: Request) -> Response:
        return _json({"ok": True, "company_id": self.state.company_id})

    def on_ctl_reset(self, request: Request) -> Response:
        body = _body(request, optional=True)
        self.state.reset()
        if body.get("seed_demo"):
            from .seed import seed_demo

            seed_demo(self.state, count=int(body.get("count", 12)), random_seed=int(body.get("seed", 42)))
        return _json({"ok": True})

    def on_ctl_seed(self, request: Request) -> Response:
        from .seed import seed, seed_demo

        body = _body(request)
        if body.get("demo"):
            created = seed_demo(self.state, count=int(body.get("count", 12)), random_seed=int(body.get("seed", 42)))
        else:
            partners = body.get("partners")
            if not isinstance(partners, list):
                raise validation_error("partners", "must be a list of profile objects")
            created = seed(self.state, partners, random_seed=int(body.get("seed", 0)))
        return _json({"ok": True, "partners": created}, 201)

    def on_ctl_state(self, request: Request) -> Response:
        return _json(self.state.snapshot())

    def on_ctl_requests(self, request: Request) -> Response:
        with self.state.lock:
            return _json({"requests": list(self.state.requests), "token_requests": self.state.token_requests})

    def on_ctl_config(self, request: Request) -> Response:
        body = _body(request)
        with self.state.lock:
            if "page_size_cap" in body:
                self.state.page_size_cap = max(1, int(body["page_size_cap"]))
            if "token_ttl" in body:
                self.state.token_ttl = float(body["token_ttl"])
        return _json({"ok": True})

    def on_ctl_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.state.clear_faults()
            return _json({"ok": True})
        if request.method == "POST":
            body = _body(request)
            rules = body.get("rules", [body]) if isinstance(body, Mapping) else body
            if not isinstance(rules, list):
                raise validation_error("rules", "must be a list")
            added = self.state.add_faults(rules)
            return _json({"added": len(added)}, 201)
        with self.state.lock:
            return _json({"faults": [_fault_dict(r) for r in [*self.state.env_faults, *self.state.faults]]})

    def on_ctl_expire_tokens(self, request: Request) -> Response:
        return _json({"expired": self.state.expire_tokens()})

    def on_ctl_deliveries(self, request: Request) -> Response:
        deliveries = self.state.delivery_list(status=request.args.get("status"), event_type=request.args.get("type"))
        return _json({"deliveries": deliveries})

    def on_ctl_webhook_config(self, request: Request) -> Response:
        body = _body(request)
        with self.state.lock:
            if "delay_scale" in body:
                self.state.webhook_delay_scale = float(body["delay_scale"])
            if "retry_schedule" in body:
                self.state.webhook_retry_schedule = tuple(float(s) for s in body["retry_schedule"])
            if "timeout" in body:
                self.state.webhook_timeout = float(body["timeout"])
        return _json({"ok": True})

    def on_ctl_partners(self, request: Request) -> Response:
        return _json(self.state.create_partner(_body(request), emit=True), 201)

    def on_ctl_partner_status(self, request: Request, company_id: str) -> Response:
        status = _body(request).get("onboarding_status")
        return _json(self.state.set_partner_status(company_id, str(status or ""), emit=True))

    def on_ctl_partner_profile(self, request: Request, company_id: str) -> Response:
        return _json(self.state.update_profile(company_id, _body(request), emit=True))

    def on_ctl_contacts(self, request: Request, company_id: str) -> Response:
        return _json(self.state.add_contact(company_id, _body(request), emit=True), 201)

    def on_ctl_contact(self, request: Request, company_id: str, email: str) -> Response:
        if request.method == "DELETE":
            return _json(self.state.remove_contact(company_id, email, emit=True))
        return _json(self.state.update_contact(company_id, email, _body(request), emit=True))

    def on_ctl_issues(self, request: Request) -> Response:
        return _json(self.state.create_issue(_body(request), emit=True), 201)

    def on_ctl_issue(self, request: Request, issue_id: str) -> Response:
        return _json(self.state.update_issue(issue_id, _body(request), emit=True))

    def on_ctl_issue_status(self, request: Request, issue_id: str) -> Response:
        status = _body(request).get("status")
        return _json(self.state.update_issue(issue_id, {"status": status}, emit=True))

    def on_ctl_acknowledge(self, request: Request, document_id: str) -> Response:
        return _json(self.state.acknowledge_document(document_id, _body(request), emit=True), 201)

    def on_ctl_register(self, request: Request, event_id: str) -> Response:
        return _json(self.state.register_for_event(event_id, _body(request), emit=True), 201)

    def on_ctl_attendance(self, request: Request, event_id: str) -> Response:
        return _json(self.state.record_attendance(event_id, _body(request), emit=True), 201)

    def on_ctl_question(self, request: Request, event_id: str) -> Response:
        return _json(self.state.add_question(event_id, _body(request), emit=True), 201)

    def on_ctl_transactions(self, request: Request) -> Response:
        from .seed import failed_transactions_for

        body = _body(request)
        if "generate" in body:
            spec = body["generate"]
            if not isinstance(spec, Mapping):
                raise validation_error("generate", "must be an object")
            transactions = failed_transactions_for(self.state, **spec)
        else:
            transactions = body.get("transactions")
            if not isinstance(transactions, list):
                raise validation_error("transactions", "must be a list")
        return _json({"transactions": self.state.add_transactions(transactions)}, 201)


# --- Helpers ---------------------------------------------------------------------------------------


def create_app(state: EmulatorState) -> EmulatorApp:
    return EmulatorApp(state)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(data, default=_default), status=status, headers=dict(headers or {}),
                    mimetype="application/json")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _error(status: int, code: str, message: str, details: Any = None,
           headers: Mapping[str, str] | None = None) -> Response:
    return _json({"error": {"code": code, "message": message, "details": details}}, status, headers)


def _auth_challenge(exc: EmulatorError) -> dict[str, str]:
    if exc.code == "invalid_token":
        return {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{exc.message}"'}
    return {"WWW-Authenticate": 'Bearer realm="tradinggrid"'}


def _basic_credentials(request: Request) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return "", ""
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    client_id, _, client_secret = decoded.partition(":")
    return client_id, client_secret


def _body(request: Request, *, optional: bool = False) -> Any:
    if request.content_length and request.content_length > MAX_BODY_BYTES:
        raise EmulatorError(413, "payload_too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes.")
    raw = request.get_data(cache=True)
    if not raw:
        if optional:
            return {}
        raise EmulatorError(400, "invalid_body", "A JSON body is required.")
    try:
        return json.loads(raw)
    except ValueError:
        raise EmulatorError(400, "invalid_json", "The body is not valid JSON.")


def _int_arg(request: Request, name: str, default: int, *, minimum: int) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation_error(name, "must be a whole number")
    if value < minimum:
        raise validation_error(name, f"must be at least {minimum}")
    return value


def _csv_arg(request: Request, name: str) -> list[str]:
    return [part.strip() for part in request.args.get(name, "").split(",") if part.strip()]


def _since_arg(request: Request) -> datetime | None:
    raw = request.args.get("updated_since")
    return parse_moment(raw, "updated_since") if raw else None


def _base(request: Request) -> str:
    return request.host_url.rstrip("/")


def _fault_dict(rule: FaultRule) -> dict[str, Any]:
    return {name: getattr(rule, name) for name in rule.__dataclass_fields__}
