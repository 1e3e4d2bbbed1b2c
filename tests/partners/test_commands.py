"""import_partners, seed_demo and setup_schedules as an operator runs them."""

import json

import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.schedules import BEAT_SCHEDULE
from partners.demo import demo_partner_records
from partners.models import CommunityIssue, Contact, TradingPartner
from tests.partners.factories import PartnerManagerFactory

pytestmark = pytest.mark.django_db

GOOD = (
    "tg_company_id,partner_name,partner_type,country_code,contact_email\n"
    "GC00804444LX,Acme Foods,supplier,DE,anna@acme.de\n"
    "GC00800001US,Swift Carriers,carrier,US,dispatch@swift.com\n"
)


@pytest.fixture
def csv_file(tmp_path):
    def write(text):
        path = tmp_path / "partners.csv"
        path.write_text(text)
        return str(path)

    return write


def test_import_partners_prints_the_summary_line(csv_file, capsys):
    call_command("import_partners", csv_file(GOOD))
    call_command("import_partners", csv_file(GOOD))

    out = capsys.readouterr().out.splitlines()
    assert out[0] == "created=2 updated=0 unchanged=0 errors=0"
    assert out[-2:] == [
        "Nothing to change: every row matches what Partnerlink already holds.",
        "created=0 updated=0 unchanged=2 errors=0",
    ]
    assert TradingPartner.objects.filter(partner_manager__isnull=True).count() == 2


def test_import_partners_dry_run_writes_nothing(csv_file, capsys):
    call_command("import_partners", csv_file(GOOD), "--dry-run")

    assert capsys.readouterr().out.strip() == "dry run: created=2 updated=0 unchanged=0 errors=0"
    assert not TradingPartner.objects.exists()


def test_import_partners_assigns_new_partners_to_manager(csv_file):
    manager = PartnerManagerFactory(email="maria@partnerlink.example")

    call_command("import_partners", csv_file(GOOD), "--manager", "MARIA@partnerlink.example")

    assert set(TradingPartner.objects.values_list("partner_manager", flat=True)) == {manager.pk}


def test_import_partners_unknown_manager(csv_file):
    with pytest.raises(CommandError, match="--manager: no staff user has the email nobody@x.com."):
        call_command("import_partners", csv_file(GOOD), "--manager", "nobody@x.com")


def test_import_partners_errors_exit_1_and_write_nothing(csv_file, capsys):
    with pytest.raises(CommandError) as raised:
        call_command("import_partners", csv_file(GOOD + "GC00800002US,X,carrier,US,bad-email\n"))

    assert raised.value.returncode == 1
    assert str(raised.value) == "Nothing was written: 1 row(s) have errors."
    captured = capsys.readouterr()
    assert "Row 4, column contact_email: 'bad-email' is not a valid email address." in captured.err
    assert captured.out.strip() == "created=0 updated=0 unchanged=0 errors=1"
    assert not TradingPartner.objects.exists()


def test_import_partners_missing_file():
    with pytest.raises(CommandError, match="Cannot open /nonexistent.csv: No such file or directory."):
        call_command("import_partners", "/nonexistent.csv")


def test_seed_demo_is_idempotent_and_realistic(capsys):
    call_command("seed_demo", "--partners", "60")
    counts = (TradingPartner.objects.count(), Contact.objects.count(), CommunityIssue.objects.count())
    call_command("seed_demo", "--partners", "60")

    assert (TradingPartner.objects.count(), Contact.objects.count(), CommunityIssue.objects.count()) == counts
    assert counts[0] == 60 and counts[1] > 60 and counts[2] > 20
    out = capsys.readouterr().out
    assert "Demo partners created: 0" in out
    assert "admin    admin@partnerlink.example" in out and "partnerlink-demo" in out
    buids = set(TradingPartner.objects.values_list("tg_company_id", flat=True))
    assert buids == {r["tg_company_id"] for r in demo_partner_records(60)}
    assert TradingPartner.objects.filter(partner_manager__isnull=True).count() == 0
    assert len(set(TradingPartner.objects.values_list("partner_type", flat=True))) >= 4


def test_demo_records_are_deterministic():
    assert demo_partner_records(20) == demo_partner_records(20)


def test_seed_demo_refused_outside_debug(settings):
    settings.DEMO_DATA_ALLOWED = False
    settings.DEBUG = False
    with pytest.raises(CommandError, match="never in production"):
        call_command("seed_demo")


def test_setup_schedules_is_idempotent_and_removes_retired_schedules():
    every_minute = IntervalSchedule.objects.create(every=60, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="partners: retired task", task="partners.tasks.gone", interval=every_minute)
    PeriodicTask.objects.create(name="hand-made in the admin", task="partners.tasks.other", interval=every_minute)

    call_command("setup_schedules")
    call_command("setup_schedules")

    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert names == set(BEAT_SCHEDULE) | {"hand-made in the admin"}
    for name, (task, schedule, _, *rest) in BEAT_SCHEDULE.items():
        periodic = PeriodicTask.objects.get(name=name)
        assert (periodic.task, periodic.enabled, json.loads(periodic.kwargs)) == (task, True, rest[0] if rest else {})
        if isinstance(schedule, int):
            assert periodic.interval.every == schedule
        else:
            crontab = periodic.crontab
            assert f"{crontab.minute} {crontab.hour} {crontab.day_of_month} {crontab.month_of_year} {crontab.day_of_week}" == schedule
