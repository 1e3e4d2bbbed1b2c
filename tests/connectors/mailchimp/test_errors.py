"""Every way a Mailchimp call fails, mapped to errors.py."""

import logging
import socket

import pytest
from django.core.exceptions import ImproperlyConfigured

from connectors.mailchimp.client import MailchimpClient
from connectors.mailchimp.contract import ContractViolationError
from connectors.mailchimp.emulator import Fault
from connectors.mailchimp.errors import (
    MailchimpAPIError,
    MailchimpConfigurationError,
    MailchimpError,
    MailchimpTransientError,
)
from connectors.mailchimp.limiter import LocalConnectionLimiter
from connectors.mailchimp.payloads import MemberUpsert, MergeFieldSpec

from .conftest import API_KEY, AUDIENCE_ID


def _client(url: str, *, api_key: str = API_KEY, timeout: float = 5) -> MailchimpClient:
    return MailchimpClient(api_key=api_key, api_url=url, timeout=timeout, limiter=LocalConnectionLimiter(limit=10))


def test_wrong_api_key_is_a_401_api_error_and_the_key_is_never_logged(mailchimp_emulator, caplog):
    wrong_key = "fedcba9876543210fedcba9876543210-us21"
    with caplog.at_level(logging.WARNING, logger="connectors.mailchimp"), pytest.raises(MailchimpAPIError) as caught:
        _client(mailchimp_emulator.api_url, api_key=wrong_key).ping()
    error = caught.value
    assert (error.status, error.title, error.path) == (401, "API Key Invalid", "/3.0/ping")
    assert error.instance  # Mailchimp's request id, for support
    assert not isinstance(error, MailchimpTransientError)
    assert wrong_key not in str(error) and wrong_key not in caplog.text
    assert "status=401" in caplog.text and "API Key Invalid" in caplog.text and error.instance in caplog.text


def test_400_carries_the_field_errors(mailchimp_client):
    mailchimp_client.ensure_merge_fields(
        list_id=AUDIENCE_ID, fields=[MergeFieldSpec(tag="OPENISSUES", name="Open issues", type="number")]
    )
    with pytest.raises(MailchimpAPIError) as caught:
        mailchimp_client.upsert_member(
            list_id=AUDIENCE_ID,
            member=MemberUpsert(email="a@partner.example", merge_fields={"OPENISSUES": "many", "NOSUCH": "x"}),
        )
    error = caught.value
    assert (error.status, error.title) == (400, "Invalid Resource")
    assert {e.field for e in error.errors} == {"OPENISSUES", "NOSUCH"}
    assert "OPENISSUES" in str(error)


def test_a_request_breaking_the_spec_is_caught_by_the_contract_check_and_refused_by_the_emulator(
    mailchimp_client, mailchimp_contract
):
    with mailchimp_contract.expect_violations() as violations, pytest.raises(MailchimpAPIError) as caught:
        mailchimp_client._call(
            mailchimp_client._sdk.lists.set_list_member,
            AUDIENCE_ID,
            "0" * 32,
            {"email_address": "a@partner.example", "status_if_new": "maybe"},
        )
    assert violations[0].kind == "body" and violations[0].errors[0].field == "status_if_new"
    assert caught.value.status == 400 and caught.value.errors[0].field == "status_if_new"


def test_contract_check_stops_a_bad_request_before_it_is_sent(mailchimp_client, mailchimp_emulator, mailchimp_contract):
    before = len(mailchimp_emulator.request_log)
    with pytest.raises(ContractViolationError, match="status_if_new"):
        mailchimp_client._call(
            mailchimp_client._sdk.lists.set_list_member, AUDIENCE_ID, "0" * 32, {"email_address": "a@partner.example"}
        )
    assert len(mailchimp_emulator.request_log) == before  # never sent
    assert len(mailchimp_contract.violations) == 1
    mailchimp_contract.violations.clear()  # caused on purpose


def test_404_is_an_api_error(mailchimp_client):
    with pytest.raises(MailchimpAPIError) as caught:
        mailchimp_client.get_campaign(campaign_id="0123456789")
    assert caught.value.is_not_found and caught.value.title == "Resource Not Found"


def test_429_with_an_empty_body_is_transient_with_retry_after(mailchimp_client, mailchimp_emulator):
    mailchimp_emulator.faults.add(Fault(status=429, retry_after=7))
    with pytest.raises(MailchimpTransientError) as caught:
        mailchimp_client.ping()
    assert (caught.value.status, caught.value.retry_after) == (429, 7.0)
    assert mailchimp_client.ping() == "Everything's Chimpy!"  # the fault was for one request


@pytest.mark.parametrize(
    ("fault", "title"),
    [
        (Fault(status=500), "Internal Server Error"),  # problem+json: the SDK raises
        (Fault(status=503), ""),  # empty body: the SDK silently returns a requests.Response
        (Fault(status=403), ""),  # empty 403 under load
        (Fault(status=502, empty_body=True), ""),
    ],
)
def test_5xx_and_bodiless_answers_are_transient(mailchimp_client, mailchimp_emulator, fault, title):
    mailchimp_emulator.faults.add(fault)
    with pytest.raises(MailchimpTransientError) as caught:
        mailchimp_client.upsert_member(list_id=AUDIENCE_ID, member=MemberUpsert(email="a@partner.example"))
    assert caught.value.status == fault.status and caught.value.title == title
    assert caught.value.retry_after is None


def test_a_slow_answer_times_out_as_transient(mailchimp_emulator):
    mailchimp_emulator.faults.add(Fault(latency=3.0))
    with pytest.raises(MailchimpTransientError, match="timed out"):
        _client(mailchimp_emulator.api_url, timeout=0.3).ping()


def test_a_dropped_connection_is_transient(mailchimp_client, mailchimp_emulator):
    mailchimp_emulator.faults.add(Fault(drop=True, path="/ping"))
    with pytest.raises(MailchimpTransientError, match="connection failed"):
        mailchimp_client.ping()
    assert mailchimp_client.ping() == "Everything's Chimpy!"


def test_a_refused_connection_is_transient():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MailchimpTransientError, match="connection failed"):
        _client(f"http://127.0.0.1:{port}/3.0").ping()


def test_204_answers_are_success(mailchimp_client):
    mailchimp_client.upsert_member(list_id=AUDIENCE_ID, member=MemberUpsert(email="a@partner.example"))
    assert mailchimp_client.update_member_tags(list_id=AUDIENCE_ID, email="a@partner.example", active=["x"]) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_key": ""}, "MAILCHIMP_API_KEY is not set"),
        ({"api_key": "0123456789abcdef"}, "data centre"),
        ({"api_key": API_KEY, "api_url": "http://127.0.0.1:8301/"}, "ending in /3.0"),
        ({"api_key": API_KEY, "api_url": "http://server.local:8301/3.0"}, "must not contain the text 'server'"),
        ({"api_key": API_KEY, "timeout": 0}, "MAILCHIMP_TIMEOUT"),
    ],
)
def test_configuration_errors(kwargs, message):
    with pytest.raises(MailchimpConfigurationError, match=message) as caught:
        MailchimpClient(**kwargs)
    assert isinstance(caught.value, ImproperlyConfigured) and isinstance(caught.value, MailchimpError)
    assert API_KEY not in str(caught.value)


def test_the_data_centre_comes_from_the_key_or_the_setting():
    assert MailchimpClient(api_key=API_KEY).base_url == "https://us21.api.mailchimp.com/3.0"
    assert (
        MailchimpClient(api_key="0123456789abcdef", server_prefix="us6").base_url == "https://us6.api.mailchimp.com/3.0"
    )
    assert API_KEY not in repr(MailchimpClient(api_key=API_KEY))
