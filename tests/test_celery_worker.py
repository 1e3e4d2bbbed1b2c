"""A real Celery worker process on Redis runs a task that writes to PostgreSQL."""

import pytest
from django.core.files.base import ContentFile

from partners.models import ImportStatus, PartnerImport, TradingPartner
from partners.tasks import partner_import_run_task
from tests.celery_worker import celery_worker, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CSV = (
    "tg_company_id,partner_name,partner_type,country_code,contact_email\n"
    "GC00804444LX,Acme Foods,supplier,DE,anna@acme.de\n"
    "GC00800001US,Swift Carriers,carrier,US,dispatch@swift.com\n"
)


def test_worker_on_redis_imports_a_stored_upload_into_postgres():
    partner_import = PartnerImport(original_name="list.csv", runs_in_background=True, status=ImportStatus.IMPORTING)
    partner_import.file.save("list.csv", ContentFile(CSV.encode()))

    with celery_worker() as queue:
        partner_import_run_task.apply_async(args=[partner_import.pk, False], queue=queue)

        def imported():
            partner_import.refresh_from_db()
            return partner_import.status == ImportStatus.DONE

        wait_until(imported, timeout=60)

    assert partner_import.summary == "created=2 updated=0 unchanged=0 errors=0"
    assert set(TradingPartner.objects.values_list("tg_company_id", flat=True)) == {"GC00804444LX", "GC00800001US"}


def test_a_duplicate_delivery_of_the_same_import_job_runs_it_once():
    partner_import = PartnerImport(original_name="list.csv", runs_in_background=True, status=ImportStatus.IMPORTING)
    partner_import.file.save("list.csv", ContentFile(CSV.encode()))

    with celery_worker(concurrency=2) as queue:
        for _ in range(2):
            partner_import_run_task.apply_async(args=[partner_import.pk, False], queue=queue)

        def imported():
            partner_import.refresh_from_db()
            return partner_import.status == ImportStatus.DONE

        wait_until(imported, timeout=60)

    # the second delivery found the run claimed: the result is the first run's, not "unchanged=2"
    assert partner_import.summary == "created=2 updated=0 unchanged=0 errors=0"
