"""Retries: 429 (Retry-After honoured), 5xx and dropped connections, bounded, with an injected sleeper.

The client's jitter is fixed at 0.5 by the fixture, so the full-jitter backoff is 0.25, 0.5, 1.0… seconds."""

import socket
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from connectors.tradinggrid.client import TradingGridClient, _parse_retry_after
from connectors.tradinggrid.errors import (
    TradingGridAPIError,
    TradingGridAuthError,
    TradingGridNotFoundError,
    TradingGridTransientError,
)

COMPANY_PATH = "/TGCommunityServices/v1/companies/GC00000001PL"


def _calls(state, path):
    return [r for r in state.requests if r["path"] == path]


def test_429_with_retry_after_waits_as_told(tg_client, tg_emulator, tg_sleeps):
    tg_emulator.state.add_faults([{"status": 429, "retry_after": 2, "path": COMPANY_PATH, "times": 2}])
    assert tg_client.get_company()["companyId"] == "GC00000001PL"
    assert tg_sleeps == [2.0, 2.0]
    assert [r["status"] for r in _calls(tg_emulator.state, COMPANY_PATH)] == [429, 429, 200]


def test_429_without_a_body_or_retry_after_backs_off_with_jitter(tg_client, tg_emulator, tg_sleeps):
    tg_emulator.state.add_faults([{"status": 429, "body": False, "path": COMPANY_PATH, "times": 3}])
    tg_client.get_company()
    assert tg_sleeps == [0.25, 0.5, 1.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_on_reads_are_retried(tg_client, tg_emulator, tg_sleeps, status):
    tg_emulator.state.add_faults([{"status": status, "path": COMPANY_PATH, "times": 1}])
    assert tg_client.get_company()["companyId"] == "GC00000001PL"
    assert len(tg_sleeps) == 1


def test_a_dropped_connection_on_a_read_is_retried(tg_client, tg_emulator, tg_sleeps):
    tg_emulator.state.add_faults([{"kind": "drop", "path": COMPANY_PATH, "times": 2}])
    assert tg_client.get_company()["companyId"] == "GC00000001PL"
    assert tg_sleeps == [0.25, 0.5]


def test_a_dropped_token_request_is_retried(tg_client, tg_emulator, tg_sleeps):
    tg_emulator.state.add_faults([{"kind": "drop", "path": "/v1/oauth2/tokens", "times": 1}])
    tg_client.get_company()
    assert tg_emulator.state.token_requests == 1
    assert len(tg_sleeps) == 1


def test_retries_are_bounded_and_end_in_a_transient_error(tg_client, tg_emulator, tg_sleeps):
    tg_emulator.state.add_faults([{"status": 503, "retry_after": 7, "path": COMPANY_PATH, "times": None}])
    with pytest.raises(TradingGridTransientError) as caught:
        tg_client.get_company()
    assert caught.value.status == 503
    assert caught.value.retry_after == 7.0
    assert len(_calls(tg_emulator.state, COMPANY_PATH)) == tg_client.max_attempts == 4
    assert tg_sleeps == [7.0, 7.0, 7.0]


def test_a_retry_after_beyond_our_patience_is_handed_to_the_caller(tg_settings, tg_emulator, tg_sleeps):
    client = TradingGridClient.from_settings(sleep=tg_sleeps.append, max_retry_after=30)
    tg_emulator.state.add_faults([{"status": 429, "retry_after": 120, "path": COMPANY_PATH, "times": None}])
    with pytest.raises(TradingGridTransientError) as caught:
        client.get_company()
    assert caught.value.retry_after == 120.0
    assert tg_sleeps == []  # the task reschedules itself instead of blocking a worker


def test_a_create_is_retried_when_the_host_surely_did_not_act(tg_client, tg_emulator, tg_sleeps):
    tg_emulator.state.add_faults([
        {"status": 429, "path": "/community/v1/posts", "times": 1},
        {"status": 503, "path": "/community/v1/posts", "times": 1},
    ])
    post = tg_client.create_post(post={"title": "Policy update", "body_html": "<p>New terms</p>"})
    assert post["id"] and len(tg_emulator.state.posts) == 1
    assert len(tg_sleeps) == 2


@pytest.mark.parametrize("fault", [{"status": 500}, {"kind": "drop"}])
def test_a_create_is_not_repeated_when_the_host_may_have_acted(tg_client, tg_emulator, tg_sleeps, fault):
    tg_emulator.state.add_faults([{**fault, "path": "/community/v1/posts", "times": 1}])
    with pytest.raises(TradingGridTransientError):
        tg_client.create_post(post={"title": "Policy update", "body_html": "<p>New terms</p>"})
    assert len(_calls(tg_emulator.state, "/community/v1/posts")) == 1
    assert tg_sleeps == []


def test_a_read_timeout_is_retried(tg_settings, tg_emulator, tg_sleeps):
    client = TradingGridClient.from_settings(sleep=tg_sleeps.append, timeout=(1.0, 0.2))
    client.get_company()  # token first, so only the slow call is measured
    tg_emulator.state.add_faults([{"kind": "latency", "seconds": 0.5, "path": COMPANY_PATH, "times": 1}])
    assert client.get_company()["companyId"] == "GC00000001PL"
    assert len(tg_sleeps) == 1


def test_a_refused_connection_is_retried_then_transient(settings, tg_sleeps):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = TradingGridClient.from_settings(base_url=f"http://127.0.0.1:{port}", sleep=tg_sleeps.append,
                                             random=lambda: 1.0)
    with pytest.raises(TradingGridTransientError) as caught:
        client.get_company()
    assert caught.value.status is None
    assert tg_sleeps == [0.5, 1.0, 2.0]


def test_backoff_is_capped(settings):
    client = TradingGridClient.from_settings(random=lambda: 1.0, backoff_base=1.0, backoff_max=5.0)
    assert [client._backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_client_errors_are_not_retried_and_keep_the_contract_error(tg_client, tg_emulator, tg_sleeps):
    with pytest.raises(TradingGridNotFoundError) as missing:
        tg_client.get_issue(issue_id="ISS-404")
    assert missing.value.status == 404 and missing.value.code == "not_found"
    with pytest.raises(TradingGridAPIError) as invalid:
        tg_client.create_document(document={"kind": "memo", "title": "x"})
    assert invalid.value.status == 400
    assert invalid.value.code == "validation_error"
    assert invalid.value.details == [{"field": "kind", "message": "must be one of policy, trading_terms, "
                                                                  "operational_guide"}]
    with pytest.raises(TradingGridAuthError) as forbidden:
        tg_client.get_company(company_id="GC99999999ZZ")
    assert forbidden.value.status == 403
    assert tg_sleeps == []


def test_retry_after_may_be_an_http_date():
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 25 <= _parse_retry_after(format_datetime(later, usegmt=True)) <= 30
    assert _parse_retry_after("3") == 3.0
    assert _parse_retry_after("soon") is None
    assert _parse_retry_after(None) is None
