"""Benchmark: syncing partner contacts and segments to a Mailchimp audience at realistic scale.

    python bench/sync_audience.py [--contacts 100000]

Generates N contacts across N/5 partners (types, regions, tiers, product lines, partner managers, open issues,
a few unsubscribed and cleaned contacts) and three rule-based segments into a fresh bench database with
bulk_create (not timed), starts the Mailchimp emulator as a separate process on a free loopback port, then
measures, each in a fresh process:
  lower bound   read and serialize the same rows: iterate member_rows() and json-serialize each member
                payload, no network
  first sync    the normal incremental run on an empty audience
  1% changed    an incremental run after 1% of the contacts changed (first names; partners moved region,
                which also moves their contacts between segments)
  no change     an incremental run with nothing changed
Calls are the SyncRun's count, cross-checked against the emulator's own log of /3.0 requests (plus the
downloads of batch results, which go to storage rather than the API); write calls are the emulator's
POST/PUT/PATCH/DELETE. CPU seconds of the sync, of the emulator and of all other processes (the PostgreSQL
server among them) are printed beside the seconds: on a shared machine, "others" shows how much they are
inflated. Uses DATABASE_URL when set (PostgreSQL, database partnerlink_bench_sync), else a SQLite file under
var/bench/. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
BENCH_DATABASE = "partnerlink_bench_sync"
API_KEY = "0123456789abcdef0123456789abcdef-us21"
LIST_ID = "bench0aud1"
CONTACTS_PER_PARTNER = 5

PRODUCT_LINES = ["Frozen Foods", "Dairy", "Beverages", "Packaging", "Electronic Components", "Automotive Parts"]
TYPES = ["supplier"] * 4 + ["distributor"] * 2 + ["carrier", "3pl", "customer", "reseller"]
PLACES = [
    ("emea", "DE"),
    ("emea", "FR"),
    ("emea", "GB"),
    ("emea", "NL"),
    ("na", "US"),
    ("na", "US"),
    ("na", "CA"),
    ("apac", "JP"),
    ("apac", "CN"),
    ("apac", "AU"),
    ("latam", "BR"),
    ("latam", "MX"),
]
TIERS = ["strategic"] + ["preferred"] * 3 + ["standard"] * 5 + [""]
ONBOARDING = ["approved"] * 6 + ["testing", "registered", "invited", "new", "suspended"]
ROLES = ["primary", "technical", "compliance", "finance", "logistics", "sales"]
LANGUAGES = ["en", "en", "en", "de", "de", "fr", "es", "pt-BR", "ja", "zh", "it", "nl", "pl", ""]
FIRST_NAMES = ["Anna", "Ben", "Chloé", "Daniel", "Elif", "Farah", "Georg", "Hana", "Ivan", "Júlia", "Kenji", "Lena"]
LAST_NAMES = ["Schmidt", "Martin", "García", "Rossi", "Nowak", "Tanaka", "Silva", "Smith", "Müller", "Dubois"]
ISSUE_CATEGORIES = ["shipment_exception", "asn_mismatch", "invoice_po_mismatch", "quality_claim", "other"]
ISSUE_STATUSES = ["open", "acknowledged", "awaiting_partner", "under_review", "resolved", "closed", "closed"]
SEGMENTS = [
    {"name": "Suppliers", "partner_types": ["supplier"]},
    {"name": "EMEA", "regions": ["emea"]},
    {"name": "Key partners with open quality or ASN issues", "tiers": ["strategic", "preferred"],
     "issue_categories": ["quality_claim", "asn_mismatch"]},
]  # fmt: skip


# --- Child process: one step ----------------------------------------------------------------------------


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """This process's CPU time, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(step: str, contacts: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    result = {"generate": generate, "lower": lower_bound, "sync": sync, "change": change}[step](contacts)
    print(json.dumps(result))


def generate(contacts: int) -> dict:
    """The same data every time: N/5 partners with 5 contacts each, bulk-created."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from partners import services
    from partners.models import CommunityIssue, Contact, ProductLine, Segment, TradingPartner

    rng = random.Random(11)
    now = timezone.now()
    partners = max(1, contacts // CONTACTS_PER_PARTNER)
    with transaction.atomic():
        User = get_user_model()
        User.objects.bulk_create(
            [
                User(username=f"manager{i}", first_name=rng.choice(FIRST_NAMES), last_name=rng.choice(LAST_NAMES))
                for i in range(8)
            ]
            + [User(username="manager-noname", email="pm@partnerlink.example")]
        )
        managers = list(User.objects.order_by("pk")) + [None, None]
        ProductLine.objects.bulk_create([ProductLine(name=name) for name in PRODUCT_LINES])
        lines = list(ProductLine.objects.order_by("pk"))
        TradingPartner.objects.bulk_create(
            [
                TradingPartner(
                    tg_company_id=f"GC{index:08d}SY",
                    name=f"Partner {index} Trading",
                    partner_type=rng.choice(TYPES),
                    region=(place := rng.choice(PLACES))[0],
                    country_code=place[1],
                    tier=rng.choice(TIERS),
                    onboarding_status=rng.choice(ONBOARDING),
                    partner_manager=rng.choice(managers),
                )
                for index in range(partners)
            ],
            batch_size=2000,
        )
        partner_ids = list(TradingPartner.objects.order_by("pk").values_list("pk", flat=True))
        links = TradingPartner.product_lines.through
        links.objects.bulk_create(
            [
                links(tradingpartner_id=partner_id, productline_id=line.pk)
                for partner_id in partner_ids
                for line in rng.sample(lines, rng.choice([0, 1, 1, 2, 3]))
            ],
            batch_size=5000,
        )
        # About one partner in six has issues; most of those have at least one still open.
        issues = []
        for partner_id in partner_ids:
            if rng.random() < 0.16:
                for _ in range(rng.randint(1, 4)):
                    issues.append(
                        CommunityIssue(
                            tg_issue_id=f"ISS-{len(issues):07d}",
                            partner_id=partner_id,
                            category=rng.choice(ISSUE_CATEGORIES),
                            status=rng.choice(ISSUE_STATUSES),
                            title="Bench issue",
                            raised_at=now - timedelta(days=rng.randint(0, 120)),
                        )
                    )
        CommunityIssue.objects.bulk_create(issues, batch_size=5000)
        batch = []
        made = 0
        for position, partner_id in enumerate(partner_ids):
            for number in range(CONTACTS_PER_PARTNER):
                if made == contacts:
                    break
                made += 1
                first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                status, invalid = "unknown", False
                roll = rng.random()
                if roll < 0.01:
                    status = "unsubscribed"
                elif roll < 0.015:
                    status, invalid = "cleaned", True
                elif roll < 0.3:
                    status = "subscribed"
                batch.append(
                    Contact(
                        partner_id=partner_id,
                        email=f"{ROLES[number]}.{number}@partner{position}.example",
                        first_name=first,
                        last_name=last,
                        role=ROLES[number],
                        phone=f"+49 30 {position:07d}",
                        language=rng.choice(LANGUAGES),
                        marketing_status=status,
                        email_invalid=invalid,
                        source="import",
                    )
                )
            if len(batch) >= 5000:
                Contact.objects.bulk_create(batch)
                batch = []
        Contact.objects.bulk_create(batch)
        audience = services.audience_default_ensure()
        for definition in SEGMENTS:
            Segment.objects.create(audience=audience, **definition)
    from partners.selectors import sendable_contacts

    return {
        "partners": len(partner_ids),
        "contacts": Contact.objects.count(),
        "sendable": sendable_contacts().count(),
        "issues": len(issues),
    }


def lower_bound(contacts: int) -> dict:
    """Only read and serialize what a sync sends: every sendable contact's member payload, no network."""
    from connectors.mailchimp.payloads import member_upsert_body
    from partners import services
    from partners.audience_sync import member_rows

    audience = services.audience_default_ensure()
    baseline = rss_mb()
    cpu, started = cpu_seconds(), time.perf_counter()
    rows = size = 0
    for row in member_rows(audience):
        size += len(json.dumps(member_upsert_body(row.member)))
        rows += 1
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu": cpu_seconds() - cpu,
        "process_cpu": cpu_seconds(),
        "rows": rows,
        "bytes": size,
        "peak_rss_mb": rss_mb(),
        "baseline_rss_mb": baseline,
    }


def sync(contacts: int) -> dict:
    """One normal incremental run, as `manage.py sync_audience` runs it. Also counts the downloads of batch
    results: the SyncRun counts them as calls, but they go to storage (the emulator's /_emulator/batch-results,
    Mailchimp's pre-signed URLs), not to the /3.0 API the emulator's request log covers."""
    from connectors.mailchimp.client import MailchimpClient
    from partners import services
    from partners.models import Segment, SyncKind

    downloads = 0
    fetch = MailchimpClient.fetch_batch_results

    def counted_fetch(self, **kwargs):
        nonlocal downloads
        downloads += 1
        return fetch(self, **kwargs)

    MailchimpClient.fetch_batch_results = counted_fetch
    audience = services.audience_default_ensure()
    run = services.audience_sync_start(
        audience=audience, kind=SyncKind.INCREMENTAL, triggered_by="bench", enqueue=False
    )
    baseline = rss_mb()
    cpu, started = cpu_seconds(), time.perf_counter()
    run = services.audience_sync_execute(run_id=run.pk)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    segments = list(Segment.objects.order_by("pk").values_list("name", "member_count", "remote_member_count"))
    return {
        "seconds": seconds,
        "cpu": cpu,
        "process_cpu": cpu_seconds(),
        "downloads": downloads,
        "status": run.status,
        "calls": run.calls,
        "created": run.created,
        "updated": run.updated,
        "unchanged": run.unchanged,
        "skipped": run.skipped,
        "failed": run.failed,
        "errors": run.errors[:5],
        "segments": segments,
        "peak_rss_mb": rss_mb(),
        "baseline_rss_mb": baseline,
    }


def change(contacts: int) -> dict:
    """Change 1% of the sendable contacts: half by first name, half by moving their partner from North America
    to EMEA (their REGION and COUNTRY merge fields change, and they join the EMEA segment)."""
    from django.db import transaction

    from partners.models import Contact, TradingPartner
    from partners.selectors import sendable_contacts

    target = max(2, contacts // 100)
    moved_contacts = 0
    moved = []
    sendable = sendable_contacts()
    for partner_id in TradingPartner.objects.filter(region="na").order_by("pk").values_list("pk", flat=True)[::7]:
        count = sendable.filter(partner_id=partner_id).count()
        if moved_contacts + count > target // 2:
            break
        moved.append(partner_id)
        moved_contacts += count
    renamed = list(
        sendable.exclude(partner_id__in=moved)
        .order_by("pk")
        .values_list("pk", flat=True)[::97][: target - moved_contacts]
    )
    with transaction.atomic():
        TradingPartner.objects.filter(pk__in=moved).update(region="emea", country_code="IE")
        for start in range(0, len(renamed), 500):
            Contact.objects.filter(pk__in=renamed[start : start + 500]).update(first_name="Renamed")
    return {"changed": moved_contacts + len(renamed), "renamed": len(renamed), "moved_partners": len(moved)}


# --- Parent: orchestration --------------------------------------------------------------------------


def bench_env() -> dict:
    # DEBUG off: Django would otherwise keep every SQL statement in memory.
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings.local",
        DJANGO_DEBUG="false",
        MAILCHIMP_API_KEY=API_KEY,
        MAILCHIMP_AUDIENCE_ID=LIST_ID,
        MAILCHIMP_SERVER_PREFIX="",
        REDIS_URL="",
    )
    if os.environ.get("DATABASE_URL"):
        base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
        env["DATABASE_URL"] = f"{base}/{BENCH_DATABASE}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{OUT / 'sync.sqlite3'}"
    return env


def fresh_database(env: dict) -> None:
    url = env["DATABASE_URL"]
    if url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    else:
        import psycopg

        admin_url = url.rsplit("/", 1)[0].replace("postgres://", "postgresql://") + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_child(env: dict, step: str, contacts: int) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", step, "--contacts", str(contacts)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if output.returncode != 0:
        sys.stderr.write(output.stderr[-4000:])
        raise SystemExit(f"{step}: the child process failed ({output.returncode})")
    return json.loads(output.stdout.strip().splitlines()[-1])


def measured_lower_bound(env: dict, contacts: int) -> dict:
    busy = machine_busy_seconds()
    result = run_child(env, "lower", contacts)
    # Roughly what other processes took meanwhile (the child's start-up counts as ours).
    result["others_cpu"] = max(0.0, machine_busy_seconds() - busy - result["process_cpu"])
    return result


class Emulator:
    """`manage.py mailchimp_emulator` in its own process on a free loopback port."""

    def __init__(self, env: dict) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = (OUT / "emulator.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "mailchimp_emulator", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the emulator stopped at start ({self.process.returncode}): see {self.log.name}")
            try:
                self.get("/_emulator/stats")
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("the emulator did not answer within 60 s") from None
                time.sleep(0.2)

    def get(self, path: str, *, auth: bool = False):
        import requests

        with requests.Session() as session:
            session.trust_env = False  # loopback only: never a proxy from the environment
            response = session.get(self.base_url + path, auth=("bench", API_KEY) if auth else None, timeout=30)
            response.raise_for_status()
            return response.json()

    def cpu_seconds(self) -> float:
        """The emulator process's CPU time so far (all its threads)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


REQUEST_LOG_SIZE = 2000  # the emulator keeps the last 2000 requests


def measured_sync(env: dict, emulator: Emulator, contacts: int) -> dict:
    before = len(emulator.get("/_emulator/requests"))
    cpu, busy = emulator.cpu_seconds(), machine_busy_seconds()
    result = run_child(env, "sync", contacts)
    result["emulator_cpu"] = emulator.cpu_seconds() - cpu
    result["others_cpu"] = max(0.0, machine_busy_seconds() - busy - result["process_cpu"] - result["emulator_cpu"])
    log = emulator.get("/_emulator/requests")
    if len(log) >= REQUEST_LOG_SIZE:
        raise SystemExit("the emulator's request log is full: its request count can't be trusted")
    new = [entry for entry in log[before:] if entry["path"].startswith("/3.0")]
    result["emulator_calls"] = len(new)
    result["write_calls"] = sum(1 for entry in new if entry["method"] in ("POST", "PUT", "PATCH", "DELETE"))
    result["emulator_errors"] = sum(1 for entry in new if entry["status"] >= 400)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", "--rows", type=int, default=100_000, help="contacts (--rows: as make bench)")
    parser.add_argument("--partners", type=int, help=argparse.SUPPRESS)  # make bench passes it to every bench
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.contacts)
        return

    OUT.mkdir(parents=True, exist_ok=True)
    env = bench_env()
    backend = "PostgreSQL" if "postgres" in env["DATABASE_URL"] else "SQLite"
    fresh_database(env)
    data = run_child(env, "generate", args.contacts)
    emulator = Emulator(env)
    try:
        env["MAILCHIMP_API_URL"] = f"{emulator.base_url}/3.0"
        lower = measured_lower_bound(env, args.contacts)
        first = measured_sync(env, emulator, args.contacts)
        audience = emulator.get(f"/3.0/lists/{LIST_ID}", auth=True)
        changed = run_child(env, "change", args.contacts)
        partial = measured_sync(env, emulator, args.contacts)
        unchanged = measured_sync(env, emulator, args.contacts)
        emulator_stats = emulator.get("/_emulator/stats")
    finally:
        emulator.stop()

    n = data["contacts"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(
        f"\nsync_audience on {backend}, {machine}: {n} contacts ({data['sendable']} sendable) across "
        f"{data['partners']} partners, {data['issues']} issues, {len(SEGMENTS)} segments"
    )
    print(
        f"{'phase':<28}{'calls':>6}{'emulator':>9}{'writes':>7}{'1/member':>9}{'seconds':>9}{'contacts/s':>11}"
        f"{'x lower':>8}{'CPU sync':>9}{'CPU emul.':>10}{'others':>7}  result"
    )
    print(
        f"{'lower bound: read+serialize':<28}{0:>6}{'-':>9}{'-':>7}{'-':>9}{lower['seconds']:>9.2f}"
        f"{n / lower['seconds']:>11.0f}{1:>8.2f}{lower['cpu']:>9.2f}{'-':>10}{lower['others_cpu']:>7.1f}"
        f"  {lower['rows']} member payloads, "
        f"{lower['bytes'] / 1e6:.1f} MB of JSON"
    )
    phases = [
        ("first sync (empty audience)", first, data["sendable"]),
        (f"{changed['changed']} changed (1%)", partial, changed["changed"]),
        ("no change", unchanged, 0),
    ]
    for name, r, per_member in phases:
        summary = (
            f"{r['status']}: created={r['created']} updated={r['updated']} unchanged={r['unchanged']} "
            f"skipped={r['skipped']} failed={r['failed']}"
        )
        if r["emulator_errors"]:
            summary += f" emulator-errors={r['emulator_errors']}"
        if r["errors"]:
            summary += f" errors={r['errors'][:2]}"
        seen = f"{r['emulator_calls']}" + (f"+{r['downloads']}" if r["downloads"] else "")
        print(
            f"{name:<28}{r['calls']:>6}{seen:>9}{r['write_calls']:>7}{per_member:>9}{r['seconds']:>9.2f}"
            f"{n / r['seconds']:>11.0f}{r['seconds'] / lower['seconds']:>8.2f}{r['cpu']:>9.2f}"
            f"{r['emulator_cpu']:>10.2f}{r['others_cpu']:>7.1f}  {summary}"
        )
    print(
        "  calls: the SyncRun's count; emulator: /3.0 requests in the emulator's log (+ batch-result downloads); "
        "writes: POST/PUT/PATCH/DELETE among them;\n  1/member: calls a one-request-per-member sync would make; "
        "contacts/s: all N contacts over the seconds;\n  CPU: CPU seconds of the sync (all its threads) and of the "
        "emulator; others: CPU seconds all other processes took meanwhile, the PostgreSQL server's included "
        "(on SQLite: when high, the seconds are inflated)"
    )
    stats = audience.get("stats", {})
    print(
        f"  audience after the first sync: {stats.get('member_count')} subscribed members; segments (ours/Mailchimp's "
        f"count) after the 1% sync: "
        + "; ".join(f"{name} {ours}/{theirs}" for name, ours, theirs in partial["segments"])
        + f"; emulator peak concurrency {emulator_stats['max_in_flight']}"
    )
    changed_calls_allowed = -(-changed["changed"] // 400) + 10
    goals = [
        (f"first sync at most 1 call per 400 contacts (<= {n // 400})", first["calls"] <= n // 400),
        ("first sync within 3x of the lower bound", first["seconds"] <= 3 * lower["seconds"]),
        (
            f"1% sync at most 1 call per 400 changed contacts + 10 (<= {changed_calls_allowed})",
            partial["calls"] <= changed_calls_allowed,
        ),
        ("1% sync takes at most a third of the first sync's time", partial["seconds"] <= first["seconds"] / 3),
        ("no-change sync makes zero write calls", unchanged["write_calls"] == 0),
        (
            "every sync succeeded, and the SyncRun's call count matches the emulator's",
            all(
                r["status"] == "succeeded" and r["calls"] == r["emulator_calls"] + r["downloads"] for _, r, _ in phases
            ),
        ),
        (
            "every sendable contact is a member, and the 1% sync updated exactly the changed contacts",
            stats.get("member_count") == data["sendable"] == first["created"]
            and partial["updated"] == changed["changed"],
        ),
    ]
    for goal, met in goals:
        print(f"  [{'met' if met else 'MISSED'}] {goal}")


if __name__ == "__main__":
    main()
