"""The one way Partnerlink talks to Trading Grid (OpenText Active Community): see shared CONTRACT.md.

- OAuth2 client credentials; the token lives in Django's cache (Redis when configured) so every worker shares
  it, and is refreshed once when a call answers 401.
- One `requests.Session` per process, explicit (connect, read) timeouts, bounded retries with exponential
  backoff and full jitter on 429 (honouring `Retry-After`), 5xx and connection failures. A POST that creates
  something is retried only when the server cannot have acted on it (429, 503, connection never made), so a
  retry never makes a second post, document or event.
- List calls are generators that follow every page and drop duplicates when the data moves under them.
- Errors are mapped to `connectors.tradinggrid.errors`; logs name the method, path and status, never a secret.
"""

from __future__ import annotations

import hashlib
import json as jsonlib
import logging
import os
import random as _random
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from .errors import (
    TradingGridAPIError,
    TradingGridAuthError,
    TradingGridConfigurationError,
    TradingGridError,
    TradingGridNotFoundError,
    TradingGridTransientError,
)

logger = logging.getLogger(__name__)

TOKEN_PATH = "/v1/oauth2/tokens"  # noqa: S105 - a path, not a secret
DIRECTORY_BASE = "/TGCommunityServices/v1"
COMMUNITY_BASE = "/community/v1"
LENS_PATH = "/visibility_transaction_search"

MAX_PAGE_SIZE = 1000
# OpenText says to fetch a new token every 10 hours; used when the answer carries no expires_in.
DEFAULT_TOKEN_LIFETIME = 10 * 60 * 60
TOKEN_EXPIRY_MARGIN = 300

# Lens: the transaction fields and content keys the project uses (CONTRACT.md).
LENS_TRANSACTION_FIELDS: tuple[str, ...] = (
    "transactionid",
    "correlationid",
    "arrivaltime",
    "status",
    "statusdate",
    "sendername",
    "senderaddress",
    "receivername",
    "receiveraddress",
    "editype",
    "errorcode",
    "errortype",
    "externalerrormessage",
    "fastatus",
    "fastatusdate",
    "transactionlevel",
)
LENS_CONTENT_KEYS: tuple[str, ...] = (
    "purchase order number",
    "invoice number",
    "shipment identification",
    "SCAC",
    "pronum",
)
# Lens statuses that are operational issues (category edi_transaction_failure).
LENS_FAILED_STATUSES: tuple[str, ...] = ("V", "F", "H")
LENS_FAILED_FA_STATUSES: tuple[str, ...] = ("R", "E", "T")

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})
# Keys whose values are GraphQL enum names in Lens queries (`sortby: {field: arrivaltime type: ASC}`).
_GRAPHQL_ENUM_KEYS = frozenset({"field", "type"})
_RECORD_ID_KEYS = ("partnerCompanyId", "companyId", "buid", "userId", "uniqueId", "loginId")
_GRAPHQL_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")

Timeout = float | tuple[float, float]
Since = datetime | date | str | None


class TradingGridClient:
    """A thin, typed gateway to Trading Grid. Construct it with `from_settings()` or `get_client()`."""

    def __init__(
        self,
        *,
        base_url: str,
        client_id: str,
        client_secret: str,
        company_id: str,
        timeout: Timeout = 15.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        cache: Any = None,
        session: requests.Session | None = None,
    ) -> None:
        missing = [
            name
            for name, value in (
                ("TRADINGGRID_API_URL", base_url),
                ("TRADINGGRID_CLIENT_ID", client_id),
                ("TRADINGGRID_CLIENT_SECRET", client_secret),
                ("TRADINGGRID_COMPANY_ID", company_id),
            )
            if not value
        ]
        if missing:
            raise TradingGridConfigurationError(f"Trading Grid is not configured: set {', '.join(missing)}.")
        if not base_url.startswith(("http://", "https://")):
            raise TradingGridConfigurationError("TRADINGGRID_API_URL must start with http:// or https://.")
        if max_attempts < 1:
            raise TradingGridConfigurationError("max_attempts must be at least 1.")
        self.base_url = base_url.rstrip("/")
        self.company_id = company_id
        self._client_id = client_id
        self._client_secret = client_secret
        # Connect fails fast; read waits up to the configured timeout.
        self.timeout: tuple[float, float] = (
            tuple(timeout) if isinstance(timeout, tuple) else (min(5.0, float(timeout)), float(timeout))
        )
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.sleep = sleep
        self.random = random
        self._cache = cache
        self._session = session or _new_session()
        self._token_lock = threading.Lock()
        self._local_token: tuple[str, float] | None = None  # used only when the shared cache is down
        fingerprint = hashlib.sha256(f"{self.base_url}|{client_id}".encode()).hexdigest()[:16]
        self.token_cache_key = f"tradinggrid:oauth-token:{fingerprint}"

    @classmethod
    def from_settings(cls, **overrides: Any) -> TradingGridClient:
        """A client configured from Django settings; keyword overrides win (tests pass `sleep=`)."""
        from django.conf import settings

        kwargs: dict[str, Any] = {
            "base_url": getattr(settings, "TRADINGGRID_API_URL", ""),
            "client_id": getattr(settings, "TRADINGGRID_CLIENT_ID", ""),
            "client_secret": getattr(settings, "TRADINGGRID_CLIENT_SECRET", ""),
            "company_id": getattr(settings, "TRADINGGRID_COMPANY_ID", ""),
            "timeout": getattr(settings, "TRADINGGRID_TIMEOUT", 15.0),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def close(self) -> None:
        self._session.close()

    # --- Companies, partner directory, users [doc] -----------------------------------------------

    def get_company(self, *, company_id: str | None = None) -> dict[str, Any]:
        """Our own company (or another BUID we may read)."""
        return self._request("GET", f"{DIRECTORY_BASE}/companies/{_seg(company_id or self.company_id)}")

    def iter_partner_directory(
        self,
        *,
        partner_company_id: str | None = None,
        partner_company_name: str | None = None,
        trading_address: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Our partner directory, optionally filtered. Records are raw: the shape is unpublished, so map them
        with `payloads.directory_entry_from_tg`."""
        params = _drop_none(
            {
                "partnerCompanyId": partner_company_id,
                "partnerCompanyName": partner_company_name,
                "tradingAddress": trading_address,
            }
        )
        path = f"{DIRECTORY_BASE}/companies/{_seg(self.company_id)}/partnerDirectory"
        yield from self._iter_documented_list(
            path,
            params=params,
            list_keys=("items", "partners", "partnerDirectory", "tradingPartners", "content", "data", "results"),
            key=_first_key("partnerCompanyId", "companyId", "buid", "id"),
        )

    def iter_users(self, *, login_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Users of our company. The API cannot search by email: filter the result yourself."""
        path = f"{DIRECTORY_BASE}/companies/{_seg(self.company_id)}/users"
        yield from self._iter_documented_list(
            path,
            params=_drop_none({"loginId": login_id}),
            list_keys=("items", "users", "content", "data", "results"),
            key=_first_key("userId", "uniqueId", "loginId"),
        )

    def get_user(self, *, user_id: str) -> dict[str, Any]:
        return self._request("GET", f"{DIRECTORY_BASE}/companies/{_seg(self.company_id)}/users/{_seg(user_id)}")

    def create_user(self, *, user: Mapping[str, Any]) -> dict[str, Any]:
        """Create a user; the answer's `uniqueId` is copied to `userId` for convenience."""
        created = self._request("POST", f"{DIRECTORY_BASE}/companies/{_seg(self.company_id)}/users", json=user)
        if isinstance(created, dict) and "userId" not in created and created.get("uniqueId"):
            created = {**created, "userId": created["uniqueId"]}
        return created

    def update_user(self, *, user_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        path = f"{DIRECTORY_BASE}/companies/{_seg(self.company_id)}/users/{_seg(user_id)}"
        return self._request("PUT", path, json=changes)

    def delete_user(self, *, user_id: str, missing_ok: bool = False) -> None:
        path = f"{DIRECTORY_BASE}/companies/{_seg(self.company_id)}/users/{_seg(user_id)}"
        self._delete(path, missing_ok=missing_ok)

    # --- Partner profiles [ours] ----------------------------------------------------------------

    def get_partner_profile(self, *, company_id: str) -> dict[str, Any]:
        return self._request("GET", f"{COMMUNITY_BASE}/partners/{_seg(company_id)}/profile")

    def update_partner_profile(self, *, company_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH the profile: top-level fields are replaced; keys inside `custom` are merged."""
        return self._request("PATCH", f"{COMMUNITY_BASE}/partners/{_seg(company_id)}/profile", json=changes)

    # --- Issues [ours] --------------------------------------------------------------------------

    def iter_issues(
        self,
        *,
        status: str | Sequence[str] | None = None,
        category: str | Sequence[str] | None = None,
        partner: str | None = None,
        updated_since: Since = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Issues, oldest change first. `updated_since` is inclusive: expect to see the boundary item again."""
        params = _drop_none(
            {
                "status": _csv(status),
                "category": _csv(category),
                "partner": partner,
                "updated_since": _iso(updated_since),
            }
        )
        yield from self._paginate(f"{COMMUNITY_BASE}/issues", params=params, page_size=page_size, by_updated_at=True)

    def get_issue(self, *, issue_id: str) -> dict[str, Any]:
        return self._request("GET", f"{COMMUNITY_BASE}/issues/{_seg(issue_id)}")

    def update_issue(self, *, issue_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("PATCH", f"{COMMUNITY_BASE}/issues/{_seg(issue_id)}", json=changes)

    def iter_issue_comments(self, *, issue_id: str, page_size: int = MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        yield from self._paginate(f"{COMMUNITY_BASE}/issues/{_seg(issue_id)}/comments", page_size=page_size)

    def create_issue_comment(self, *, issue_id: str, body: str, author: str | None = None) -> dict[str, Any]:
        payload = _drop_none({"body": body, "author": author})
        return self._request("POST", f"{COMMUNITY_BASE}/issues/{_seg(issue_id)}/comments", json=payload)

    # --- Posts [ours] ---------------------------------------------------------------------------

    def create_post(self, *, post: Mapping[str, Any]) -> dict[str, Any]:
        """`title`, `body_html`, `summary`, `source{type, campaign_id, archive_url}`, `audience{…}`, `published_at`."""
        return self._request("POST", f"{COMMUNITY_BASE}/posts", json=_jsonable(post))

    def get_post(self, *, post_id: str) -> dict[str, Any]:
        return self._request("GET", f"{COMMUNITY_BASE}/posts/{_seg(post_id)}")

    def update_post(self, *, post_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("PATCH", f"{COMMUNITY_BASE}/posts/{_seg(post_id)}", json=_jsonable(changes))

    # --- Documents and acknowledgements [ours] --------------------------------------------------

    def create_document(self, *, document: Mapping[str, Any]) -> dict[str, Any]:
        """`kind` (policy, trading_terms, operational_guide) and `title`."""
        return self._request("POST", f"{COMMUNITY_BASE}/documents", json=_jsonable(document))

    def add_document_version(self, *, document_id: str, version: Mapping[str, Any]) -> dict[str, Any]:
        """`version`, `file_name`, `sha256`, `content_url`, `status`, `published_at`; answers the document."""
        path = f"{COMMUNITY_BASE}/documents/{_seg(document_id)}/versions"
        return self._request("POST", path, json=_jsonable(version))

    def get_document(self, *, document_id: str) -> dict[str, Any]:
        return self._request("GET", f"{COMMUNITY_BASE}/documents/{_seg(document_id)}")

    def iter_acknowledgements(
        self, *, document_id: str, updated_since: Since = None, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        yield from self._paginate(
            f"{COMMUNITY_BASE}/documents/{_seg(document_id)}/acknowledgements",
            params=_drop_none({"updated_since": _iso(updated_since)}),
            page_size=page_size,
            key=_tuple_key("partner_company_id", "contact_email", "version"),
            by_updated_at=True,
        )

    # --- Events [ours] --------------------------------------------------------------------------

    def create_event(self, *, event: Mapping[str, Any]) -> dict[str, Any]:
        """`kind` (webinar, training, business_review), `title`, `starts_at`, `ends_at`, `timezone`, `join_url`…"""
        return self._request("POST", f"{COMMUNITY_BASE}/events", json=_jsonable(event))

    def update_event(self, *, event_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        return self._request("PATCH", f"{COMMUNITY_BASE}/events/{_seg(event_id)}", json=_jsonable(changes))

    def iter_event_registrations(
        self, *, event_id: str, updated_since: Since = None, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        yield from self._paginate(
            f"{COMMUNITY_BASE}/events/{_seg(event_id)}/registrations",
            params=_drop_none({"updated_since": _iso(updated_since)}),
            page_size=page_size,
            key=_tuple_key("partner_company_id", "contact_email"),
            by_updated_at=True,
        )

    def iter_event_attendance(
        self, *, event_id: str, updated_since: Since = None, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        yield from self._paginate(
            f"{COMMUNITY_BASE}/events/{_seg(event_id)}/attendance",
            params=_drop_none({"updated_since": _iso(updated_since)}),
            page_size=page_size,
            key=_tuple_key("partner_company_id", "contact_email"),
            by_updated_at=True,
        )

    def iter_event_questions(
        self, *, event_id: str, updated_since: Since = None, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[dict[str, Any]]:
        yield from self._paginate(
            f"{COMMUNITY_BASE}/events/{_seg(event_id)}/questions",
            params=_drop_none({"updated_since": _iso(updated_since)}),
            page_size=page_size,
            by_updated_at=True,
        )

    # --- Webhook subscriptions [ours] -----------------------------------------------------------

    def create_webhook_subscription(
        self, *, url: str, event_types: Sequence[str], secret: str | None = None
    ) -> dict[str, Any]:
        """Subscribe `url`; without `secret` Trading Grid generates one and returns it (store it)."""
        payload = _drop_none({"url": url, "event_types": list(event_types), "secret": secret})
        return self._request("POST", f"{COMMUNITY_BASE}/webhook-subscriptions", json=payload)

    def iter_webhook_subscriptions(self, *, page_size: int = MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        yield from self._paginate(f"{COMMUNITY_BASE}/webhook-subscriptions", page_size=page_size)

    def delete_webhook_subscription(self, *, subscription_id: str, missing_ok: bool = False) -> None:
        self._delete(f"{COMMUNITY_BASE}/webhook-subscriptions/{_seg(subscription_id)}", missing_ok=missing_ok)

    # --- Lens transaction search [doc] ----------------------------------------------------------

    def get_transactions_page(
        self,
        *,
        count: int = MAX_PAGE_SIZE,
        offset: int = 0,
        filters: Sequence[Mapping[str, Any]] | None = None,
        ranges: Sequence[Mapping[str, Any]] | None = None,
        sortby: Mapping[str, Any] | None = None,
        search: str | None = None,
        scroll: bool = False,
        scrollid: str | None = None,
        fields: Sequence[str] = LENS_TRANSACTION_FIELDS,
        content_keys: Sequence[str] = LENS_CONTENT_KEYS,
    ) -> dict[str, Any]:
        """One `getTransactions` answer: `{"count", "total", "offset", "scrollid", "transactions": [...]}`.

        `filters`: `[{"field": "status", "values": [{"value": "F", "not": False}]}]`;
        `ranges`: `[{"field": "arrivaltime", "from": ..., "to": ...}]`; `sortby`: `{"field", "type": ASC|DESC}`.
        Transactions are raw; `payloads.lens_transaction_to_issue` maps the failed ones."""
        arguments: dict[str, Any] = {}
        if scroll:
            arguments["scroll"] = True
            if scrollid:
                arguments["scrollid"] = scrollid
        else:
            arguments["count"] = max(1, min(int(count), MAX_PAGE_SIZE))
            arguments["offset"] = max(0, int(offset))
        if sortby:
            arguments["sortby"] = dict(sortby)
        if ranges:
            arguments["ranges"] = [_jsonable(r) for r in ranges]
        if filters:
            arguments["filters"] = [dict(f) for f in filters]
        if search:
            arguments["query"] = search
        if content_keys:
            arguments["contentKeyFilters"] = []  # Lens returns content keys only when this is present
        query = _lens_query(arguments, fields=fields, content_keys=content_keys)
        answer = self._request("POST", LENS_PATH, json={"query": query, "variables": {}}, safe_to_retry=True)
        if not isinstance(answer, dict):
            raise TradingGridAPIError("Lens answered with something other than a JSON object.", method="POST",
                                      path=LENS_PATH, code="invalid_response")
        if answer.get("errors"):
            first = answer["errors"][0] if isinstance(answer["errors"], list) and answer["errors"] else {}
            message = first.get("message", "GraphQL error") if isinstance(first, dict) else str(first)
            raise TradingGridAPIError(message, status=200, code="graphql_error", details=answer["errors"],
                                      method="POST", path=LENS_PATH)
        page = (answer.get("data") or {}).get("getTransactions") or {}
        page.setdefault("transactions", [])
        return page

    def iter_transactions(
        self,
        *,
        filters: Sequence[Mapping[str, Any]] | None = None,
        ranges: Sequence[Mapping[str, Any]] | None = None,
        sortby: Mapping[str, Any] | None = None,
        search: str | None = None,
        scroll: bool = False,
        page_size: int = MAX_PAGE_SIZE,
        fields: Sequence[str] = LENS_TRANSACTION_FIELDS,
        content_keys: Sequence[str] = LENS_CONTENT_KEYS,
    ) -> Iterator[dict[str, Any]]:
        """Every matching transaction, by count/offset pages or (`scroll=True`) by Lens scrolling,
        without duplicates (keyed by transactionid)."""
        query_args = {
            "filters": filters,
            "ranges": ranges,
            "sortby": sortby or {"field": "arrivaltime", "type": "ASC"},
            "search": search,
            "fields": fields,
            "content_keys": content_keys,
        }
        key = _first_key("transactionid")
        seen: set[Hashable] = set()
        if scroll:
            scrollid: str | None = None
            received = 0
            while True:
                page = self.get_transactions_page(scroll=True, scrollid=scrollid, **query_args)
                batch = page.get("transactions") or []
                new = list(_unseen(batch, key, seen))
                yield from new
                received += len(batch)
                total = _as_int(page.get("total"))
                scrollid = page.get("scrollid") or scrollid
                # Stop on an empty batch, when everything announced has come, or when the host repeats itself.
                if not batch or not new or (total is not None and received >= total):
                    return
        else:
            yield from self._page_through(
                lambda offset, count: _lens_page(self.get_transactions_page(
                    count=count, offset=offset, **query_args)),
                page_size=page_size,
                key=key,
                seen=seen,
            )

    def iter_failed_transactions(self, *, since: Since = None) -> Iterator[dict[str, Any]]:
        """Transactions that are operational issues: status V/F/H, or functional-acknowledgement status R/E/T,
        changed since `since` (by statusdate / fastatusdate). Each transaction once."""
        searches = (
            ("status", LENS_FAILED_STATUSES, "statusdate"),
            ("fastatus", LENS_FAILED_FA_STATUSES, "fastatusdate"),
        )
        seen: set[Hashable] = set()
        for field, values, date_field in searches:
            ranges = [{"field": date_field, "from": _iso(since)}] if since is not None else None
            filters = [{"field": field, "values": [{"value": v, "not": False} for v in values]}]
            for transaction in self.iter_transactions(filters=filters, ranges=ranges):
                marker = transaction.get("transactionid")
                if marker in seen:
                    continue
                seen.add(marker)
                yield transaction

    # --- Paging ---------------------------------------------------------------------------------

    def _paginate(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        page_size: int = MAX_PAGE_SIZE,
        key: Callable[[Mapping[str, Any]], Hashable | None] | None = None,
        by_updated_at: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Follow `{"total", "offset", "count", "items"}` pages of a community list.

        `by_updated_at`: the list is ordered oldest change first and takes `updated_since`, so walk it by that
        cursor (see `_walk_by_updated_at`), which an item changing mid-walk cannot make us skip."""
        key = key or _first_key("id")
        base = {k: v for k, v in (params or {}).items() if k != "updated_since"}

        def fetch(since: str | None, offset: int, count: int) -> tuple[list[dict[str, Any]], int | None]:
            query = {**base, **({"updated_since": since} if since else {}), "offset": offset, "count": count}
            body = self._request("GET", path, params=query)
            if not isinstance(body, dict):
                raise TradingGridAPIError("Expected a page object.", method="GET", path=path,
                                          code="invalid_response")
            return list(body.get("items") or []), _as_int(body.get("total"))

        since = (params or {}).get("updated_since")
        if by_updated_at:
            yield from self._walk_by_updated_at(fetch, since=since, page_size=page_size, key=key)
        else:
            yield from self._page_through(lambda offset, count: fetch(since, offset, count),
                                          page_size=page_size, key=key)

    @classmethod
    def _walk_by_updated_at(
        cls,
        fetch: Callable[[str | None, int, int], tuple[list[dict[str, Any]], int | None]],
        *,
        since: str | None,
        page_size: int,
        key: Callable[[Mapping[str, Any]], Hashable | None],
    ) -> Iterator[dict[str, Any]]:
        """Keyset paging on `updated_at`: each next page asks `updated_since=<last updated_at seen>` and skips,
        by offset, only the items at exactly that moment already read.

        Offset paging skips an item when another one, earlier in the list, changes and moves to the end while we
        walk; a cursor does not. An item that changed during the walk comes again with its newer state (never the
        same state twice). If the host turns out not to order by `updated_at`, the rest is walked by offset."""
        count = max(1, min(page_size, MAX_PAGE_SIZE))
        latest: dict[Hashable, datetime] = {}
        offset = 0
        stale_pages = 0
        while True:
            items, total = fetch(since, offset, count)
            if not items:
                return
            stamps = [_moment(item.get("updated_at")) for item in items]
            if any(s is None for s in stamps) or stamps != sorted(stamps):  # type: ignore[type-var]
                seen = set(latest)
                yield from _unseen(items, key, seen)
                yield from cls._page_through(lambda o, c, s=since: fetch(s, o, c), page_size=count, key=key, seen=seen,
                                             start_offset=offset + len(items))
                return
            fresh = 0
            for item, stamp in zip(items, stamps, strict=True):
                marker = key(item)
                if marker is not None:
                    if marker in latest and latest[marker] >= stamp:  # type: ignore[operator]
                        continue
                    latest[marker] = stamp  # type: ignore[assignment]
                fresh += 1
                yield item
            stale_pages = 0 if fresh else stale_pages + 1
            if stale_pages >= 3:  # the host ignores our cursor and offset
                logger.warning("Trading Grid keeps answering pages we already have; stopping.")
                return
            if total is not None and offset + len(items) >= total:
                return
            last = stamps[-1]
            if since is not None and _moment(since) == last:
                offset += len(items)  # a whole page at the cursor's moment: move along within it
            else:
                since = str(items[-1]["updated_at"])
                offset = sum(1 for s in stamps if s == last)

    @staticmethod
    def _page_through(
        fetch: Callable[[int, int], tuple[list[dict[str, Any]], int | None]],
        *,
        page_size: int,
        key: Callable[[Mapping[str, Any]], Hashable | None],
        seen: set[Hashable] | None = None,
        start_offset: int = 0,
    ) -> Iterator[dict[str, Any]]:
        """Offset paging that survives a moving list.

        - Short pages do not end the walk (a host may cap `count`); an empty page or reaching `total` does.
        - When `total` shrinks, items before this page were removed and the ones we have not seen slid down
          under our offset: read this window again from `offset - shrink` and let the dedupe drop repeats.
        - Otherwise every page moves the offset forward; step-backs are bounded, and a host that keeps
          answering only what we already have (without growing) is left after three such pages."""
        count = max(1, min(page_size, MAX_PAGE_SIZE))
        seen = set() if seen is None else seen
        offset = start_offset
        previous_total: int | None = None
        step_backs_left = 100
        stale_pages = 0
        while True:
            items, total = fetch(offset, count)
            if not items:
                return
            new = list(_unseen(items, key, seen))
            yield from new
            grew = previous_total is not None and total is not None and total > previous_total
            stale_pages = 0 if new or grew else stale_pages + 1
            if stale_pages >= 3:
                logger.warning("Trading Grid keeps answering pages we already have; stopping at offset %d.", offset)
                return
            shrink = (previous_total - total) if previous_total is not None and total is not None else 0
            if shrink > 0 and step_backs_left > 0:
                step_backs_left -= 1
                offset = max(0, offset - shrink)
            else:
                offset += len(items)
            previous_total = total if total is not None else previous_total
            if total is not None and offset >= total:
                return

    def _iter_documented_list(
        self,
        path: str,
        *,
        params: Mapping[str, Any],
        list_keys: Sequence[str],
        key: Callable[[Mapping[str, Any]], Hashable | None],
    ) -> Iterator[dict[str, Any]]:
        """[doc] list endpoints whose answer shape is unpublished: a bare list, or an object holding the list
        under one of `list_keys`; if it also says there are more (`total`), follow offset pages."""
        body = self._request("GET", path, params=dict(params))
        records = _extract_records(body, list_keys)
        seen: set[Hashable] = set()
        yield from _unseen(records, key, seen)
        total = _as_int(body.get("total") or body.get("totalCount")) if isinstance(body, dict) else None
        if total is not None and records and len(records) < total:

            def fetch(offset: int, count: int) -> tuple[list[dict[str, Any]], int | None]:
                page = self._request("GET", path, params={**params, "offset": offset, "count": count})
                page_total = page.get("total") or page.get("totalCount") if isinstance(page, dict) else None
                return _extract_records(page, list_keys), _as_int(page_total)

            yield from self._page_through(fetch, page_size=MAX_PAGE_SIZE, key=key, seen=seen,
                                          start_offset=len(records))

    # --- Transport ------------------------------------------------------------------------------

    def _delete(self, path: str, *, missing_ok: bool) -> None:
        try:
            self._request("DELETE", path)
        except TradingGridNotFoundError:
            if not missing_ok:
                raise

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        safe_to_retry: bool | None = None,
    ) -> Any:
        """An authenticated call: one token refresh on 401, errors mapped, JSON decoded ({} when empty)."""
        if safe_to_retry is None:
            safe_to_retry = method in _IDEMPOTENT_METHODS
        refreshed = False
        while True:
            token = self._access_token()
            response = self._send(
                method,
                path,
                safe_to_retry=safe_to_retry,
                params=params,
                json=json,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            )
            if response.status_code == 401:
                response.close()
                if refreshed:
                    raise TradingGridAuthError(
                        "Trading Grid refused a freshly issued access token.", status=401, method=method, path=path
                    )
                refreshed = True
                logger.info("Trading Grid %s %s answered 401; refreshing the access token once.", method, path)
                self._forget_token(token)
                continue
            if response.status_code >= 400:
                raise _api_error(response, method=method, path=path)
            return _decode(response, method=method, path=path)

    def _send(self, method: str, path: str, *, safe_to_retry: bool, **kwargs: Any) -> requests.Response:
        """One HTTP exchange with bounded retries on 429, 5xx and connection failures."""
        url = f"{self.base_url}{path}"
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = self._session.request(method, url, timeout=self.timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                never_sent = _never_reached_server(exc)
                failure = type(exc).__name__
                if (safe_to_retry or never_sent) and attempt < self.max_attempts:
                    delay = self._backoff(attempt)
                    logger.warning("Trading Grid %s %s failed (%s); retry %d/%d in %.2fs.", method, path, failure,
                                   attempt, self.max_attempts - 1, delay)
                    self.sleep(delay)
                    continue
                raise TradingGridTransientError(f"{failure} after {attempt} attempt(s)", method=method,
                                                path=path, not_processed=never_sent) from exc
            except requests.RequestException as exc:
                raise TradingGridError(f"Trading Grid {method} {path} could not be sent: {type(exc).__name__}") from exc

            elapsed_ms = (time.monotonic() - started) * 1000
            status = response.status_code
            logger.debug("Trading Grid %s %s -> %d in %.0f ms (attempt %d)", method, path, status, elapsed_ms,
                         attempt)
            if status != 429 and status < 500:
                return response

            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            response.close()
            # 429 and 503 mean "not processed": safe to repeat even a create.
            retryable = safe_to_retry or status in (429, 503)
            within_patience = retry_after is None or retry_after <= self.max_retry_after
            if retryable and within_patience and attempt < self.max_attempts:
                delay = retry_after if retry_after is not None else self._backoff(attempt)
                logger.warning("Trading Grid %s %s answered %d; retry %d/%d in %.2fs.", method, path, status,
                               attempt, self.max_attempts - 1, delay)
                self.sleep(delay)
                continue
            raise TradingGridTransientError(
                f"HTTP {status} after {attempt} attempt(s)", status=status, retry_after=retry_after,
                method=method, path=path, not_processed=status in (429, 503),
            )

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform between 0 and the capped exponential step."""
        return self.random() * min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))

    # --- OAuth2 token ---------------------------------------------------------------------------

    def _access_token(self) -> str:
        cached = self._cached_token()
        if cached:
            return cached
        with self._token_lock:
            cached = self._cached_token()  # another thread may have fetched it meanwhile
            if cached:
                return cached
            token, lifetime = self._fetch_token()
            self._store_token(token, lifetime)
            return token

    def _fetch_token(self) -> tuple[str, float]:
        response = self._send(
            "POST",
            TOKEN_PATH,
            safe_to_retry=True,  # asking for a token twice does no harm
            params={"grant_type": "client_credentials"},
            auth=(self._client_id, self._client_secret),
            headers={"Accept": "application/json"},
        )
        if response.status_code in (400, 401, 403):
            error = _api_error(response, method="POST", path=TOKEN_PATH)
            raise TradingGridAuthError(
                f"Trading Grid refused the consumer key/secret (TRADINGGRID_CLIENT_ID/SECRET): {error.message}",
                status=response.status_code, code=error.code, method="POST", path=TOKEN_PATH,
            )
        if response.status_code >= 400:
            raise _api_error(response, method="POST", path=TOKEN_PATH)
        body = _decode(response, method="POST", path=TOKEN_PATH)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise TradingGridAuthError("The token answer has no access_token.", status=response.status_code,
                                       method="POST", path=TOKEN_PATH)
        lifetime = _as_float(body.get("expires_in")) or DEFAULT_TOKEN_LIFETIME
        logger.info("Trading Grid issued an access token valid for %ds.", int(lifetime))
        return str(token), lifetime

    def _cached_token(self) -> str | None:
        try:
            entry = self._shared_cache().get(self.token_cache_key)
        except Exception:  # noqa: BLE001 - a cache outage must not stop calls; fall back to this process
            logger.warning("Token cache unavailable; using this process's copy of the Trading Grid token.")
            entry = self._local_token and {"token": self._local_token[0], "refresh_at": self._local_token[1]}
        if not isinstance(entry, dict) or not entry.get("token") or time.time() >= entry.get("refresh_at", 0):
            return None
        return str(entry["token"])

    def _store_token(self, token: str, lifetime: float) -> None:
        # Refresh a little before expiry (10 % of the lifetime, at most 5 minutes) so no call leaves with
        # a token about to lapse.
        refresh_at = time.time() + lifetime - min(TOKEN_EXPIRY_MARGIN, lifetime * 0.1)
        self._local_token = (token, refresh_at)
        try:
            self._shared_cache().set(
                self.token_cache_key, {"token": token, "refresh_at": refresh_at}, max(1, int(lifetime))
            )
        except Exception:  # noqa: BLE001 - see _cached_token
            logger.warning("Token cache unavailable; the Trading Grid token is kept in this process only.")

    def _forget_token(self, token: str) -> None:
        """Drop `token` from the cache unless another worker has already replaced it."""
        if self._local_token and self._local_token[0] == token:
            self._local_token = None
        try:
            cache = self._shared_cache()
            entry = cache.get(self.token_cache_key)
            if isinstance(entry, dict) and entry.get("token") == token:
                cache.delete(self.token_cache_key)
        except Exception:  # noqa: BLE001 - see _cached_token
            logger.warning("Token cache unavailable; could not drop the refused Trading Grid token.")

    def _shared_cache(self) -> Any:
        if self._cache is not None:
            return self._cache
        from django.core.cache import cache

        return cache


# --- Per-process client ----------------------------------------------------------------------------

_client: TradingGridClient | None = None
_client_pid: int | None = None
_client_lock = threading.Lock()


def get_client() -> TradingGridClient:
    """This process's client, built from settings on first use (and again after a fork)."""
    global _client, _client_pid
    with _client_lock:
        if _client is None or _client_pid != os.getpid():
            _client = TradingGridClient.from_settings()
            _client_pid = os.getpid()
        return _client


def reset_client() -> None:
    """Forget the per-process client (tests, or after settings change)."""
    global _client, _client_pid
    with _client_lock:
        if _client is not None:
            _client.close()
        _client = None
        _client_pid = None


# --- Helpers ---------------------------------------------------------------------------------------


def _new_session() -> requests.Session:
    session = requests.Session()
    # Our own loop retries; urllib3's must not multiply it.
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=10, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "Partnerlink/1.0 (+tradinggrid connector)"
    return session


def _never_reached_server(exc: BaseException) -> bool:
    """True when the request cannot have been received (connect timeout, connection refused)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _api_error(response: requests.Response, *, method: str, path: str) -> TradingGridAPIError:
    code, message, details = "", "", None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            code = str(error.get("code") or "")
            message = str(error.get("message") or "")
            details = error.get("details")
        elif isinstance(error, str):  # OAuth2 style
            code = error
            message = str(body.get("error_description") or error)
        else:
            message = str(body.get("message") or body.get("detail") or "")
    message = message or response.reason or f"HTTP {response.status_code}"
    status = response.status_code
    response.close()
    error_class = {401: TradingGridAuthError, 403: TradingGridAuthError, 404: TradingGridNotFoundError}.get(
        status, TradingGridAPIError
    )
    return error_class(message, status=status, code=code, details=details, method=method, path=path)


def _decode(response: requests.Response, *, method: str, path: str) -> Any:
    if response.status_code == 204 or not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        raise TradingGridAPIError("The answer is not JSON.", status=response.status_code, code="invalid_response",
                                  method=method, path=path)


def _extract_records(body: Any, list_keys: Sequence[str]) -> list[dict[str, Any]]:
    if isinstance(body, list):
        return [r for r in body if isinstance(r, dict)]
    if not isinstance(body, dict):
        return []
    for name in list_keys:
        value = body.get(name)
        if isinstance(value, list):
            return [r for r in value if isinstance(r, dict)]
        if isinstance(value, dict):  # e.g. {"partners": {"partner": [...]}}
            nested = _extract_records(value, ("partner", "user", "items"))
            if nested:
                return nested
    # One record on its own (e.g. a directory lookup by partnerCompanyId answering an object).
    if any(body.get(name) for name in _RECORD_ID_KEYS):
        return [body]
    lists = [v for v in body.values() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
    return list(lists[0]) if len(lists) == 1 else []


def _lens_page(page: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
    return list(page.get("transactions") or []), _as_int(page.get("total"))


def _unseen(
    items: Iterable[dict[str, Any]], key: Callable[[Mapping[str, Any]], Hashable | None], seen: set[Hashable]
) -> Iterator[dict[str, Any]]:
    for item in items:
        marker = key(item)
        if marker is not None:
            if marker in seen:
                continue
            seen.add(marker)
        yield item


def _first_key(*names: str) -> Callable[[Mapping[str, Any]], Hashable | None]:
    def key(item: Mapping[str, Any]) -> Hashable | None:
        for name in names:
            value = item.get(name)
            if value not in (None, ""):
                return (name, str(value))
        return None

    return key


def _tuple_key(*names: str) -> Callable[[Mapping[str, Any]], Hashable | None]:
    def key(item: Mapping[str, Any]) -> Hashable | None:
        values = tuple(str(item.get(name) or "").strip().lower() for name in names)
        return values if any(values) else None

    return key


def _lens_query(arguments: Mapping[str, Any], *, fields: Sequence[str], content_keys: Sequence[str]) -> str:
    selection = " ".join(_graphql_name(f) for f in fields)
    if content_keys:
        names = " ".join(jsonlib.dumps(k) for k in content_keys)
        selection += f" contentkeys(names: [{names}]) {{ key value }}"
    return (
        "query partnerlinkTransactionSearch { getTransactions(query: "
        f"{_graphql_literal(arguments)}) {{ count total offset scrollid transactions {{ {selection} }} }} }}"
    )


def _graphql_literal(value: Any, *, key: str | None = None) -> str:
    """A GraphQL input literal; `field` and `type` values are enum names (unquoted), as Lens expects."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime | date):
        return jsonlib.dumps(_iso(value))
    if isinstance(value, str):
        return _graphql_name(value) if key in _GRAPHQL_ENUM_KEYS else jsonlib.dumps(value)
    if isinstance(value, Mapping):
        inner = " ".join(f"{_graphql_name(k)}: {_graphql_literal(v, key=k)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + " ".join(_graphql_literal(v, key=key) for v in value) + "]"
    raise TypeError(f"Cannot express {type(value).__name__} in a Lens query.")


def _graphql_name(name: str) -> str:
    if not _GRAPHQL_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid Lens field or enum name.")
    return name


def _iso(value: Since) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("Use timezone-aware datetimes with Trading Grid.")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value.isoformat()


def _jsonable(value: Any) -> Any:
    """Dates and datetimes as ISO 8601 strings, recursively; everything else unchanged."""
    if isinstance(value, datetime | date):
        return _iso(value)
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _csv(value: str | Sequence[str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _seg(value: str) -> str:
    if not value:
        raise ValueError("An empty id cannot be part of a Trading Grid path.")
    return quote(str(value), safe="")


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _as_float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
