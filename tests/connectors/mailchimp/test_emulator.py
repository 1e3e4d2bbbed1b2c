"""The emulator behaves like Mailchimp where we rely on it: auth, validation, the connection cap,
batches, campaigns, webhooks to our receiver, the control API and the demo seed."""

import threading
import time

import pytest
import requests

from connectors.mailchimp.emulator import Fault, MailchimpEmulator
from connectors.mailchimp.payloads import MemberUpsert, subscriber_hash
from connectors.mailchimp.webhooks import FIRED_AT_FORMAT, parse_bracketed_form

from .conftest import API_KEY, AUDIENCE_ID


def api(emulator: MailchimpEmulator, method: str, path: str, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", ("anystring", API_KEY))
    return requests.request(method, f"{emulator.api_url}{path}", timeout=10, **kwargs)


def control(emulator: MailchimpEmulator, method: str, path: str, **kwargs) -> requests.Response:
    response = requests.request(method, f"{emulator.base_url}/_emulator{path}", timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    return response


def wait_for(condition, *, timeout: float = 10.0) -> None:
    """Bounded wait for something another thread does; fails the test if it never happens."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


# --- auth and validation ------------------------------------------------------------------------
def test_basic_auth_with_any_user_and_bearer_tokens(mailchimp_emulator):
    assert api(mailchimp_emulator, "GET", "/ping", auth=("someone-else", API_KEY)).status_code == 200
    assert api(mailchimp_emulator, "GET", "/ping", auth=None, headers={"Authorization": f"Bearer {API_KEY}"}).ok
    for auth in [("user", "wrong-us21"), None]:
        response = api(mailchimp_emulator, "GET", "/ping", auth=auth)
        assert response.status_code == 401
        assert response.headers["Content-Type"].startswith("application/problem+json")
        assert response.json()["title"] == "API Key Invalid"
    bearer = api(mailchimp_emulator, "GET", "/ping", auth=None, headers={"Authorization": "Bearer nope"})
    assert bearer.status_code == 401


def test_requests_are_validated_against_the_spec(mailchimp_emulator):
    bad = api(
        mailchimp_emulator,
        "PUT",
        f"/lists/{AUDIENCE_ID}/members/{'0' * 32}",
        json={"email_address": "a@partner.example", "status_if_new": "maybe", "vip": "yes"},
    )
    assert bad.status_code == 400
    problem = bad.json()
    assert problem["title"] == "Invalid Resource"
    assert {e["field"] for e in problem["errors"]} == {"status_if_new", "vip"}

    bad_query = api(mailchimp_emulator, "GET", "/reports/abc/email-activity", params={"count": 5000})
    assert bad_query.status_code == 400 and bad_query.json()["errors"][0]["field"] == "query.count"
    assert api(mailchimp_emulator, "GET", "/no/such/endpoint").status_code == 404
    assert api(mailchimp_emulator, "DELETE", "/ping").status_code == 405
    assert api(mailchimp_emulator, "GET", "/templates").status_code == 501


def test_the_sdk_quirks_are_accepted(mailchimp_emulator):
    # The SDK sends booleans as True/False and bodiless POSTs as `null`.
    response = api(
        mailchimp_emulator,
        "POST",
        f"/lists/{AUDIENCE_ID}",
        params={"skip_merge_validation": "True"},
        json={
            "members": [{"email_address": "a@partner.example", "status_if_new": "subscribed"}],
            "update_existing": True,
        },
    )
    assert response.status_code == 200 and response.json()["total_created"] == 1
    members = api(
        mailchimp_emulator, "GET", f"/lists/{AUDIENCE_ID}/segments/1/members", params={"include_cleaned": "False"}
    )
    assert members.status_code == 404  # validated fine; there is just no segment 1
    null_post = api(
        mailchimp_emulator,
        "POST",
        "/campaigns/nope/actions/send",
        data="null",
        headers={"Content-Type": "application/json"},
    )
    assert null_post.status_code == 404 and null_post.json()["title"] == "Resource Not Found"


# --- the connection cap -------------------------------------------------------------------------
def test_the_11th_concurrent_connection_gets_an_empty_429(mailchimp_emulator):
    mailchimp_emulator.hold()
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(api(mailchimp_emulator, "GET", "/ping").status_code))
        for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: mailchimp_emulator.stats()["in_flight"] == 10)
        eleventh = api(mailchimp_emulator, "GET", "/ping")
        assert eleventh.status_code == 429
        assert eleventh.content == b""
    finally:
        mailchimp_emulator.release()
        for thread in threads:
            thread.join(timeout=10)
    assert results == [200] * 10
    assert mailchimp_emulator.stats()["max_in_flight"] == 10
    assert mailchimp_emulator.stats()["rejected_for_concurrency"] == 1


# --- batches and campaigns ----------------------------------------------------------------------
def test_a_batch_moves_pending_started_finished_one_step_per_poll(mailchimp_emulator):
    operation = {"method": "GET", "path": "/ping", "operation_id": "p"}
    batch = api(mailchimp_emulator, "POST", "/batches", json={"operations": [operation]}).json()
    assert (batch["status"], batch["response_body_url"]) == ("pending", "")
    steps = [api(mailchimp_emulator, "GET", f"/batches/{batch['id']}").json()["status"] for _ in range(3)]
    assert steps == ["started", "finished", "finished"]
    url = api(mailchimp_emulator, "GET", f"/batches/{batch['id']}").json()["response_body_url"]
    download = requests.get(url, timeout=10)  # no credentials: it stands in for a pre-signed storage URL
    assert download.ok and download.content[:2] == b"\x1f\x8b"


def test_a_scheduled_campaign_is_sent_when_its_time_comes(mailchimp_client, mailchimp_emulator):
    import datetime as dt

    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="r@partner.example")
    campaign = mailchimp_client.create_campaign(
        list_id=AUDIENCE_ID, subject_line="s", from_name="f", reply_to="f@example.com"
    )
    mailchimp_client.set_campaign_content(campaign_id=campaign["id"], html="<p>hi</p>")
    slot = mailchimp_client.schedule_campaign(
        campaign_id=campaign["id"], send_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    )
    mailchimp_emulator.state.clock = lambda: slot + dt.timedelta(seconds=1)
    assert mailchimp_client.get_campaign(campaign_id=campaign["id"])["status"] == "sending"
    assert mailchimp_client.get_campaign(campaign_id=campaign["id"])["status"] == "sent"


# --- webhooks to our receiver -------------------------------------------------------------------
def _posts(emulator: MailchimpEmulator, receiver) -> list[dict]:
    assert emulator.webhooks.drain(timeout=10)
    return [parse_bracketed_form(request.form) for request in receiver.posts()]


def test_webhooks_follow_api_changes_only_when_sources_api_is_on(
    mailchimp_client, mailchimp_emulator, webhook_receiver
):
    mailchimp_client.create_list_webhook(
        list_id=AUDIENCE_ID,
        url=webhook_receiver.url,
        events=["subscribe", "unsubscribe", "profile"],
        sources=["user", "admin"],
    )
    mailchimp_client.upsert_member(list_id=AUDIENCE_ID, member=MemberUpsert(email="api@partner.example"))
    mailchimp_emulator.unsubscribe_member(list_id=AUDIENCE_ID, email="api@partner.example")  # the person did it
    posts = _posts(mailchimp_emulator, webhook_receiver)
    assert [post["type"] for post in posts] == ["unsubscribe"]


def test_webhooks_for_every_event_type(mailchimp_client, mailchimp_emulator, webhook_receiver):
    mailchimp_client.create_list_webhook(
        list_id=AUDIENCE_ID,
        url=webhook_receiver.url,
        events=["subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign"],
        sources=["user", "admin", "api"],
    )
    assert webhook_receiver.requests[0].method == "GET"

    mailchimp_client.upsert_member(
        list_id=AUDIENCE_ID, member=MemberUpsert(email="ada@partner.example", merge_fields={"FNAME": "Ada"})
    )
    mailchimp_emulator.update_member_profile(
        list_id=AUDIENCE_ID, email="ada@partner.example", merge_fields={"LNAME": "Lovelace"}
    )
    mailchimp_emulator.change_member_email(
        list_id=AUDIENCE_ID, email="ada@partner.example", new_email="ada.l@partner.example"
    )
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="bounce@partner.example")
    mailchimp_emulator.clean_member(list_id=AUDIENCE_ID, email="bounce@partner.example", campaign_id="c1")
    campaign = mailchimp_client.create_campaign(
        list_id=AUDIENCE_ID, subject_line="News", from_name="PL", reply_to="pl@example.com"
    )
    mailchimp_client.set_campaign_content(campaign_id=campaign["id"], html="<p>x</p>")
    mailchimp_emulator.unsubscribe_member(list_id=AUDIENCE_ID, email="ada.l@partner.example", campaign_id="c1")
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="reader@partner.example", source="admin")
    mailchimp_emulator.send_campaign_now(campaign_id=campaign["id"])

    posts = _posts(mailchimp_emulator, webhook_receiver)
    by_type = {}
    for post in posts:
        by_type.setdefault(post["type"], []).append(post)
    assert set(by_type) == {"subscribe", "profile", "upemail", "cleaned", "unsubscribe", "campaign"}
    assert all(
        request.headers["Content-Type"] == "application/x-www-form-urlencoded" for request in webhook_receiver.posts()
    )
    subscribe = by_type["subscribe"][0]
    assert subscribe["data"]["email"] == "ada@partner.example" and subscribe["data"]["merges"]["FNAME"] == "Ada"
    assert subscribe["data"]["list_id"] == AUDIENCE_ID and subscribe["data"]["email_type"] == "html"
    time.strptime(subscribe["fired_at"], FIRED_AT_FORMAT)
    assert by_type["profile"][0]["data"]["merges"]["LNAME"] == "Lovelace"
    assert by_type["upemail"][0]["data"] == {
        "list_id": AUDIENCE_ID,
        "new_id": by_type["upemail"][0]["data"]["new_id"],
        "new_email": "ada.l@partner.example",
        "old_email": "ada@partner.example",
    }
    assert by_type["cleaned"][0]["data"] == {
        "list_id": AUDIENCE_ID,
        "campaign_id": "c1",
        "reason": "hard",
        "email": "bounce@partner.example",
    }
    unsubscribe = by_type["unsubscribe"][0]["data"]
    assert (unsubscribe["action"], unsubscribe["reason"], unsubscribe["campaign_id"]) == ("unsub", "manual", "c1")
    assert by_type["campaign"][0]["data"] == {
        "id": campaign["id"],
        "subject": "News",
        "status": "sent",
        "reason": "",
        "list_id": AUDIENCE_ID,
    }


# --- control API --------------------------------------------------------------------------------
def test_control_api_over_http(mailchimp_emulator, webhook_receiver):
    base = f"/lists/{AUDIENCE_ID}/members"
    control(mailchimp_emulator, "POST", base, json={"email": "c@partner.example", "merge_fields": {"FNAME": "C"}})
    control(mailchimp_emulator, "POST", f"{base}/c@partner.example/profile", json={"merge_fields": {"LNAME": "D"}})
    control(mailchimp_emulator, "POST", f"{base}/{subscriber_hash('c@partner.example')}/unsubscribe", json={})
    control(
        mailchimp_emulator, "POST", f"{base}/c@partner.example/change-email", json={"new_email": "e@partner.example"}
    )
    control(mailchimp_emulator, "POST", base, json={"email": "b@partner.example"})
    control(mailchimp_emulator, "POST", f"{base}/b@partner.example/clean", json={"reason": "abuse"})
    control(mailchimp_emulator, "POST", base, json={"email": "f@partner.example"})
    control(mailchimp_emulator, "POST", f"{base}/f@partner.example/forget")
    members = {m["email_address"]: m for m in control(mailchimp_emulator, "GET", base).json()}
    assert members["e@partner.example"]["status"] == "unsubscribed"
    assert members["e@partner.example"]["merge_fields"]["LNAME"] == "D"
    assert members["b@partner.example"]["status"] == "cleaned"
    assert "f@partner.example" not in members

    journey = control(
        mailchimp_emulator, "POST", "/journeys", json={"list_id": AUDIENCE_ID, "name": "J", "steps": {"7": "Welcome"}}
    ).json()
    control(mailchimp_emulator, "POST", base, json={"email": "j@partner.example"})
    assert (
        api(
            mailchimp_emulator,
            "POST",
            f"/customer-journeys/journeys/{journey['id']}/steps/7/actions/trigger",
            json={"email_address": "j@partner.example"},
        ).status_code
        == 204
    )
    assert control(mailchimp_emulator, "GET", "/journey-triggers").json()[0]["email_address"] == "j@partner.example"

    control(mailchimp_emulator, "POST", "/faults", json={"status": 503, "times": 2, "path": "/ping"})
    assert [api(mailchimp_emulator, "GET", "/ping").status_code for _ in range(3)] == [503, 503, 200]
    control(mailchimp_emulator, "POST", "/faults", json={"status": 429, "times": None, "retry_after": 4})
    limited = api(mailchimp_emulator, "GET", "/ping")
    assert (limited.status_code, limited.headers["Retry-After"], limited.content) == (429, "4", b"")
    control(mailchimp_emulator, "DELETE", "/faults")
    assert api(mailchimp_emulator, "GET", "/ping").ok

    state = control(mailchimp_emulator, "GET", "/state").json()
    assert state["lists"][AUDIENCE_ID]["forgotten"] == [subscriber_hash("f@partner.example")]
    assert state["stats"]["max_connections"] == 10 and "webhook_deliveries" in state
    control(mailchimp_emulator, "POST", "/reset")
    assert control(mailchimp_emulator, "GET", "/state").json()["lists"][AUDIENCE_ID]["members"] == []


def test_control_api_refuses_nonsense(mailchimp_emulator):
    response = requests.post(f"{mailchimp_emulator.base_url}/_emulator/faults", json={"times": 1}, timeout=10)
    assert response.status_code == 400 and "fault needs" in response.json()["detail"]
    missing = requests.post(
        f"{mailchimp_emulator.base_url}/_emulator/lists/{AUDIENCE_ID}/members/x@y.z/unsubscribe", json={}, timeout=10
    )
    assert missing.status_code == 404


def test_fault_rates_from_the_environment():
    from connectors.mailchimp.emulator import faults_from_env

    faults = faults_from_env(
        {
            "MAILCHIMP_EMULATOR_LATENCY_MS": "250",
            "MAILCHIMP_EMULATOR_429_RATE": "0.1",
            "MAILCHIMP_EMULATOR_503_RATE": "0.05",
            "MAILCHIMP_EMULATOR_DROP_RATE": "0.01",
        }
    )
    assert [(f.latency, f.status, f.drop, f.probability, f.times) for f in faults] == [
        (0.25, None, False, 1.0, None),
        (0.0, 429, False, 0.1, None),
        (0.0, 503, False, 0.05, None),
        (0.0, None, True, 0.01, None),
    ]
    assert faults[1].retry_after == 1 and faults[1].answers_empty and not Fault(status=500).answers_empty


def test_demo_seed(mailchimp_emulator, mailchimp_client):
    demo = control(mailchimp_emulator, "POST", "/seed-demo").json()
    assert demo["list_id"] == AUDIENCE_ID
    assert [j["id"] for j in demo["journeys"]] == [4101, 4102]
    tags = {f["tag"] for f in mailchimp_client.get_merge_fields(list_id=AUDIENCE_ID)}
    assert {"BUID", "PTYPE", "REGION", "COUNTRY", "PRODLINES", "TIER", "OBSTATUS", "OPENISSUES", "PMGR"} <= tags
    for campaign in demo["campaigns"]:
        report = mailchimp_client.get_campaign_report(campaign_id=campaign["id"])
        assert report["emails_sent"] > 0
    subscribed = [
        email for email, m in mailchimp_emulator.members(list_id=AUDIENCE_ID).items() if m["status"] == "subscribed"
    ]
    mailchimp_client.trigger_journey_step(journey_id=4101, step_id=41011, email=subscribed[0])
    assert mailchimp_emulator.journey_triggers()[0]["step_id"] == 41011


def test_the_management_command_serves_the_seeded_demo():
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "mailchimp_emulator", "--port", str(port), "--seed-demo"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        assert lines[0].startswith(f"Mailchimp emulator on http://127.0.0.1:{port}/3.0"), lines
        assert lines[1].strip() == f"Demo audience {AUDIENCE_ID}"
        assert lines[2].startswith("  journey 4101 Partner onboarding: steps 41011 Welcome")
        wait_for(lambda: _answers(port))
        ping = requests.get(f"http://127.0.0.1:{port}/3.0/ping", auth=("u", API_KEY), timeout=5)
        assert ping.json() == {"health_status": "Everything's Chimpy!"}
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/_emulator/stats", timeout=1).ok
    except requests.ConnectionError:
        return False
