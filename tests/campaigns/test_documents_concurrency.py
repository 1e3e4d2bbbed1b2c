"""Two reminder sweeps at the same moment (PostgreSQL: real concurrent connections) take each stage once."""

import datetime as dt
import threading

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from campaigns import documents
from campaigns.models import (
    Communication,
    DocumentDistribution,
    DocumentRecipient,
    DocumentReminder,
    DocumentVersion,
    PolicyDocument,
)
from partners.services import audience_default_ensure
from tests.partners.factories import UserFactory


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_take_each_stage_once(monkeypatch):
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        pytest.skip("needs PostgreSQL: concurrent connections to one test database")
    monkeypatch.setattr(documents, "_enqueue_new_stages", lambda recipient_ids: None)
    now = timezone.now()
    document = PolicyDocument.objects.create(
        kind="policy", title="Code of conduct", owner=UserFactory(), remind_after_days=7, max_reminders=2,
        reminder_tag="coc-reminder",
    )
    version = DocumentVersion.objects.create(
        document=document, version="1", change_summary="First.", file="x.pdf", file_name="x.pdf", file_type="pdf",
        size=1, sha256="0" * 64, status="approved",
    )
    communication = Communication.objects.create(
        kind="policy_update", audience=audience_default_ensure(), subject="Code", from_name="Team",
        reply_to="team@example.com", state="sent", sent_at=now - dt.timedelta(days=8),
    )
    distribution = DocumentDistribution.objects.create(communication=communication, version=version)
    count = documents.SWEEP_BATCH + 100  # more than one batch each
    DocumentRecipient.objects.bulk_create(
        DocumentRecipient(version=version, distribution=distribution, email=f"c{i}@x.example") for i in range(count)
    )
    barrier, results, errors = threading.Barrier(2), [], []

    def sweep():
        try:
            barrier.wait(timeout=10)
            results.append(documents.document_reminders_sweep(now=now))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert DocumentReminder.objects.filter(kind="reminder", stage=1).count() == count
    assert sum(result.reminders for result in results) == count
    assert set(DocumentRecipient.objects.values_list("reminders_sent", flat=True)) == {1}
