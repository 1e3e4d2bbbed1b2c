"""OAuth2: one token shared through Django's cache, refreshed once on a 401, never logged."""

import logging

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from connectors.tradinggrid.client import TradingGridClient, get_client, reset_client
from connectors.tradinggrid.errors import TradingGridAuthError, TradingGridConfigurationError


def test_many_calls_need_one_token(tg_client, tg_emulator):
    for _ in range(5):
        tg_client.get_company()
    list(tg_client.iter_issues())
    assert tg_emulator.state.token_requests == 1


def test_workers_share_the_token_through_the_cache(tg_settings, tg_emulator):
    first = TradingGridClient.from_settings()
    second = TradingGridClient.from_settings()  # another worker: its own session, the same cache
    first.get_company()
    second.get_company()
    assert tg_emulator.state.token_requests == 1
    assert cache.get(first.token_cache_key)["token"] in tg_emulator.state.tokens


def test_an_expired_token_is_refreshed_once_and_the_call_succeeds(tg_client, tg_emulator):
    tg_client.get_company()
    tg_emulator.state.expire_tokens()
    assert tg_client.get_company()["companyId"] == "GC00000001PL"
    assert tg_emulator.state.token_requests == 2
    statuses = [r["status"] for r in tg_emulator.state.requests if r["path"].endswith("/GC00000001PL")]
    assert statuses == [200, 401, 200]


def test_a_second_401_after_refreshing_is_an_error(tg_client, tg_emulator):
    tg_emulator.state.token_ttl = 0  # every token is born expired
    with pytest.raises(TradingGridAuthError) as caught:
        tg_client.get_company()
    assert caught.value.status == 401
    assert tg_emulator.state.token_requests == 2  # the first token and exactly one refresh


def test_another_workers_fresh_token_is_not_thrown_away(tg_settings, tg_emulator):
    first = TradingGridClient.from_settings()
    first.get_company()
    stale = cache.get(first.token_cache_key)["token"]
    tg_emulator.state.expire_tokens()
    second = TradingGridClient.from_settings()
    cache.delete(second.token_cache_key)
    second.get_company()  # a new token lands in the cache
    fresh = cache.get(first.token_cache_key)["token"]
    first._forget_token(stale)  # what a 401 on the stale token does
    assert cache.get(first.token_cache_key)["token"] == fresh


def test_refused_credentials_are_an_auth_error_without_the_secret(tg_settings, tg_emulator):
    client = TradingGridClient.from_settings(client_secret="wrong-secret-value")
    with pytest.raises(TradingGridAuthError) as caught:
        client.get_company()
    assert caught.value.status == 401
    assert caught.value.code == "invalid_client"
    assert "wrong-secret-value" not in str(caught.value)


def test_the_token_never_appears_in_logs(tg_client, tg_emulator, caplog):
    caplog.set_level(logging.DEBUG, logger="connectors.tradinggrid")
    tg_client.get_company()
    tg_emulator.state.expire_tokens()
    tg_client.get_company()
    logged = caplog.text
    assert caplog.records
    for token in tg_emulator.state.tokens:
        assert token not in logged
    assert "test-secret" not in logged


def test_a_short_lived_token_is_still_reused(tg_client, tg_emulator):
    tg_emulator.state.token_ttl = 60
    tg_client.get_company()
    tg_client.get_company()
    assert tg_emulator.state.token_requests == 1


class BrokenCache:
    def get(self, *args, **kwargs):
        raise ConnectionError("redis is down")

    set = delete = get


def test_a_cache_outage_falls_back_to_the_process_copy(tg_settings, tg_emulator):
    client = TradingGridClient.from_settings(cache=BrokenCache())
    client.get_company()
    client.get_company()
    assert tg_emulator.state.token_requests == 1


@pytest.mark.parametrize("missing", ["TRADINGGRID_API_URL", "TRADINGGRID_CLIENT_ID", "TRADINGGRID_CLIENT_SECRET",
                                     "TRADINGGRID_COMPANY_ID"])
def test_missing_settings_are_named(settings, missing):
    setattr(settings, missing, "")
    reset_client()
    with pytest.raises(TradingGridConfigurationError, match=missing) as caught:
        get_client()
    assert isinstance(caught.value, ImproperlyConfigured)


def test_get_client_is_one_per_process(tg_settings):
    assert get_client() is get_client()
    first = get_client()
    reset_client()
    assert get_client() is not first


def test_timeouts_are_explicit_connect_and_read(settings):
    settings.TRADINGGRID_TIMEOUT = 12.0
    client = TradingGridClient.from_settings()
    assert client.timeout == (5.0, 12.0)
    assert TradingGridClient.from_settings(timeout=(1.0, 2.0)).timeout == (1.0, 2.0)
