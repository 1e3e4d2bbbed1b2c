"""Benchmark: Trading Grid webhooks, from the HTTP answer to the change applied.

    python bench/tg_ingest.py [--events 20000] [--tg-partners 1000] [--senders 8] [--web-workers 2]
                              [--web-threads 4] [--celery-workers 1] [--celery-concurrency 4] [--profile K]

On a fresh PostgreSQL database (`partnerlink_bench_tg` on the server of DATABASE_URL, default
postgres://postgres@127.0.0.1:5432) and Redis db 12 (flushed: the bench owns it):

  setup        the Trading Grid emulator in its own process, seeded with --tg-partners partners and their
               community; Partnerlink synced with it once by the pollers (so partners and issues exist on
               both sides); then one change per distinct event made in the emulator through its control API
               (profile edits, status changes, new contacts, new issues, issue status changes)
  lower bound  the same N rows bulk-inserted into the inbox table (ON CONFLICT DO NOTHING), then emptied
  webhooks     N signed webhooks (5% of them a second delivery of an earlier one: same webhook-id, same body)
               posted by --senders processes to /webhooks/tradinggrid/ served by gunicorn
  drain        Celery workers started on the queue the webhooks filled, until no inbox event is pending
  verify       inbox: exactly the distinct webhook-ids, each processed once; database: one application per
               distinct event (contacts and issues created, one history line per partner or issue changed,
               final state equal to Trading Grid's)

Besides rates it reports the CPU time each component used per delivery and per event drained (from /proc),
which other agents' load on the machine does not change the way it changes rates. --profile K processes K events
in-process under cProfile before the drain (var/bench/tg-profile.txt). Logs: var/bench/tg-*.log.

Every process the bench starts (emulator, gunicorn, Celery) is stopped at the end, on failure too, and gets
SIGTERM should the bench itself be killed. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "var" / "bench"
VENV_BIN = Path(sys.executable).parent
DB_NAME = "partnerlink_bench_tg"
REDIS_URL = "redis://127.0.0.1:6379/12"
# The bench's own credentials and webhook secrets: the emulator and the app both read them from the environment.
TG_CLIENT_ID = "bench-tg-client"
TG_CLIENT_SECRET = "bench-tg-secret"  # noqa: S105 - a loopback emulator's fake credential
TG_COMPANY_ID = "GC00000001PL"
WEBHOOK_SECRETS = [
    "whsec_" + base64.b64encode(b"partnerlink-bench-tg-secret-new").decode(),
    "whsec_" + base64.b64encode(b"partnerlink-bench-tg-secret-old").decode(),
]
# The share of distinct events of each type.
EVENT_MIX = (
    ("partner.updated", 0.25),
    ("partner.status_changed", 0.15),
    ("partner.contact.created", 0.15),
    ("issue.created", 0.25),
    ("issue.status_changed", 0.20),
)
ONBOARDING_STATUSES = ("new", "invited", "registered", "testing", "approved", "suspended", "rejected")
ISSUE_STATUSES = ("open", "acknowledged", "awaiting_partner", "under_review", "resolved", "closed")
TIERS = ("strategic", "preferred", "standard")
ROLES = ("technical", "compliance", "finance", "logistics", "sales")
CATEGORIES = ("shipment_exception", "asn_mismatch", "invoice_po_mismatch", "quality_claim", "other")
SEVERITIES = ("low", "medium", "high", "critical")
# Bounds: no phase waits longer than this, whatever happens.
SEND_DEADLINE = 240.0
DRAIN_DEADLINE = 300.0


# --- Child processes (Django): presync, lower bound, verify ---------------------------------------------


def django_setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    import django

    django.setup()


def child_presync() -> dict:
    """Partnerlink catches up with Trading Grid once, by the beat pollers: what a running installation holds."""
    django_setup()
    from partners import tg_sync

    started = time.perf_counter()
    partners = tg_sync.partners_poll_from_tg()
    issues = tg_sync.issues_poll_from_tg()
    return {"seconds": time.perf_counter() - started, "summary": f"{partners}; {issues}"}


def child_lower(events_path: str) -> dict:
    """Only the INSERTs: the same N rows the webhooks deliver, bulk-inserted into the inbox table (duplicates
    skipped by the unique constraint, as the webhook path does), then the table emptied again."""
    django_setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from connectors.models import EventSource, InboundEvent

    data = json.loads(Path(events_path).read_text())
    now = timezone.now()
    rows = []
    for msg_id, body in data["deliveries"]:
        payload = json.loads(body)
        rows.append(
            InboundEvent(
                source=EventSource.TRADING_GRID,
                dedupe_key=msg_id,
                event_type=payload["type"],
                payload={"type": payload["type"], "timestamp": payload["timestamp"], "data": payload["data"]},
                raw=body,
                enqueued_at=now,
            )
        )
    started = time.perf_counter()
    for start in range(0, len(rows), 1000):
        with transaction.atomic():
            InboundEvent.objects.bulk_create(rows[start : start + 1000], ignore_conflicts=True)
    seconds = time.perf_counter() - started
    stored = InboundEvent.objects.count()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {InboundEvent._meta.db_table} RESTART IDENTITY")
    return {"seconds": seconds, "rows": len(rows), "stored": stored}


def child_profile(count: int) -> dict:
    """Diagnosis (--profile K): K pending events processed here, one after the other, under cProfile, by the
    function the Celery task calls. The drain then has K fewer to do."""
    django_setup()
    import cProfile
    import io
    import pstats

    from connectors import services
    from connectors.models import EventStatus, InboundEvent

    ids = list(InboundEvent.objects.filter(status=EventStatus.PENDING).order_by("pk").values_list("pk", flat=True))
    ids = random.Random(5).sample(ids, min(count, len(ids)))
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for event_id in ids:
        services.inbound_event_process(event_id=event_id)
    profiler.disable()
    seconds = time.perf_counter() - started
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)
    (OUT / "tg-profile.txt").write_text(text.getvalue())

    def cumulative(path_end: str, name: str) -> float:
        return sum(ct for (path, _, func), (_, _, _, ct, _) in stats.stats.items()
                   if path.endswith(path_end) and func == name)

    total = stats.total_tt or seconds
    buckets = {
        "Trading Grid calls": cumulative("connectors/tradinggrid/client.py", "_request"),
        "of which the token from the cache": cumulative("connectors/tradinggrid/client.py", "_access_token"),
        "SQL (psycopg, waiting for PostgreSQL included)": cumulative("django/db/backends/utils.py", "_execute"),
        "history lines": cumulative("partners/services.py", "history_record"),
    }
    return {"events": len(ids), "seconds": seconds, "total": total,
            "buckets": {name: round(value / total * 100) for name, value in buckets.items()}}


def child_verify(events_path: str, markers_path: str) -> dict:
    django_setup()
    from collections import Counter

    from django.contrib.admin.models import LogEntry
    from django.contrib.contenttypes.models import ContentType
    from django.db.models import Count

    from connectors.models import EventStatus, InboundEvent
    from connectors.tradinggrid.client import get_client
    from connectors.tradinggrid.payloads import issue_from_tg, partner_from_tg
    from partners.models import CommunityIssue, Contact, TradingPartner

    data = json.loads(Path(events_path).read_text())
    markers = json.loads(Path(markers_path).read_text())
    distinct = data["distinct"]  # [{id, type, target, ...}]
    sent_ids = {event["id"] for event in distinct}
    result: dict = {}

    # The inbox.
    rows = list(InboundEvent.objects.values_list("dedupe_key", "status", "attempts"))
    keys = [key for key, _, _ in rows]
    result["inbox_rows"] = len(rows)
    result["inbox_distinct_keys"] = len(set(keys))
    result["inbox_keys_match_sent"] = set(keys) == sent_ids
    result["status_counts"] = dict(Counter(status for _, status, _ in rows))
    result["attempts_counts"] = {str(k): v for k, v in Counter(attempts for _, _, attempts in rows).items()}
    outcomes = Counter(
        "nothing new" if outcome.endswith("nothing changed.") else "changed"
        for outcome in InboundEvent.objects.filter(status=EventStatus.PROCESSED).values_list("outcome", flat=True)
    )
    result["outcomes"] = dict(outcomes)

    # What the drain wrote: history lines after the marker, contacts and issues the events brought.
    partner_type = ContentType.objects.get_for_model(TradingPartner)
    issue_type = ContentType.objects.get_for_model(CommunityIssue)
    written = (
        LogEntry.objects.filter(pk__gt=markers["max_log_entry_id"])
        .values("content_type_id", "object_id")
        .annotate(n=Count("pk"))
    )
    partner_lines = {row["object_id"]: row["n"] for row in written if row["content_type_id"] == partner_type.pk}
    issue_lines = {row["object_id"]: row["n"] for row in written if row["content_type_id"] == issue_type.pk}
    other_lines = sum(
        row["n"] for row in written if row["content_type_id"] not in (partner_type.pk, issue_type.pk)
    )
    touched_partners = {e["target"] for e in distinct if e["type"].startswith("partner.")}
    touched_issues = {e["target"] for e in distinct if e["type"] == "issue.status_changed"}
    new_issue_ids = [e["target"] for e in distinct if e["type"] == "issue.created"]
    new_contacts = [(e["target"], e["email"]) for e in distinct if e["type"] == "partner.contact.created"]
    partner_pks = dict(TradingPartner.objects.values_list("tg_company_id", "pk"))
    issue_pks = dict(CommunityIssue.objects.values_list("tg_issue_id", "pk"))
    expected_partner_objects = {str(partner_pks.get(buid)) for buid in touched_partners}
    expected_issue_objects = {str(issue_pks.get(ident)) for ident in touched_issues}
    result["partners_touched"] = len(touched_partners)
    result["partner_history_lines"] = sum(partner_lines.values())
    result["partner_history_one_each"] = set(partner_lines) == expected_partner_objects and all(
        n == 1 for n in partner_lines.values()
    )
    result["issues_touched"] = len(touched_issues)
    result["issue_history_lines"] = sum(issue_lines.values())
    result["issue_history_one_each"] = set(issue_lines) == expected_issue_objects and all(
        n == 1 for n in issue_lines.values()
    )
    result["other_history_lines"] = other_lines
    result["contact_created_events"] = len(new_contacts)
    result["contacts_added"] = Contact.objects.count() - markers["contacts"]
    held_contacts = set(
        Contact.objects.filter(email__in=[email for _, email in new_contacts]).values_list(
            "partner__tg_company_id", "email"
        )
    )
    result["contacts_each_present"] = held_contacts == set(new_contacts)
    result["issue_created_events"] = len(new_issue_ids)
    result["issues_added"] = CommunityIssue.objects.count() - markers["issues"]
    result["issues_each_present"] = CommunityIssue.objects.filter(tg_issue_id__in=new_issue_ids).count() == len(
        set(new_issue_ids)
    )

    # Final state: what Partnerlink holds for every object an event named equals what Trading Grid holds.
    client = get_client()
    mismatches = []
    by_buid = {
        p.tg_company_id: p
        for p in TradingPartner.objects.filter(tg_company_id__in=touched_partners).prefetch_related("contacts")
    }
    for buid in sorted(touched_partners):
        tg = partner_from_tg(profile=client.get_partner_profile(company_id=buid), company_id=buid)
        ours = by_buid.get(buid)
        if ours is None:
            mismatches.append(f"{buid}: missing")
            continue
        for name in ("onboarding_status", "tier", "contract_renewal_at", "compliance_review_at"):
            if getattr(tg, name) is not None and getattr(tg, name) != getattr(ours, name):
                mismatches.append(f"{buid}.{name}: ours {getattr(ours, name)!r}, TG {getattr(tg, name)!r}")
        if {c.email for c in tg.contacts} - {c.email for c in ours.contacts.all()}:
            mismatches.append(f"{buid}.contacts: some of Trading Grid's are missing")
    tg_issues = {
        record["id"]: issue_from_tg(record)
        for record in client.iter_issues()
        if record["id"] in touched_issues or record["id"] in set(new_issue_ids)
    }
    for issue in CommunityIssue.objects.filter(tg_issue_id__in=list(tg_issues)):
        tg = tg_issues[issue.tg_issue_id]
        if (issue.status, issue.title) != (tg.status, tg.title[:300]):
            mismatches.append(f"{issue.tg_issue_id}: ours {issue.status}, TG {tg.status}")
    result["state_mismatches"] = mismatches[:10]
    result["state_mismatch_count"] = len(mismatches)
    return result


# --- Parent: environment and processes -----------------------------------------------------------------


def bench_env(tg_url: str = "") -> dict:
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres").rsplit("/", 1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADINGGRID_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DJANGO_DEBUG="false",  # Django would otherwise keep every SQL statement in memory
        DJANGO_LOG_LEVEL="WARNING",  # no line per request from the emulator
        DATABASE_URL=f"{base}/{DB_NAME}",
        REDIS_URL=REDIS_URL,
        TRADINGGRID_CLIENT_ID=TG_CLIENT_ID,
        TRADINGGRID_CLIENT_SECRET=TG_CLIENT_SECRET,
        TRADINGGRID_COMPANY_ID=TG_COMPANY_ID,
        TRADINGGRID_WEBHOOK_SECRETS=",".join(WEBHOOK_SECRETS),
        PYTHONUNBUFFERED="1",
    )
    if tg_url:
        env["TRADINGGRID_API_URL"] = tg_url
    return env


def admin_url(env: dict) -> str:
    return env["DATABASE_URL"].rsplit("/", 1)[0].replace("postgres://", "postgresql://") + "/postgres"


def bench_db_url(env: dict) -> str:
    return env["DATABASE_URL"].replace("postgres://", "postgresql://")


def fresh_database(env: dict) -> None:
    import psycopg

    with psycopg.connect(admin_url(env), autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)


def redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _stop_with_parent() -> None:
    """In a started process, before exec: SIGTERM when the bench dies, even by SIGKILL (Linux). Nothing but a
    system call here (the parent has threads)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """Everything the bench starts, each in its own process group, stopped by its id at the end."""

    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict, **kwargs) -> subprocess.Popen:
        """Output goes to var/bench/tg-<name>.log."""
        with open(OUT / f"tg-{name}.log", "wb") as log:
            kwargs.setdefault("stdout", log)
            process = subprocess.Popen(args, cwd=ROOT, env=env, stderr=log, start_new_session=True,
                                       preexec_fn=_stop_with_parent, **kwargs)
        self.running.append((name, process))
        return process

    def stop(self, process: subprocess.Popen, *, grace: float = 15.0) -> None:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(5)
        # The group may outlive its leader (pool children): make sure none is left.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.running = [(n, p) for n, p in self.running if p is not process]

    def stop_all(self) -> None:
        for _, process in reversed(list(self.running)):
            self.stop(process, grace=10.0)


def run_child(env: dict, *args: str) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", *args], cwd=ROOT, env=env, check=True, capture_output=True,
        text=True, timeout=600,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def start_emulator(processes: Processes, env: dict, partners: int) -> tuple[str, subprocess.Popen]:
    args = [sys.executable, "manage.py", "tradinggrid_emulator", "--port", "0", "--seed-demo", "--demo-count",
            str(partners), "--random-seed", "7"]
    process = processes.start("emulator", args, env, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    printed = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stdout], [], [], left)
        chunk = os.read(process.stdout.fileno(), 4096) if ready else b""
        if ready and not chunk:
            raise RuntimeError(f"the emulator stopped: see {OUT / 'tg-emulator.log'}")
        printed += chunk
        found = re.search(rb"listening on (http://\S+)", printed)
        if found:
            # Nothing else is printed on stdout; keep the pipe drained anyway so it can never block.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return found.group(1).decode(), process
    raise RuntimeError(f"the emulator did not start within 120 s: {printed.decode(errors='replace')[-300:]}")


def wait_http(url: str, *, seconds: float, ok=(200,)) -> None:
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code in ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


# --- Parent: the changes in Trading Grid and the webhooks that announce them ---------------------------


def prepare_events(tg_url: str, distinct: int, duplicates: int, seed: int = 11) -> dict:
    """One change in the emulator per distinct event (control API, which sends no webhook of its own: nothing
    is subscribed), and the webhook body Trading Grid would send for it. Each change is chosen so that it
    really changes something: contract renewal dates never seen before, statuses the object never had."""
    import requests

    rng = random.Random(seed)
    state = requests.get(f"{tg_url}/_emulator/state", timeout=60).json()
    partners = [p["company_id"] for p in state["partners"]]
    partner_used = {p["company_id"]: {p["onboarding_status"]} for p in state["partners"]}
    partner_status = {p["company_id"]: p["onboarding_status"] for p in state["partners"]}
    issues = {i["id"]: i for i in state["issues"]}
    issue_used = {ident: {i["status"]} for ident, i in issues.items()}
    issue_status = {ident: i["status"] for ident, i in issues.items()}
    issue_ids = sorted(issues)
    kinds, weights = zip(*EVENT_MIX, strict=True)
    renewal_base = date.today() + timedelta(days=800)

    plan = []
    for k in range(distinct):
        kind = rng.choices(kinds, weights)[0]
        msg_id = f"msg_{rng.getrandbits(96):024x}"
        if kind == "partner.updated":
            buid = rng.choice(partners)
            changes = {"contract_renewal_at": (renewal_base + timedelta(days=k)).isoformat()}
            if k % 3 == 0:
                changes["tier"] = rng.choice(TIERS)
            plan.append({"id": msg_id, "type": kind, "target": buid, "call": ("PATCH", f"/partners/{buid}/profile",
                                                                               changes)})
        elif kind == "partner.status_changed":
            candidates = [b for b in rng.sample(partners, min(20, len(partners))) if partner_used[b] != set(
                ONBOARDING_STATUSES)]
            buid = candidates[0] if candidates else rng.choice(partners)
            status = next((s for s in rng.sample(ONBOARDING_STATUSES, len(ONBOARDING_STATUSES))
                           if s not in partner_used[buid]), rng.choice(ONBOARDING_STATUSES))
            partner_used[buid].add(status)
            previous, partner_status[buid] = partner_status[buid], status
            plan.append({"id": msg_id, "type": kind, "target": buid, "previous": previous,
                         "call": ("POST", f"/partners/{buid}/status", {"onboarding_status": status})})
        elif kind == "partner.contact.created":
            buid = rng.choice(partners)
            email = f"bench.{k}@{buid.lower()}.example"
            contact = {"email": email, "first_name": f"Bench{k}", "last_name": "Contact", "role": rng.choice(ROLES),
                       "phone": f"+1 519 555 {k % 10000:04d}", "language": "en", "timezone": "America/Toronto"}
            plan.append({"id": msg_id, "type": kind, "target": buid, "email": email,
                         "call": ("POST", f"/partners/{buid}/contacts", contact)})
        elif kind == "issue.created":
            buid = rng.choice(partners)
            ident = f"ISS-B{k:06d}"
            category = rng.choice(CATEGORIES)
            issue = {"id": ident, "partner_company_id": buid, "category": category, "reason_code": "BENCH",
                     "severity": rng.choice(SEVERITIES), "title": f"Bench issue {k} ({category.replace('_', ' ')})",
                     "description": "Raised by the webhook benchmark.",
                     "po_number": f"PO{4500000000 + k}", "raised_by": "bench"}
            plan.append({"id": msg_id, "type": kind, "target": ident, "call": ("POST", "/issues", issue)})
        else:  # issue.status_changed, on issues both sides held before the run
            candidates = [i for i in rng.sample(issue_ids, min(20, len(issue_ids))) if issue_used[i] != set(
                ISSUE_STATUSES)]
            ident = candidates[0] if candidates else rng.choice(issue_ids)
            status = next((s for s in rng.sample(ISSUE_STATUSES, len(ISSUE_STATUSES)) if s not in issue_used[ident]),
                          rng.choice(ISSUE_STATUSES))
            issue_used[ident].add(status)
            previous, issue_status[ident] = issue_status[ident], status
            plan.append({"id": msg_id, "type": kind, "target": ident, "previous": previous,
                         "call": ("POST", f"/issues/{ident}/status", {"status": status})})

    local = threading.local()

    def apply(item: dict) -> bytes:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        method, path, payload = item["call"]
        response = session.request(method, f"{tg_url}/_emulator{path}", json=payload, timeout=30)
        response.raise_for_status()
        answer = response.json()
        kind = item["type"]
        if kind == "partner.updated":
            data = {"company_id": item["target"], "partner": answer}
        elif kind == "partner.status_changed":
            data = {"company_id": item["target"], "previous_status": item["previous"],
                    "onboarding_status": answer["onboarding_status"], "partner": answer}
        elif kind == "partner.contact.created":
            data = {"company_id": item["target"], "contact": answer}
        elif kind == "issue.created":
            data = {"partner_company_id": answer["partner_company_id"], "issue": answer}
        else:
            data = {"partner_company_id": answer["partner_company_id"], "previous_status": item["previous"],
                    "issue": answer}
        timestamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return json.dumps({"type": kind, "timestamp": timestamp, "data": data}, separators=(",", ":")).encode()

    with ThreadPoolExecutor(max_workers=6) as pool:
        bodies = list(pool.map(apply, plan, chunksize=50))

    # Deliveries: every event once, in the order of the changes, and `duplicates` of them again: half soon
    # after the first (often still in flight on another sender), half much later (a retry after a timeout).
    order = [(float(i), i) for i in range(distinct)]
    for i in rng.sample(range(distinct), duplicates):
        gap = rng.randint(1, 16) if rng.random() < 0.5 else rng.randint(17, max(18, distinct // 2))
        order.append((i + gap + 0.5, i))
    order.sort()
    deliveries = [(plan[i]["id"], bodies[i].decode()) for _, i in order]
    for item in plan:
        del item["call"]
    return {"distinct": plan, "deliveries": deliveries}


# --- Parent: senders -----------------------------------------------------------------------------------

_DELIVERIES: list[tuple[str, str]] = []  # inherited by the forked senders


def sender(job: tuple[int, int, str, float, float]) -> list[tuple[float, float, int, int]]:
    """One sender: its share of the deliveries, one after the other on its own session. Returns
    (start, end, HTTP status, stored) per delivery, on the monotonic clock shared by all processes."""
    import requests

    from connectors.tradinggrid.webhooks import webhook_headers

    index, count, url, start_at, deadline = job
    session = requests.Session()
    mine = _DELIVERIES[index::count]
    time.sleep(max(0.0, start_at - time.monotonic()))
    results = []
    for msg_id, body in mine:
        if time.monotonic() > deadline:
            break
        data = body.encode()
        headers = webhook_headers(msg_id=msg_id, body=data, secrets=WEBHOOK_SECRETS[:1])
        headers["Content-Type"] = "application/json"
        began = time.monotonic()
        try:
            response = session.post(url, data=data, headers=headers, timeout=(5, 30))
            status = response.status_code
            stored = 1 if status == 200 and response.json().get("stored") else 0
        except requests.RequestException:
            status, stored = 0, 0
        results.append((began, time.monotonic(), status, stored))
    return results


def _sender_signals() -> None:
    # The parent turns SIGTERM into KeyboardInterrupt for its cleanup; a sender must simply stop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def send_all(url: str, deliveries: list[tuple[str, str]], senders: int, sample=None) -> dict:
    """`sample` is called every half second while the senders run (in a thread started after they are forked)."""
    global _DELIVERIES
    _DELIVERIES = deliveries
    context = multiprocessing.get_context("fork")
    start_at = time.monotonic() + 1.5
    deadline = start_at + SEND_DEADLINE
    pool = context.Pool(senders, initializer=_sender_signals)
    done = threading.Event()

    def sampling() -> None:
        while not done.wait(0.5):
            sample()

    sampler = threading.Thread(target=sampling, daemon=True)
    try:
        if sample:
            sampler.start()
        shares = pool.map(sender, [(i, senders, url, start_at, deadline) for i in range(senders)])
        pool.close()
    finally:
        done.set()
        pool.terminate()
        pool.join()
        if sample:
            sampler.join()
    results = [r for share in shares for r in share]
    latencies = sorted(end - began for began, end, _, _ in results)
    statuses: dict[int, int] = {}
    for _, _, status, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    elapsed = max(end for _, end, _, _ in results) - start_at
    return {
        "sent": len(results),
        "unsent": len(deliveries) - len(results),
        "statuses": statuses,
        "stored": sum(s for _, _, _, s in results),
        "seconds": elapsed,
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max": latencies[-1],
    }


# --- Parent: drain ---------------------------------------------------------------------------------------


def inbox_counts(env: dict) -> dict:
    import psycopg

    with psycopg.connect(bench_db_url(env), autocommit=True) as connection:
        rows = connection.execute("SELECT status, count(*) FROM connectors_inboundevent GROUP BY status").fetchall()
    return dict(rows)


def drain(processes: Processes, env: dict, workers: int, concurrency: int, expected: int, emulator: int) -> dict:

    sessions_before = pg_sessions(env)
    emulator_cpu = cpu_seconds([emulator])
    started = time.monotonic()
    launched = []
    for n in range(workers):
        args = [str(VENV_BIN / "celery"), "-A", "config", "worker", "--pool", "prefork", "--concurrency",
                str(concurrency), "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-n", f"bench-tg{n + 1}@%h"]
        launched.append(processes.start(f"celery{n + 1}", args, env))
    deadline = started + DRAIN_DEADLINE
    pending = expected
    backends = BackendCPU(env)
    connection = backends.connection
    drain_began = connection.execute("SELECT now()").fetchone()[0]
    while time.monotonic() < deadline:
        pending = connection.execute(
            "SELECT count(*) FROM connectors_inboundevent WHERE status = 'pending'"
        ).fetchone()[0]
        backends.sample()
        if pending == 0 or any(p.poll() is not None for p in launched):
            break
        time.sleep(0.2)
    seconds = time.monotonic() - started
    first, last = connection.execute(
        "SELECT min(processed_at), max(processed_at) FROM connectors_inboundevent WHERE processed_at >= %s",
        (drain_began,),
    ).fetchone()
    cpu = {
        "celery": cpu_seconds(pid for process in launched for pid in group_pids(process.pid)),
        "celery_main": cpu_seconds(process.pid for process in launched),
        "postgres": backends.close(),
        "emulator": cpu_seconds([emulator]) - emulator_cpu,
    }
    for process in launched:
        processes.stop(process)
    span = (last - first).total_seconds() if first and last else float("nan")
    time.sleep(0.5)  # the workers' server processes report their sessions as they exit
    return {"seconds": seconds, "pending": pending, "span": span, "timed_out": pending > 0,
            "sessions": pg_sessions(env) - sessions_before, "cpu": cpu}


def pg_sessions(env: dict) -> int:
    """PostgreSQL sessions opened on the bench database so far (one server process each)."""
    import psycopg

    with psycopg.connect(bench_db_url(env), autocommit=True) as connection:
        return connection.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]


def cpu_seconds(pids) -> float:
    """User + system CPU time these processes have used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def group_pids(leader: int) -> list[int]:
    """The processes of the group `leader` started (gunicorn and its workers, Celery and its pool)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(fields[2]) == leader:
                pids.append(int(entry.name))
    return pids


class BackendCPU:
    """CPU used by the server processes of the bench database's other sessions (the web's or the workers'),
    sampled while a phase runs, so sessions that end meanwhile (CONN_MAX_AGE) count up to their last sample.
    One connection of its own, left out of the count."""

    def __init__(self, env: dict) -> None:
        import psycopg

        self.connection = psycopg.connect(bench_db_url(env), autocommit=True)
        self.start = {pid: cpu_seconds([pid]) for pid in self.pids()}
        self.last: dict[int, float] = dict(self.start)

    def pids(self) -> list[int]:
        rows = self.connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return [pid for (pid,) in rows]

    def sample(self) -> float:
        for pid in self.pids():
            self.last[pid] = max(self.last.get(pid, 0.0), cpu_seconds([pid]))
        return sum(used - self.start.get(pid, 0.0) for pid, used in self.last.items())

    def close(self) -> float:
        used = self.sample()
        self.connection.close()
        return used


def log_lines(name: str, pattern: str) -> int:
    path = OUT / f"tg-{name}.log"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text(errors="replace").splitlines() if re.search(pattern, line))


# --- Main ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="webhook deliveries, duplicates included")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of deliveries that are repeats")
    parser.add_argument("--tg-partners", type=int, default=1000, help="partners in the emulator")
    parser.add_argument("--senders", type=int, default=8, help="concurrent sender processes")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--web-threads", type=int, default=4, help="1: sync workers; more: gthread")
    parser.add_argument("--celery-workers", type=int, default=1)
    parser.add_argument("--celery-concurrency", type=int, default=4, help="prefork processes per worker")
    parser.add_argument("--profile", type=int, default=0,
                        help="diagnosis: process this many events in-process under cProfile before the drain "
                        "(var/bench/tg-profile.txt)")
    parser.add_argument("--child")
    parser.add_argument("--file")
    parser.add_argument("--markers")
    args, _ = parser.parse_known_args()  # run_all.py passes every bench the same arguments
    if args.child:
        if args.child == "presync":
            print(json.dumps(child_presync()))
        elif args.child == "lower":
            print(json.dumps(child_lower(args.file)))
        elif args.child == "profile":
            print(json.dumps(child_profile(args.profile)))
        elif args.child == "verify":
            print(json.dumps(child_verify(args.file, args.markers)))
        return

    OUT.mkdir(parents=True, exist_ok=True)
    duplicates = round(args.events * args.duplicates)
    distinct = args.events - duplicates
    processes = Processes()

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        timings = run(args, processes, distinct, duplicates)
    finally:
        processes.stop_all()
    report(args, distinct, duplicates, *timings)


def note(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[tg_ingest {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args, processes: Processes, distinct: int, duplicates: int):
    env = bench_env()
    redis_client().flushdb()
    setup_started = time.perf_counter()
    tg_url, emulator = start_emulator(processes, env, args.tg_partners)
    fresh_database(env)
    note(f"fresh database {DB_NAME}; emulator at {tg_url}; presync by the pollers")
    env = bench_env(tg_url)
    presync = run_child(env, "presync")
    redis_client().flushdb()  # the pollers' follow-up tasks (issue history of new partners): already covered
    prepared_at = time.perf_counter()
    note(f"presync {presync['seconds']:.1f} s; making {distinct} changes in Trading Grid")
    events = prepare_events(tg_url, distinct, duplicates)
    prepare_seconds = time.perf_counter() - prepared_at
    events_path = OUT / "tg-events.json"
    events_path.write_text(json.dumps(events))
    setup_seconds = time.perf_counter() - setup_started

    note("lower bound: bulk INSERT")
    lower = run_child(env, "lower", "--file", str(events_path))

    import psycopg

    with psycopg.connect(bench_db_url(env), autocommit=True) as connection:
        max_log = connection.execute("SELECT coalesce(max(id), 0) FROM django_admin_log").fetchone()[0]
        contacts = connection.execute("SELECT count(*) FROM partners_contact").fetchone()[0]
        issues = connection.execute("SELECT count(*) FROM partners_communityissue").fetchone()[0]
    markers_path = OUT / "tg-markers.json"
    markers_path.write_text(json.dumps({"max_log_entry_id": max_log, "contacts": contacts, "issues": issues}))

    port = free_port()
    worker_class = "sync" if args.web_threads <= 1 else "gthread"
    web_args = [str(VENV_BIN / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
                "--workers", str(args.web_workers), "--worker-class", worker_class, "--threads",
                str(args.web_threads), "--backlog", "2048", "--timeout", "60", "--log-level", "warning"]
    web = processes.start("gunicorn", web_args, env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", seconds=60)
    for _ in range(4 * args.web_workers):  # every worker has loaded the URLconf and opened its connections
        wait_http(f"{base}/healthz", seconds=10)
    note(f"sending {len(events['deliveries'])} webhooks")
    web_before = cpu_seconds(group_pids(web.pid))
    backends = BackendCPU(env)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    send = send_all(f"{base}/webhooks/tradinggrid/", events["deliveries"], args.senders, sample=backends.sample)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    send["cpu"] = {
        "senders": (children_after.ru_utime + children_after.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
        "gunicorn": cpu_seconds(group_pids(web.pid)) - web_before,
        "postgres": backends.close(),
    }
    processes.stop(web)
    queued = redis_client().llen("celery")

    note(f"sent in {send['seconds']:.1f} s; draining {queued} tasks")
    profiled = None
    if args.profile:
        profiled = run_child(env, "profile", "--profile", str(args.profile))
        note(f"profiled {profiled['events']} events in-process in {profiled['seconds']:.1f} s: "
             f"{OUT / 'tg-profile.txt'}")
    drained = drain(processes, env, args.celery_workers, args.celery_concurrency, distinct, emulator.pid)
    left_in_queue = redis_client().llen("celery")
    note(f"drained in {drained['seconds']:.1f} s; verifying")
    verify = run_child(env, "verify", "--file", str(events_path), "--markers", str(markers_path))
    retries = {
        "tg_client_retries": sum(log_lines(f"celery{n + 1}", r"answered \d+; retry|failed \(.*\); retry")
                                 for n in range(args.celery_workers)),
        "task_retries": sum(log_lines(f"celery{n + 1}", r"transient error, retry")
                            for n in range(args.celery_workers)),
        "web_errors": log_lines("gunicorn", r"ERROR|Traceback"),
    }
    context = {
        "setup": setup_seconds, "presync": presync, "prepare": prepare_seconds, "queued": queued,
        "left_in_queue": left_in_queue, "retries": retries, "worker_class": worker_class,
        "profiled": profiled["events"] if profiled else 0,
        "profile": profiled,
    }
    return send, drained, lower, verify, context


def report(args, distinct: int, duplicates: int, send: dict, drained: dict, lower: dict, verify: dict,
           context: dict) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    web = (f"gunicorn {args.web_workers} {context['worker_class']} workers"
           + (f" x {args.web_threads} threads" if args.web_threads > 1 else ""))
    presync = context["presync"]
    synced = re.findall(r"seen=(\d+)", presync["summary"])
    print(f"\ntg_ingest on PostgreSQL, {machine}")
    print(f"  {args.events} deliveries ({distinct} distinct events + {duplicates} repeats) from {args.senders} sender "
          f"processes; {web}; Celery {args.celery_workers} worker(s) x prefork {args.celery_concurrency}; "
          f"TG emulator with {args.tg_partners} partners")
    print(f"  setup {context['setup']:.1f} s: presync by the pollers {presync['seconds']:.1f} s "
          f"({' partners, '.join(synced)} issues), {distinct} changes made in Trading Grid {context['prepare']:.1f} s")

    accepted = send["statuses"].get(200, 0)
    processed = distinct - drained["pending"] - context["profiled"]
    lower_rate, accepted_rate = lower["rows"] / lower["seconds"], accepted / send["seconds"]
    print(f"{'phase':<28}{'events':>8}{'seconds':>9}{'events/s':>10}  notes")
    print(f"{'lower bound: bulk INSERT':<28}{lower['rows']:>8}{lower['seconds']:>9.2f}{lower_rate:>10.0f}"
          f"  the same rows, 1000 per INSERT ... ON CONFLICT DO NOTHING ({lower['stored']} stored)")
    print(f"{'webhooks: accepted (HTTP)':<28}{accepted:>8}{send['seconds']:>9.2f}{accepted_rate:>10.0f}"
          f"  {accepted_rate / lower_rate * 100:.0f}% of the lower bound; answer p50 {send['p50'] * 1000:.1f} ms, "
          f"p99 {send['p99'] * 1000:.1f} ms, max {send['max'] * 1000:.0f} ms")
    print(f"{'drain: applied (Celery)':<28}{processed:>8}{drained['seconds']:>9.2f}"
          f"{processed / drained['seconds']:>10.0f}  from worker start until no event is pending "
          f"(first to last processed {drained['span']:.1f} s)")
    if context["profiled"]:
        shares = ", ".join(f"{name} {share}%" for name, share in context["profile"]["buckets"].items())
        print(f"  (--profile: {context['profiled']} events were processed in-process before the drain, "
              f"{context['profile']['seconds'] / context['profiled'] * 1000:.1f} ms each under cProfile: {shares})")

    print("checks")
    print(f"  HTTP: {send['sent']} sent, answers {send['statuses']}, {send['stored']} stored, "
          f"{accepted - send['stored']} already stored, {send['unsent']} unsent")
    print(f"  inbox: {verify['inbox_rows']} rows, {verify['inbox_distinct_keys']} distinct keys, the webhook-ids sent: "
          f"{verify['inbox_keys_match_sent']}; statuses {verify['status_counts']}; attempts "
          f"{verify['attempts_counts']}; tasks queued {context['queued']}, left {context['left_in_queue']}")
    print(f"  effects: contacts +{verify['contacts_added']} for {verify['contact_created_events']} contact.created, "
          f"issues +{verify['issues_added']} for {verify['issue_created_events']} issue.created; history lines "
          f"{verify['partner_history_lines']} for {verify['partners_touched']} partners named (one each: "
          f"{verify['partner_history_one_each']}), {verify['issue_history_lines']} for {verify['issues_touched']} "
          f"issues status-changed (one each: {verify['issue_history_one_each']}), {verify['other_history_lines']} "
          f"elsewhere; differences from Trading Grid's state {verify['state_mismatch_count']} "
          f"{verify['state_mismatches'][:3] or ''}")
    outcomes = verify["outcomes"]
    print(f"  outcomes: {outcomes.get('changed', 0)} changed something, {outcomes.get('nothing new', 0)} re-read "
          f"nothing new (an earlier event of the same partner or issue had applied Trading Grid's state)")

    web_cpu, drain_cpu = send["cpu"], drained["cpu"]
    per_delivery = {k: v * 1000 / max(1, send["sent"]) for k, v in web_cpu.items()}
    per_event = {k: v * 1000 / max(1, processed) for k, v in drain_cpu.items()}
    web_total = sum(per_delivery.values())
    drain_total = per_event["celery"] + per_event["postgres"] + per_event["emulator"]
    cores = os.cpu_count() or 1
    print("where the time goes (CPU time from /proc; other agents' processes share these cores)")
    print(f"  per delivery: senders {per_delivery['senders']:.1f} ms, gunicorn {per_delivery['gunicorn']:.1f} ms, "
          f"PostgreSQL {per_delivery['postgres']:.1f} ms = {web_total:.1f} ms: at most "
          f"{cores * 1000 / web_total:.0f}/s on {cores} idle cores")
    print(f"  per event drained: Celery pool {per_event['celery'] - per_event['celery_main']:.1f} ms + consumer "
          f"{per_event['celery_main']:.1f} ms, PostgreSQL {per_event['postgres']:.1f} ms, TG emulator "
          f"{per_event['emulator']:.1f} ms = {drain_total:.1f} ms: at most {cores * 1000 / drain_total:.0f}/s; "
          f"{drained['sessions']} PostgreSQL sessions opened (2 the bench's); retries: TG client "
          f"{context['retries']['tg_client_retries']}, inbox task {context['retries']['task_retries']}; "
          f"web errors logged {context['retries']['web_errors']}")

    statuses = verify["status_counts"]
    goals = [
        ("no duplicate stored: every delivery answered 200, the inbox holds exactly the distinct webhook-ids",
         accepted == args.events and send["unsent"] == 0 and send["stored"] == distinct
         and verify["inbox_rows"] == distinct and verify["inbox_keys_match_sent"]),
        ("every distinct event processed exactly once: processed/unmatched, attempts == 1, one task each",
         set(statuses) <= {"processed", "unmatched"} and sum(statuses.values()) == distinct
         and verify["attempts_counts"] == {"1": distinct} and context["queued"] == distinct
         and not drained["timed_out"]),
        ("effects of one application per distinct event: contacts, issues, one history line per object changed, "
         "state = Trading Grid's",
         verify["contacts_added"] == verify["contact_created_events"] and verify["contacts_each_present"]
         and verify["issues_added"] == verify["issue_created_events"] and verify["issues_each_present"]
         and verify["partner_history_one_each"] and verify["issue_history_one_each"]
         and verify["other_history_lines"] == 0 and verify["state_mismatch_count"] == 0),
        ("p99 webhook answer under 1 s (the emulator's sender gives up after 10 s)", send["p99"] < 1.0),
    ]
    for goal, met in goals:
        print(f"  [{'met' if met else 'MISSED'}] {goal}")


if __name__ == "__main__":
    main()
