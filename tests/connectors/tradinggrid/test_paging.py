"""Paging: every page followed, short and empty pages, lists that grow, shrink or reorder while we walk them."""

import json
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from requests.adapters import BaseAdapter

from connectors.tradinggrid.client import TradingGridClient

PARTNER = {"company_id": "GC00804444LX", "name": "Verona Vittles", "trading_addresses": ["ZZ:VERONA"]}


@pytest.fixture
def supplier(tg_emulator):
    tg_emulator.state.create_partner(PARTNER)


def _raise(state, n, prefix="Issue"):
    return [state.create_issue({"partner_company_id": "GC00804444LX", "title": f"{prefix} {i}"})["id"]
            for i in range(n)]


def _list_requests(state, path="/community/v1/issues"):
    return [parse_qs(r["query"]) for r in state.requests if r["path"] == path]


def test_every_page_is_followed_even_when_the_host_answers_short_pages(tg_client, tg_emulator, supplier):
    ids = _raise(tg_emulator.state, 25)
    tg_emulator.state.page_size_cap = 7  # we ask for 10, the host gives 7
    assert [i["id"] for i in tg_client.iter_issues(page_size=10)] == ids
    assert len(_list_requests(tg_emulator.state)) == 4


def test_we_never_ask_for_more_than_1000(tg_client, tg_emulator, supplier):
    _raise(tg_emulator.state, 3)
    list(tg_client.iter_issues(page_size=5000))
    list(tg_client.iter_issue_comments(issue_id="ISS-000001", page_size=5000))
    counts = [int(q["count"][0]) for q in _list_requests(tg_emulator.state)]
    assert counts == [1000]
    over = requests.get(f"{tg_emulator.url}/community/v1/issues?count=1001",
                        headers={"Authorization": f"Bearer {next(iter(tg_emulator.state.tokens))}"}, timeout=5)
    assert over.status_code == 400 and over.json()["error"]["details"][0]["field"] == "count"


def test_items_added_while_paging_are_picked_up_once(tg_client, tg_emulator, supplier):
    state = tg_emulator.state
    first_ids = _raise(state, 10)
    state.page_size_cap = 4
    added: list[str] = []

    def add_after_first_page(entry):
        if entry["path"] == "/community/v1/issues" and not added:
            added.extend(_raise(state, 3, prefix="Late"))

    state.after_request_hooks.append(add_after_first_page)
    seen = [i["id"] for i in tg_client.iter_issues()]
    assert seen == first_ids + added
    assert len(seen) == len(set(seen)) == 13


def test_an_item_that_changes_mid_walk_does_not_hide_another(tg_client, tg_emulator, supplier):
    # Offset paging would skip the 5th issue here: the 1st moves to the end just after the first page.
    state = tg_emulator.state
    ids = _raise(state, 8)
    state.page_size_cap = 4
    moved: list[dict] = []

    def update_first_issue(entry):
        if entry["path"] == "/community/v1/issues" and not moved:
            moved.append(state.update_issue(ids[0], {"status": "acknowledged"}))

    state.after_request_hooks.append(update_first_issue)
    walked = list(tg_client.iter_issues())
    assert [i["id"] for i in walked] == ids + [ids[0]]  # everything, and the changed one again…
    assert walked[0]["status"] == "open" and walked[-1]["status"] == "acknowledged"  # …with its newer state
    assert {i["id"] for i in walked} == set(ids)


def test_polling_with_updated_since_finds_only_what_changed(tg_client, tg_emulator, supplier):
    state = tg_emulator.state
    ids = _raise(state, 5)
    checkpoint = state.get_issue(ids[-1])["updated_at"]
    changed = state.update_issue(ids[1], {"status": "under_review"}, emit=True)
    assert [i["id"] for i in tg_client.iter_issues(updated_since=checkpoint)] == [ids[-1], changed["id"]]


# --- Scripted hosts: shapes the emulator never produces by itself ----------------------------------


class ScriptedHost(BaseAdapter):
    """Answers the token call, and list calls from `pages(offset, count, call_number) -> (items, total)`."""

    def __init__(self, pages):
        super().__init__()
        self.pages = pages
        self.calls: list[tuple[int, int]] = []

    def send(self, request, **kwargs):
        url = urlparse(request.url)
        if url.path == "/v1/oauth2/tokens":
            body = {"access_token": "scripted-token", "expires_in": 3600}
        else:
            query = parse_qs(url.query)
            offset, count = int(query["offset"][0]), int(query["count"][0])
            self.calls.append((offset, count))
            items, total = self.pages(offset, count, len(self.calls))
            body = {"total": total, "offset": offset, "count": len(items), "items": items}
        response = requests.Response()
        response.status_code = 200
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.url = request.url
        response.request = request
        return response

    def close(self):
        pass


def scripted_client(pages, settings):
    host = ScriptedHost(pages)
    session = requests.Session()
    session.mount("http://scripted.test", host)
    client = TradingGridClient(base_url="http://scripted.test", client_id="c", client_secret="s",
                               company_id=settings.TRADINGGRID_COMPANY_ID, session=session, sleep=lambda s: None)
    return client, host


def _items(*numbers):
    return [{"id": f"C{n}"} for n in numbers]


def test_an_empty_page_ends_the_walk_even_if_total_said_more(settings):
    client, host = scripted_client(lambda offset, count, call: (_items(1, 2) if call == 1 else [], 10), settings)
    assert [c["id"] for c in client.iter_issue_comments(issue_id="X", page_size=2)] == ["C1", "C2"]
    assert host.calls == [(0, 2), (2, 2)]


def test_an_empty_list_is_one_call(settings):
    client, host = scripted_client(lambda offset, count, call: ([], 0), settings)
    assert list(client.iter_webhook_subscriptions()) == []
    assert host.calls == [(0, 1000)]


def test_a_shrinking_total_steps_back_so_nothing_is_skipped(settings):
    # C1..C6 in pages of 3; after the first page C2 is deleted, so C4 moves to offset 2.
    def pages(offset, count, call):
        current = [1, 2, 3, 4, 5, 6] if call == 1 else [1, 3, 4, 5, 6]
        return _items(*current[offset:offset + count]), len(current)

    client, host = scripted_client(pages, settings)
    walked = [c["id"] for c in client.iter_issue_comments(issue_id="X", page_size=3)]
    assert sorted(walked) == ["C1", "C2", "C3", "C4", "C5", "C6"]  # C4 is not lost, nothing comes twice
    assert [offset for offset, _ in host.calls] == [0, 3, 2]


def test_a_growing_total_with_items_inserted_in_front_yields_no_duplicates(settings):
    def pages(offset, count, call):
        current = [1, 2, 3, 4] if call == 1 else [0, 1, 2, 3, 4]  # C0 inserted at the front
        return _items(*current[offset:offset + count]), len(current)

    client, _ = scripted_client(pages, settings)
    assert [c["id"] for c in client.iter_issue_comments(issue_id="X", page_size=2)] == ["C1", "C2", "C3", "C4"]


def test_a_host_that_keeps_repeating_itself_cannot_loop_forever(settings):
    client, host = scripted_client(lambda offset, count, call: (_items(1), 1_000_000), settings)
    assert [c["id"] for c in client.iter_issue_comments(issue_id="X", page_size=1)] == ["C1"]
    assert len(host.calls) == 4  # the first page, then three that brought nothing new


def test_an_unordered_host_is_walked_by_offset(settings):
    # updated_at not ascending: the cursor walk would lose items, so the client falls back to offsets.
    everything = [{"id": f"I{n}", "updated_at": f"2026-01-0{9 - n}T00:00:00Z"} for n in range(1, 7)]

    def pages(offset, count, call):
        return everything[offset:offset + count], len(everything)

    client, host = scripted_client(pages, settings)
    assert [i["id"] for i in client.iter_issues(page_size=2)] == [f"I{n}" for n in range(1, 7)]
    assert [c[0] for c in host.calls] == [0, 2, 4]


def test_a_page_full_of_one_moment_moves_along_by_offset(settings):
    moment = "2026-01-01T00:00:00Z"
    everything = [{"id": f"I{n}", "updated_at": moment} for n in range(5)] + [
        {"id": "I5", "updated_at": "2026-01-02T00:00:00Z"}]

    def pages(offset, count, call):
        return everything[offset:offset + count], len(everything)

    client, _ = scripted_client(pages, settings)
    # All equal stamps: the cursor cannot advance, so the walk steps through the tie by offset.
    assert [i["id"] for i in client.iter_issues(page_size=2, updated_since=moment)] == [f"I{n}" for n in range(6)]


def test_a_host_ignoring_the_cursor_cannot_loop_forever(settings):
    same = [{"id": "I1", "updated_at": "2026-01-01T00:00:00Z"}]
    client, host = scripted_client(lambda offset, count, call: (same, 1_000_000), settings)
    assert [i["id"] for i in client.iter_issues(page_size=1)] == ["I1"]
    assert len(host.calls) == 4
