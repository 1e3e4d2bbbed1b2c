"""Lens `getTransactions` over the emulator's transactions, as a real GraphQL schema (graphql-core).

The schema follows OpenText's published Postman examples: `query: {count, offset, scroll, scrollid, sortby,
ranges, filters, fields{must, should}, contentKeyFilters, query}`; field names in `sortby`, `ranges`, `filters`
and `fields` are enum values. Content keys are returned only when `contentKeyFilters` is present, as on the
real host. `count` is capped at 1000; a scroll hands out up to 1000 per call."""

from __future__ import annotations

import copy
import fnmatch
import functools
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from graphql import GraphQLError, GraphQLSchema, build_schema, graphql_sync

if TYPE_CHECKING:
    from .state import EmulatorState

TRANSACTION_FIELDS = (
    "arrivaltime", "arrivaltimefacetdaily", "category", "clientsource", "clientstatus", "correlationid",
    "deliveryackstatus", "deliveryacktimestamp", "deliverycompletedtimestamp", "deliveryfilename",
    "deliveryreceipt", "deliverystatus", "editype", "envelopetype", "errorcode", "errortype",
    "externalerrormessage", "fastatus", "fastatusdate", "firstbytetimestamp", "inagent", "inboundpipelineid",
    "informat", "insize", "invoicetotalamount", "itinerarycompletedtimestamp", "labels", "lastbytetimestamp",
    "outagent", "outboundpipelineid", "outformat", "outsize", "parenttransactionid", "platform", "pototalamount",
    "processingcell", "processingcomputezone", "processingregion", "processingsubstatus", "processingtime",
    "processorid", "purgedate", "readyforpickuptimestamp", "receiveackstatus", "receivefilename",
    "receiveraddress", "receiverip", "receivermailbox", "receivername", "senderaddress", "senderfilename",
    "senderip", "sendermailbox", "sendername", "senderreference", "sendertransactionid", "servicetype",
    "solutionid", "standardversion", "status", "statusdate", "transactionid", "transactionlevel", "type",
)
_TIME_FIELDS = {"arrivaltime", "statusdate", "fastatusdate"}
MAX_COUNT = 1000
DEFAULT_COUNT = 10

SDL = f"""
enum TransactionField {{ {" ".join(TRANSACTION_FIELDS)} }}
enum SortType {{ ASC DESC }}
input SortBy {{ field: TransactionField!, type: SortType }}
input Range {{ field: TransactionField!, from: String, to: String }}
input FilterValue {{ value: String!, not: Boolean }}
input Filter {{ field: TransactionField!, values: [FilterValue!]! }}
input FieldQuery {{ field: TransactionField!, query: String! }}
input FieldQueries {{ must: [FieldQuery!], should: [FieldQuery!], must_not: [FieldQuery!] }}
input ContentKeyFilter {{ key: String!, value: String }}
input TransactionQuery {{
  count: Int, offset: Int, scroll: Boolean, scrollid: String, sortby: SortBy, ranges: [Range!],
  filters: [Filter!], fields: FieldQueries, contentKeyFilters: [ContentKeyFilter!], query: String
}}
type ContentKey {{ key: String, value: String }}
type Transaction {{
  {" ".join(f"{name}: String" for name in TRANSACTION_FIELDS)}
  contentkeys(names: [String!]): [ContentKey!]
}}
type TransactionSearchResult {{
  count: Int!, total: Int!, offset: Int!, scrollid: String, transactions: [Transaction!]!
}}
type Query {{ getTransactions(query: TransactionQuery): TransactionSearchResult }}
"""


@functools.cache
def schema() -> GraphQLSchema:
    return build_schema(SDL)


def execute(state: EmulatorState, *, query: str, variables: Mapping[str, Any] | None,
            operation_name: str | None) -> dict[str, Any]:
    """Run one GraphQL request; the answer is `{"data": ..., "errors": [...]}` as GraphQL-over-HTTP says."""
    root = {"getTransactions": lambda info, query=None: _get_transactions(state, query or {})}
    result = graphql_sync(schema(), query, root_value=root, variable_values=dict(variables or {}),
                          operation_name=operation_name)
    answer: dict[str, Any] = {"data": result.data}
    if result.errors:
        answer["errors"] = [error.formatted for error in result.errors]
    return answer


def _get_transactions(state: EmulatorState, query: Mapping[str, Any]) -> dict[str, Any]:
    with state.lock:
        cap = max(1, min(MAX_COUNT, state.page_size_cap))
        if query.get("scroll"):
            return _scroll(state, query, cap)
        matched = _search(state, query)
        offset = max(0, int(query.get("offset") or 0))
        count = max(0, min(int(query.get("count") or DEFAULT_COUNT), cap))
        page = matched[offset:offset + count]
        return {
            "count": len(page),
            "total": len(matched),
            "offset": offset,
            "scrollid": None,
            "transactions": [_render(t, query) for t in page],
        }


def _scroll(state: EmulatorState, query: Mapping[str, Any], batch: int) -> dict[str, Any]:
    scrollid = query.get("scrollid")
    if scrollid:
        scroll = state.scrolls.get(scrollid)
        if scroll is None:
            raise GraphQLError(f"Scroll {scrollid} is unknown or has expired.")
    else:
        # A scroll is a snapshot: later changes do not shift it.
        scrollid = secrets.token_hex(12)
        scroll = {"ids": [t["transactionid"] for t in _search(state, query)], "position": 0}
        state.scrolls[scrollid] = scroll
    position = scroll["position"]
    ids = scroll["ids"][position:position + batch]
    scroll["position"] = position + len(ids)
    transactions = [state.transactions[i] for i in ids if i in state.transactions]
    return {
        "count": len(transactions),
        "total": len(scroll["ids"]),
        "offset": position,
        "scrollid": scrollid,
        "transactions": [_render(t, query) for t in transactions],
    }


def _search(state: EmulatorState, query: Mapping[str, Any]) -> list[dict[str, Any]]:
    matched = [t for t in state.transactions.values() if _matches(t, query)]
    sortby = query.get("sortby") or {"field": "arrivaltime", "type": "DESC"}
    field = sortby["field"]
    descending = (sortby.get("type") or "ASC") == "DESC"
    matched.sort(key=lambda t: (_sort_value(t.get(field), field), t["transactionid"]), reverse=descending)
    return matched


def _matches(transaction: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    for flt in query.get("filters") or []:
        value = _text(transaction.get(flt["field"]))
        wanted = [v["value"] for v in flt["values"] if not v.get("not")]
        unwanted = [v["value"] for v in flt["values"] if v.get("not")]
        if wanted and value not in wanted:
            return False
        if value in unwanted:
            return False
    for rng in query.get("ranges") or []:
        value = transaction.get(rng["field"])
        if value in (None, ""):
            return False
        key = _sort_value(value, rng["field"])
        if rng.get("from") and key < _sort_value(rng["from"], rng["field"]):
            return False
        if rng.get("to") and key > _sort_value(rng["to"], rng["field"]):
            return False
    fields = query.get("fields") or {}
    if not all(_field_matches(transaction, q) for q in fields.get("must") or []):
        return False
    if fields.get("should") and not any(_field_matches(transaction, q) for q in fields["should"]):
        return False
    if any(_field_matches(transaction, q) for q in fields.get("must_not") or []):
        return False
    for ckf in query.get("contentKeyFilters") or []:
        keys = {k.lower(): v for k, v in (transaction.get("contentkeys") or {}).items()}
        value = keys.get(ckf["key"].lower())
        if value is None or (ckf.get("value") and not fnmatch.fnmatchcase(value.lower(), ckf["value"].lower())):
            return False
    if query.get("query"):
        haystack = [_text(v).lower() for k, v in transaction.items() if k != "contentkeys"]
        haystack += [_text(v).lower() for v in (transaction.get("contentkeys") or {}).values()]
        for term in query["query"].split():
            if term.upper() in ("AND", "OR"):
                continue
            pattern = term.lower() if any(c in term for c in "*?") else f"*{term.lower()}*"
            if not any(fnmatch.fnmatchcase(value, pattern) for value in haystack):
                return False
    return True


def _field_matches(transaction: Mapping[str, Any], field_query: Mapping[str, Any]) -> bool:
    value = _text(transaction.get(field_query["field"]))
    pattern = field_query["query"]
    if pattern == "*":
        return bool(value)
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _render(transaction: Mapping[str, Any], query: Mapping[str, Any]) -> dict[str, Any]:
    rendered = {name: _text_or_none(transaction.get(name)) for name in TRANSACTION_FIELDS}
    stored_keys = dict(transaction.get("contentkeys") or {})
    with_keys = query.get("contentKeyFilters") is not None

    def contentkeys(info: Any, names: list[str] | None = None) -> list[dict[str, str]] | None:
        if not with_keys:
            return None
        lowered = {k.lower(): (k, v) for k, v in stored_keys.items()}
        chosen = names if names is not None else list(stored_keys)
        return [
            {"key": lowered[n.lower()][0], "value": _text(lowered[n.lower()][1])}
            for n in chosen if n.lower() in lowered
        ]

    rendered["contentkeys"] = contentkeys
    return copy.copy(rendered)


def _sort_value(value: Any, field: str) -> tuple[int, Any]:
    if field in _TIME_FIELDS and value:
        text = str(value)
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
            return (0, (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
        except ValueError:
            pass
    return (1, _text(value))


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
