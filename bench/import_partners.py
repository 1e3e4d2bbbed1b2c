"""Benchmark: CSV import of partner lists at realistic scale.

    python bench/import_partners.py [--rows 100000] [--partners 20000]

Generates N contact rows across P partners, then, each in a fresh process on a fresh bench database:
  lower bound  plain bulk_create of the same partners, contacts and product-line links
  first        the import into an empty database
  unchanged    the same file imported again
and a first import of N/4 rows, to show whether peak memory grows with N. Uses DATABASE_URL when set
(PostgreSQL), else a SQLite file under var/. Never run by the test suite.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
PRODUCT_LINES = ["Frozen Foods", "Dairy", "Beverages", "Packaging", "Electronic Components", "Automotive Parts"]
TYPES = ["supplier", "distributor", "carrier", "3pl", "customer", "reseller"]
REGIONS = [("emea", "DE"), ("na", "US"), ("apac", "JP"), ("latam", "BR")]
ROLES = ["primary", "technical", "compliance", "finance", "logistics", "sales"]
HEADER = [
    "tg_company_id",
    "partner_name",
    "partner_type",
    "region",
    "country_code",
    "tier",
    "product_lines",
    "contact_email",
    "first_name",
    "last_name",
    "role",
    "phone",
    "language",
]


def generate_rows(rows: int, partners: int):
    """The same rows every time: partner i has rows/partners contacts."""
    rng = random.Random(7)
    per_partner = max(1, rows // partners)
    produced = 0
    for index in range(partners):
        region, country = REGIONS[index % len(REGIONS)]
        lines = "|".join(sorted(rng.sample(PRODUCT_LINES, index % 3)))
        partner = [
            f"GC{index:08d}BX",
            f"Partner {index} Trading",
            TYPES[index % len(TYPES)],
            region,
            country,
            ["strategic", "preferred", "standard"][index % 3],
            lines,
        ]
        for contact in range(per_partner):
            if produced == rows:
                return
            produced += 1
            yield partner + [
                f"contact{contact}.p{index}@partner{index}.example",
                f"First{contact}",
                f"Last{index}",
                ROLES[contact % len(ROLES)],
                f"+49 30 {index:06d}",
                "de",
            ]


def write_csv(path: Path, rows: int, partners: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(generate_rows(rows, partners))


# --- Child process: one measured phase ----------------------------------------------------------------


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(phase: str, path: str, rows: int, partners: int) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import transaction

    from partners.models import Contact, ProductLine, TradingPartner
    from partners.services import partner_import_file

    baseline = rss_mb()
    started = time.perf_counter()
    summary = ""
    if phase == "lower":
        # The same rows, inserted with nothing but bulk_create.
        with transaction.atomic():
            lines = ProductLine.objects.bulk_create([ProductLine(name=name) for name in PRODUCT_LINES])
            line_ids = (
                {line.name: line.pk for line in ProductLine.objects.all()}
                if lines[0].pk is None
                else {line.name: line.pk for line in lines}
            )
            links = TradingPartner.product_lines.through
            batch_partners, batch_contacts, batch_links = [], [], []
            seen: dict[str, int] = {}
            for row in generate_rows(rows, partners):
                if row[0] not in seen:
                    batch_partners.append(
                        TradingPartner(
                            tg_company_id=row[0],
                            name=row[1],
                            partner_type=row[2],
                            region=row[3],
                            country_code=row[4],
                            tier=row[5],
                        )
                    )
                    seen[row[0]] = -1
                batch_contacts.append((row, None))
                if len(batch_contacts) >= 1000:
                    _flush(batch_partners, batch_contacts, batch_links, seen, line_ids, links, Contact, TradingPartner)
            _flush(batch_partners, batch_contacts, batch_links, seen, line_ids, links, Contact, TradingPartner)
        summary = f"partners={TradingPartner.objects.count()} contacts={Contact.objects.count()}"
    else:
        with open(path, "rb") as stream:
            result = partner_import_file(stream=stream, source_label=path)
        assert result.ok, result.problems[:5]
        summary = result.summary
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline, "summary": summary}))


def _flush(batch_partners, batch_contacts, batch_links, seen, line_ids, links, Contact, TradingPartner):
    if batch_partners:
        created = TradingPartner.objects.bulk_create(batch_partners)
        if created[0].pk is None:
            ids = dict(
                TradingPartner.objects.filter(tg_company_id__in=[p.tg_company_id for p in created]).values_list(
                    "tg_company_id", "pk"
                )
            )
        else:
            ids = {p.tg_company_id: p.pk for p in created}
        seen.update(ids)
        batch_partners.clear()
    contacts = []
    for row, _ in batch_contacts:
        partner_id = seen[row[0]]
        if row[6] and (row[0], "links") not in seen:
            seen[(row[0], "links")] = 1
            batch_links.extend(
                links(tradingpartner_id=partner_id, productline_id=line_ids[name]) for name in row[6].split("|")
            )
        contacts.append(
            Contact(
                partner_id=partner_id,
                email=row[7],
                first_name=row[8],
                last_name=row[9],
                role=row[10],
                phone=row[11],
                language=row[12],
                source="import",
            )
        )
    Contact.objects.bulk_create(contacts)
    if batch_links:
        links.objects.bulk_create(batch_links)
    batch_contacts.clear()
    batch_links.clear()


# --- Parent: orchestration --------------------------------------------------------------------------


def bench_env() -> dict:
    # DEBUG off: Django would otherwise keep every SQL statement in memory.
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="false")
    if os.environ.get("DATABASE_URL"):
        base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
        env["DATABASE_URL"] = f"{base}/partnerlink_bench"
    else:
        env["DATABASE_URL"] = f"sqlite:///{OUT / 'bench.sqlite3'}"
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
            connection.execute("DROP DATABASE IF EXISTS partnerlink_bench WITH (FORCE)")
            connection.execute("CREATE DATABASE partnerlink_bench")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def measure(env: dict, phase: str, path: Path, rows: int, partners: int) -> dict:
    output = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            phase,
            "--file",
            str(path),
            "--rows",
            str(rows),
            "--partners",
            str(partners),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--partners", type=int, default=20_000)
    parser.add_argument("--child")
    parser.add_argument("--file")
    args, _ = parser.parse_known_args()  # run_all.py passes every bench the same arguments
    if args.child:
        child(args.child, args.file, args.rows, args.partners)
        return

    OUT.mkdir(parents=True, exist_ok=True)
    env = bench_env()
    small_rows, small_partners = args.rows // 4, max(1, args.partners // 4)
    big, small = OUT / f"partners-{args.rows}.csv", OUT / f"partners-{small_rows}.csv"
    write_csv(big, args.rows, args.partners)
    write_csv(small, small_rows, small_partners)
    backend = "PostgreSQL" if "postgres" in env["DATABASE_URL"] else "SQLite"

    results = []
    fresh_database(env)
    lower = measure(env, "lower", big, args.rows, args.partners)
    results.append(("lower bound: bulk_create", args.rows, lower))
    fresh_database(env)
    first = measure(env, "first", big, args.rows, args.partners)
    results.append(("first import", args.rows, first))
    unchanged = measure(env, "unchanged", big, args.rows, args.partners)
    results.append(("unchanged re-import", args.rows, unchanged))
    fresh_database(env)
    quarter = measure(env, "first", small, small_rows, small_partners)
    results.append(("first import, N/4", small_rows, quarter))

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"\nimport_partners on {backend}, {machine}")
    print(f"{'phase':<26}{'rows':>9}{'seconds':>10}{'rows/s':>10}{'peak MB':>10}{'+MB':>8}{'x lower':>9}  result")
    for name, rows, r in results:
        ratio = r["seconds"] / lower["seconds"]
        print(
            f"{name:<26}{rows:>9}{r['seconds']:>10.2f}{rows / r['seconds']:>10.0f}{r['peak_rss_mb']:>10.0f}"
            f"{r['peak_rss_mb'] - r['baseline_rss_mb']:>8.0f}{ratio:>9.2f}  {r['summary']}"
        )
    goals = [
        ("first import within 3x of the lower bound", first["seconds"] <= 3 * lower["seconds"]),
        ("unchanged re-import faster than the first import", unchanged["seconds"] < first["seconds"]),
        (
            "peak memory over baseline at N within 2x of N/4 (flat as N grows)",
            first["peak_rss_mb"] - first["baseline_rss_mb"]
            <= 2 * max(1, quarter["peak_rss_mb"] - quarter["baseline_rss_mb"]),
        ),
    ]
    for goal, met in goals:
        print(f"  [{'met' if met else 'MISSED'}] {goal}")


if __name__ == "__main__":
    main()
