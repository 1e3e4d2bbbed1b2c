"""Lens transaction search: count/offset paging, scrolling, filters, ranges, sorting, failed transactions."""

from datetime import UTC, datetime, timedelta

import pytest
import requests

from connectors.tradinggrid.client import _graphql_literal
from connectors.tradinggrid.errors import TradingGridAPIError
from connectors.tradinggrid.payloads import lens_transaction_to_issue

START = datetime(2026, 2, 1, tzinfo=UTC)


def _transactions(n, **fields):
    return [
        {
            "transactionid": f"T{i:04d}",
            "correlationid": f"corr-{i:04d}",
            "arrivaltime": (START + timedelta(minutes=i)).isoformat().replace("+00:00", "Z"),
            "senderaddress": "ZZ:VERONA",
            "receiveraddress": "ZZ:PARTNERLINK",
            "editype": "856",
            "status": "C",
            "contentkeys": {"purchase order number": f"PO{i:06d}"},
            **fields,
        }
        for i in range(n)
    ]


def test_count_offset_paging_follows_every_page(tg_client, tg_emulator):
    tg_emulator.state.add_transactions(_transactions(25))
    found = list(tg_client.iter_transactions(page_size=10))
    assert [t["transactionid"] for t in found] == [f"T{i:04d}" for i in range(25)]  # arrivaltime ASC
    assert found[0]["contentkeys"] == [{"key": "purchase order number", "value": "PO000000"}]
    lens_calls = [r for r in tg_emulator.state.requests if r["path"] == "/visibility_transaction_search"]
    assert len(lens_calls) == 3


def test_short_pages_from_the_host_do_not_end_the_walk(tg_client, tg_emulator):
    tg_emulator.state.add_transactions(_transactions(12))
    tg_emulator.state.page_size_cap = 5
    assert len(list(tg_client.iter_transactions(page_size=1000))) == 12


def test_scrolling_returns_everything_once(tg_client, tg_emulator):
    tg_emulator.state.add_transactions(_transactions(23))
    tg_emulator.state.page_size_cap = 10  # a scroll batch is normally 1000
    found = list(tg_client.iter_transactions(scroll=True))
    assert sorted(t["transactionid"] for t in found) == [f"T{i:04d}" for i in range(23)]
    assert len(found) == 23
    assert len(tg_emulator.state.scrolls) == 1


def test_a_scroll_is_a_snapshot(tg_client, tg_emulator):
    state = tg_emulator.state
    state.add_transactions(_transactions(6))
    state.page_size_cap = 3
    walk = tg_client.iter_transactions(scroll=True)
    first = [next(walk) for _ in range(3)]
    state.add_transactions(_transactions(1, transactionid="T-late", arrivaltime="2020-01-01T00:00:00Z"))
    rest = list(walk)
    assert [t["transactionid"] for t in first + rest] == [f"T{i:04d}" for i in range(6)]


def test_filters_ranges_and_sorting(tg_client, tg_emulator):
    state = tg_emulator.state
    state.add_transactions(_transactions(10))
    state.add_transactions([{**t, "transactionid": f"F{i}", "status": "F"} for i, t in enumerate(_transactions(3))])
    failed = list(tg_client.iter_transactions(filters=[{"field": "status", "values": [{"value": "F"}]}]))
    assert [t["transactionid"] for t in failed] == ["F0", "F1", "F2"]
    not_failed = list(tg_client.iter_transactions(
        filters=[{"field": "status", "values": [{"value": "F", "not": True}]}]))
    assert len(not_failed) == 10
    window = list(tg_client.iter_transactions(
        ranges=[{"field": "arrivaltime", "from": START + timedelta(minutes=3), "to": START + timedelta(minutes=5)}],
        filters=[{"field": "status", "values": [{"value": "C"}]}],
    ))
    assert [t["transactionid"] for t in window] == ["T0003", "T0004", "T0005"]
    newest_first = list(tg_client.iter_transactions(sortby={"field": "arrivaltime", "type": "DESC"},
                                                    filters=[{"field": "status", "values": [{"value": "C"}]}]))
    assert newest_first[0]["transactionid"] == "T0009"
    by_text = list(tg_client.iter_transactions(search="PO000007"))
    assert [t["transactionid"] for t in by_text] == ["T0007"]


def test_failed_transactions_are_found_once_and_map_to_issues(tg_client, tg_emulator):
    state = tg_emulator.state
    cases = {"V": {"status": "V"}, "F": {"status": "F"}, "H": {"status": "H"}, "R": {"fastatus": "R"},
             "E": {"fastatus": "E"}, "T": {"fastatus": "T"}, "FR": {"status": "F", "fastatus": "R"},
             "U": {"status": "U"}, "ok": {"status": "C", "fastatus": "A"}}
    state.add_transactions([
        {**_transactions(1)[0], "transactionid": f"T-{name}", "correlationid": f"corr-{name}",
         "statusdate": "2026-02-02T00:00:00Z", "fastatusdate": "2026-02-02T01:00:00Z", **fields}
        for name, fields in cases.items()
    ])
    found = list(tg_client.iter_failed_transactions())
    assert sorted(t["transactionid"] for t in found) == sorted(f"T-{n}" for n in ("V", "F", "H", "R", "E", "T",
                                                                                   "FR"))
    issues = [lens_transaction_to_issue(t, our_trading_addresses=["ZZ:PARTNERLINK"]) for t in found]
    assert {i.tg_issue_id for i in issues} == {f"lens:corr-{n}" for n in ("V", "F", "H", "R", "E", "T", "FR")}
    assert all(i.category == "edi_transaction_failure" and i.partner_trading_addresses == ("ZZ:VERONA",)
               for i in issues)
    assert list(tg_client.iter_failed_transactions(since=datetime(2026, 3, 1, tzinfo=UTC))) == []


def test_failed_transactions_seeded_through_the_control_api(tg_client, tg_emulator):
    tg_emulator.state.create_partner({"company_id": "GC00804444LX", "name": "Verona Vittles",
                                      "trading_addresses": ["ZZ:VERONA"]})
    added = tg_emulator.control("POST", "/_emulator/lens/transactions",
                                {"generate": {"partner_company_id": "GC00804444LX", "count": 2, "status": "F"}})
    assert len(added["transactions"]) == 2
    found = list(tg_client.iter_failed_transactions())
    assert {t["transactionid"] for t in found} == {t["transactionid"] for t in added["transactions"]}


def _graphql(emulator, query):
    token = emulator.state.issue_token(emulator.state.client_id, emulator.state.client_secret)["access_token"]
    response = requests.post(f"{emulator.url}/visibility_transaction_search", json={"query": query},
                             headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert response.status_code == 200
    return response.json()


def test_the_emulator_answers_postman_style_queries(tg_emulator):
    tg_emulator.state.add_transactions(_transactions(3))
    # As in OpenText's collection: inline arguments, a single range object, no contentKeyFilters.
    answer = _graphql(tg_emulator, """
        query getTransactionsWithFilter { getTransactions(query: {
            count: 2 offset: 0 ranges: { field: arrivaltime from: "2026-02-01T00:00:00Z" to: "2026-02-02T00:00:00Z" }
        }) { count total offset transactions { transactionid contentkeys(names: ["purchase order number"]) {
            key value } } } }""")
    page = answer["data"]["getTransactions"]
    assert (page["count"], page["total"], page["offset"]) == (2, 3, 0)
    assert page["transactions"][0]["contentkeys"] is None  # only with contentKeyFilters, as on the real host


def test_lens_errors_become_api_errors(tg_client, tg_emulator):
    with pytest.raises(TradingGridAPIError) as caught:
        tg_client.get_transactions_page(filters=[{"field": "nosuchfield", "values": [{"value": "x"}]}])
    assert caught.value.code == "graphql_error"
    assert "nosuchfield" in caught.value.message
    answer = _graphql(tg_emulator, '{ getTransactions(query: {scroll: true, scrollid: "gone"}) { count } }')
    assert "unknown or has expired" in answer["errors"][0]["message"]


def test_query_literals_quote_values_and_not_enum_names():
    literal = _graphql_literal({"sortby": {"field": "arrivaltime", "type": "ASC"},
                                "filters": [{"field": "status", "values": [{"value": 'F"; drop', "not": False}]}],
                                "count": 5})
    assert literal == ('{sortby: {field: arrivaltime type: ASC} filters: [{field: status values: '
                       '[{value: "F\\"; drop" not: false}]}] count: 5}')
    with pytest.raises(ValueError):
        _graphql_literal({"sortby": {"field": "arrival time) { hack"}})
