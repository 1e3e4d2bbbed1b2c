"""The emulator itself: OAuth like the real host, the control API, signed webhooks with retries, faults,
seeding, thread safety, and the management command."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from connectors.tradinggrid.emulator import EmulatorState, demo_partners, faults_from_env, seed
from connectors.tradinggrid.emulator.server import build_state
from connectors.tradinggrid.emulator.state import parse_moment
from connectors.tradinggrid.payloads import partner_from_tg, webhook_event_from_tg
from connectors.tradinggrid.webhooks import verify_webhook

PARTNER = {
    "company_id": "GC00804444LX",
    "name": "Verona Vittles",
    "trading_addresses": ["ZZ:VERONA"],
    "partner_type": "supplier",
    "onboarding_status": "testing",
}
COMPANY_URL = "/TGCommunityServices/v1/companies/GC00000001PL"


def _subscribe(tg_emulator, receiver, settings, event_types=()):
    return tg_emulator.state.create_subscription({"url": receiver.url, "event_types": list(event_types),
                                                  "secret": settings.TRADINGGRID_WEBHOOK_SECRETS[0]})


def _verified(receiver, settings):
    """Every body the receiver got, verified as the project's webhook view will."""
    return [
        verify_webhook(body=r["body"], headers=r["headers"], secrets=settings.TRADINGGRID_WEBHOOK_SECRETS)
        for r in receiver.received
    ]


# --- OAuth -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "code"),
    [(None, "unauthorized"), ("Bearer not-a-token", "invalid_token"), ("Basic dGVzdDp0ZXN0", "unauthorized")],
)
def test_calls_without_a_good_token_get_401(tg_emulator, authorization, code):
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.get(f"{tg_emulator.url}{COMPANY_URL}", headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_tokens_expire(tg_emulator):
    state = tg_emulator.state
    token = state.issue_token(state.client_id, state.client_secret)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(f"{tg_emulator.url}{COMPANY_URL}", headers=headers, timeout=5).status_code == 200
    tg_emulator.control("POST", "/_emulator/tokens/expire")
    expired = requests.get(f"{tg_emulator.url}{COMPANY_URL}", headers=headers, timeout=5)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


def test_the_token_endpoint_checks_grant_and_credentials(tg_emulator, settings):
    url = f"{tg_emulator.url}/v1/oauth2/tokens"
    good = (settings.TRADINGGRID_CLIENT_ID, settings.TRADINGGRID_CLIENT_SECRET)
    assert requests.post(url, params={"grant_type": "password"}, auth=good, timeout=5).status_code == 400
    refused = requests.post(url, params={"grant_type": "client_credentials"}, auth=("x", "y"), timeout=5)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    issued = requests.post(url, params={"grant_type": "client_credentials"}, auth=good, timeout=5).json()
    assert issued["token_type"] == "Bearer" and issued["expires_in"] == 36000 and issued["access_token"]


# --- Webhooks --------------------------------------------------------------------------------------


def test_every_control_api_change_sends_a_signed_webhook(tg_client, tg_emulator, webhook_receiver, settings):
    _subscribe(tg_emulator, webhook_receiver, settings)
    control = tg_emulator.control
    control("POST", "/_emulator/partners", PARTNER)
    control("POST", "/_emulator/partners/GC00804444LX/status", {"onboarding_status": "approved"})
    control("PATCH", "/_emulator/partners/GC00804444LX/profile", {"tier": "strategic"})
    control("POST", "/_emulator/partners/GC00804444LX/contacts", {"email": "New@Verona.example", "role": "finance"})
    control("PATCH", "/_emulator/partners/GC00804444LX/contacts/new@verona.example", {"first_name": "Nina"})
    control("DELETE", "/_emulator/partners/GC00804444LX/contacts/new@verona.example")
    issue = control("POST", "/_emulator/issues", {"partner_company_id": "GC00804444LX", "title": "Short ship",
                                                  "category": "shipment_exception"})
    control("POST", f"/_emulator/issues/{issue['id']}/status", {"status": "acknowledged"})
    control("PATCH", f"/_emulator/issues/{issue['id']}", {"severity": "high"})
    document = tg_client.create_document(document={"kind": "policy", "title": "Supplier code of conduct"})
    tg_client.add_document_version(document_id=document["id"], version={
        "version": "1", "file_name": "code.pdf", "sha256": "b" * 64, "content_url": "https://files.example/c.pdf"})
    person = {"partner_company_id": "GC00804444LX", "contact_email": "giulia@verona.example"}
    control("POST", f"/_emulator/documents/{document['id']}/acknowledgements", person)
    event = tg_client.create_event(event={"kind": "training", "title": "ASN training",
                                          "starts_at": "2026-05-01T15:00:00Z", "ends_at": "2026-05-01T16:00:00Z"})
    control("POST", f"/_emulator/events/{event['id']}/registrations", person)
    control("POST", f"/_emulator/events/{event['id']}/attendance", {**person, "attended": True, "minutes": 58})
    control("POST", f"/_emulator/events/{event['id']}/questions", {**person, "question": "Is SSCC required?"})

    assert tg_emulator.state.wait_for_deliveries(timeout=10)
    events = [webhook_event_from_tg(body) for body in _verified(webhook_receiver, settings)]
    assert [e.type for e in events] == [
        "partner.created", "partner.status_changed", "partner.updated", "partner.contact.created",
        "partner.contact.updated", "partner.contact.removed", "issue.created", "issue.status_changed",
        "issue.updated", "document.acknowledged", "event.registration.created", "event.attendance.recorded",
        "event.question.created",
    ]
    status_changed = events[1].data
    assert (status_changed["previous_status"], status_changed["onboarding_status"]) == ("testing", "approved")
    assert partner_from_tg(profile=status_changed["partner"]).onboarding_status == "approved"
    assert events[3].data["contact"]["email"] == "new@verona.example"
    assert events[7].data["previous_status"] == "open" and events[7].data["issue"]["status"] == "acknowledged"
    ids = [r["headers"]["webhook-id"] for r in webhook_receiver.received]
    assert len(set(ids)) == len(ids)
    # Every change is also visible to polling.
    assert tg_client.get_partner_profile(company_id="GC00804444LX")["tier"] == "strategic"
    assert [i["status"] for i in tg_client.iter_issues(updated_since=issue["updated_at"])] == ["acknowledged"]


def test_subscriptions_get_only_the_event_types_they_asked_for(tg_emulator, webhook_receiver, settings):
    _subscribe(tg_emulator, webhook_receiver, settings, event_types=["partner.status_changed"])
    tg_emulator.control("POST", "/_emulator/partners", PARTNER)
    tg_emulator.control("POST", "/_emulator/partners/GC00804444LX/status", {"onboarding_status": "approved"})
    assert tg_emulator.state.wait_for_deliveries(timeout=5)
    assert [b["type"] for b in _verified(webhook_receiver, settings)] == ["partner.status_changed"]


def test_a_failing_receiver_gets_retries_with_the_same_id(tg_emulator, webhook_receiver, settings):
    _subscribe(tg_emulator, webhook_receiver, settings)
    webhook_receiver.script = [500, 503, 200]
    tg_emulator.control("POST", "/_emulator/partners", PARTNER)
    assert tg_emulator.state.wait_for_deliveries(timeout=10)
    attempts = webhook_receiver.received
    assert [a["answered"] for a in attempts] == [500, 503, 200]
    assert len({a["headers"]["webhook-id"] for a in attempts}) == 1
    assert len({a["body"] for a in attempts}) == 1
    assert len(_verified(webhook_receiver, settings)) == 3  # each attempt freshly signed
    delivery = tg_emulator.control("GET", "/_emulator/webhooks/deliveries")["deliveries"][0]
    assert delivery["status"] == "delivered"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]


def test_the_sender_gives_up_when_the_schedule_runs_out(tg_emulator, webhook_receiver, settings):
    tg_emulator.control("POST", "/_emulator/webhooks/config", {"retry_schedule": [0, 0.01, 0.02],
                                                                "delay_scale": 1})
    _subscribe(tg_emulator, webhook_receiver, settings)
    webhook_receiver.script = [500] * 10
    tg_emulator.control("POST", "/_emulator/partners", PARTNER)
    assert tg_emulator.state.wait_for_deliveries(timeout=10)
    delivery = tg_emulator.state.delivery_list()[0]
    assert delivery["status"] == "failed" and len(delivery["attempts"]) == 3


def test_an_unreachable_receiver_is_recorded(tg_emulator, settings):
    tg_emulator.state.webhook_retry_schedule = (0, 0.01)
    tg_emulator.state.webhook_delay_scale = 1
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tg_emulator.state.create_subscription({"url": f"http://127.0.0.1:{port}/hook", "event_types": []})
    tg_emulator.state.create_partner(PARTNER, emit=True)
    assert tg_emulator.state.wait_for_deliveries(timeout=10)
    delivery = tg_emulator.state.delivery_list()[0]
    assert delivery["status"] == "failed"
    assert all(a["error"] == "ConnectionError" for a in delivery["attempts"])


def test_the_default_retry_schedule_grows_to_about_a_day():
    state = EmulatorState(client_id="c", client_secret="s", company_id="GC00000001PL")
    delays = [state.retry_delay(n) for n in range(1, 8)]
    assert delays == sorted(delays) and delays[0] == 5.0
    assert 20 * 3600 <= sum(delays) <= 30 * 3600
    assert state.retry_delay(8) is None


# --- Faults and control API ------------------------------------------------------------------------


def test_a_drop_fault_really_drops_the_connection(tg_emulator):
    tg_emulator.control("POST", "/_emulator/faults", {"kind": "drop", "path": COMPANY_URL})
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{tg_emulator.url}{COMPANY_URL}", timeout=5)
    assert requests.get(f"{tg_emulator.url}{COMPANY_URL}", timeout=5).status_code == 401  # fired once


def test_faults_can_be_listed_and_cleared_and_never_touch_the_control_api(tg_emulator):
    tg_emulator.control("POST", "/_emulator/faults", {"rules": [{"status": 500, "times": None}]})
    assert tg_emulator.control("GET", "/_emulator/faults")["faults"][0]["status"] == 500
    assert requests.get(f"{tg_emulator.url}{COMPANY_URL}", timeout=5).status_code == 500
    assert tg_emulator.control("GET", "/_emulator/health")["ok"] is True
    tg_emulator.control("DELETE", "/_emulator/faults")
    assert requests.get(f"{tg_emulator.url}{COMPANY_URL}", timeout=5).status_code == 401


def test_a_429_can_come_without_a_body(tg_emulator):
    tg_emulator.state.add_faults([{"status": 429, "body": False, "retry_after": 3}])
    response = requests.get(f"{tg_emulator.url}{COMPANY_URL}", timeout=5)
    assert (response.status_code, response.content, response.headers["Retry-After"]) == (429, b"", "3")


def test_faults_from_the_environment():
    rules = faults_from_env({
        "TRADINGGRID_EMULATOR_FAULT_429_RATE": "0.05",
        "TRADINGGRID_EMULATOR_RETRY_AFTER": "2",
        "TRADINGGRID_EMULATOR_FAULT_500_RATE": "0.01",
        "TRADINGGRID_EMULATOR_FAULT_DROP_RATE": "0.01",
        "TRADINGGRID_EMULATOR_LATENCY_MS": "40",
    })
    summary = sorted((r.kind, r.status if r.kind == "status" else None, r.probability) for r in rules)
    assert summary == [("drop", None, 0.01), ("latency", None, 1.0), ("status", 429, 0.05), ("status", 500, 0.01)]
    assert next(r for r in rules if r.status == 429 and r.kind == "status").retry_after == 2
    assert next(r for r in rules if r.kind == "latency").seconds == 0.04
    assert faults_from_env({}) == []
    state = build_state(client_id="c", client_secret="s", company_id="GC00000001PL",
                        environ={"TRADINGGRID_EMULATOR_FAULT_503_RATE": "1", "TRADINGGRID_EMULATOR_TOKEN_TTL": "60"})
    state.reset()
    assert [r.status for r in state.env_faults] == [503] and state.token_ttl == 60


def test_random_faults_hit_about_their_rate_and_the_client_rides_them_out(tg_settings, tg_emulator):
    from connectors.tradinggrid.client import TradingGridClient

    tg_emulator.state.add_faults([{"status": 503, "times": None, "probability": 0.3, "path": COMPANY_URL}])
    client = TradingGridClient.from_settings(sleep=lambda s: None, max_attempts=8)
    for _ in range(30):
        client.get_company()
    faults = sum(1 for r in tg_emulator.state.requests if r["fault"])
    assert 0 < faults < 40


def test_state_reset_and_snapshot(tg_emulator):
    tg_emulator.control("POST", "/_emulator/partners", PARTNER)
    snapshot = tg_emulator.control("GET", "/_emulator/state")
    assert [p["company_id"] for p in snapshot["partners"]] == ["GC00804444LX"]
    assert snapshot["directory"][0]["status"] == "Pending"
    tg_emulator.control("POST", "/_emulator/reset")
    assert tg_emulator.control("GET", "/_emulator/state")["partners"] == []


def test_control_api_errors_use_the_contract_shape(tg_emulator):
    response = requests.post(f"{tg_emulator.url}/_emulator/partners", json={"company_id": "nope", "name": "X"},
                             timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [{"field": "company_id",
                                                     "message": "must be a BUID like GC00804444LX"}]
    assert requests.get(f"{tg_emulator.url}/nowhere", timeout=5).json()["error"]["code"] == "not_found"
    assert requests.delete(f"{tg_emulator.url}/community/v1/issues", timeout=5).status_code == 405


def test_concurrent_writers_never_collide(tg_client, tg_emulator):
    tg_emulator.state.create_partner(PARTNER)
    issue = tg_emulator.state.create_issue({"partner_company_id": "GC00804444LX", "title": "Busy thread"})
    tg_client.get_company()  # one token for everyone
    errors: list[Exception] = []

    def comment(n):
        try:
            for i in range(10):
                tg_client.create_issue_comment(issue_id=issue["id"], body=f"worker {n} note {i}")
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=comment, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    comments = list(tg_client.iter_issue_comments(issue_id=issue["id"]))
    assert len(comments) == len({c["id"] for c in comments}) == 60


# --- Seeding ---------------------------------------------------------------------------------------


def _state(clock=None):
    return EmulatorState(client_id="c", client_secret="s", company_id="GC00000001PL", clock=clock)


def test_seeding_builds_a_community_around_the_given_partners():
    state = _state()
    given = [{"tg_company_id": "GC00804444LX", "name": "Verona Vittles", "partner_type": "supplier",
              "country_code": "IT", "contacts": [{"email": "giulia@verona.example", "role": "primary"}]},
             {"company_id": "GC00900001AB", "name": "Tailspin Freight", "partner_type": "carrier"}]
    assert seed(state, given, random_seed=7, issues_per_partner=(2, 3), failed_transaction_share=1.0) == [
        "GC00804444LX", "GC00900001AB"]
    verona = partner_from_tg(profile=state.render_profile("GC00804444LX"))
    assert [c.email for c in verona.contacts] == ["giulia@verona.example"]  # what we were given is kept
    assert verona.region == "emea" and verona.country_code == "IT"
    assert verona.certifications and all(c.expires_at for c in verona.certifications)
    assert verona.contract_renewal_at and verona.compliance_review_at and verona.trading_addresses
    tailspin = partner_from_tg(profile=state.render_profile("GC00900001AB"))
    assert tailspin.contacts and tailspin.contacts[0].role == "primary"
    assert len(state.list_issues(partner="GC00900001AB")) >= 2
    failed = [t for t in state.transactions.values() if t["status"] in "VFH" or t.get("fastatus") in ("R", "E", "T")]
    assert failed
    assert seed(state, given) == []  # seeding twice adds nothing
    assert state.deliveries == {}  # seeding is silent


def test_seeding_is_deterministic():
    from datetime import UTC, datetime

    frozen = datetime(2026, 1, 15, 12, tzinfo=UTC)
    first, second = _state(lambda: frozen), _state(lambda: frozen)
    partners = demo_partners(count=5, random_seed=3)
    assert partners == demo_partners(count=5, random_seed=3)
    seed(first, partners, random_seed=3)
    seed(second, partners, random_seed=3)
    strip = lambda s: [{k: v for k, v in p.items() if k != "updated_at"} for p in s.snapshot()["partners"]]  # noqa: E731
    assert strip(first) == strip(second)
    assert [i["title"] for i in first.issues.values()] == [i["title"] for i in second.issues.values()]
    assert list(first.transactions) == list(second.transactions)


def test_demo_partners_beyond_the_generated_names_are_numbered_not_looped_on():
    partners = demo_partners(count=1500, random_seed=42)  # more than the stems x suffixes of any type
    assert len({p["name"] for p in partners}) == 1500
    assert len({p["company_id"] for p in partners}) == 1500
    assert demo_partners(count=12, random_seed=42) == partners[:12]  # small counts unchanged


def test_seeded_issues_were_never_resolved_or_updated_in_the_future():
    from datetime import UTC, datetime

    frozen = datetime(2026, 1, 15, 12, tzinfo=UTC)
    state = _state(lambda: frozen)
    seed(state, demo_partners(count=60, random_seed=3), random_seed=3)
    resolved = [i for i in state.issues.values() if i["resolved_at"]]
    assert resolved
    # A future updated_at would make every later change of the issue look older than the one applied.
    assert all(parse_moment(i["resolved_at"], "resolved_at") <= frozen for i in resolved)
    assert all(parse_moment(i["updated_at"], "updated_at") <= frozen for i in state.issues.values())


def test_the_control_api_seeds_given_partners(tg_client, tg_emulator):
    answer = tg_emulator.control("POST", "/_emulator/seed", {"partners": [PARTNER], "seed": 1})
    assert answer["partners"] == ["GC00804444LX"]
    assert [e["partnerCompanyId"] for e in tg_client.iter_partner_directory()] == ["GC00804444LX"]


# --- The management command ------------------------------------------------------------------------


def test_the_management_command_serves_a_seeded_emulator():
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "tradinggrid_emulator", "--port", "0", "--seed-demo", "--demo-count", "4"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                url = line.split("listening on ", 1)[1].split()[0]
        assert url, "the emulator did not start"
        state = requests.get(f"{url}/_emulator/state", timeout=5).json()
        assert len(state["partners"]) == 4 and state["users"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
