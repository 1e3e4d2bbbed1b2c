# ruff: noqa: F811 - fixtures imported from documents_support are redefined as test arguments
"""Document versions: the four-eyes rule (as for communications), and publication of the approved version to
the Trading Grid community (the emulator) exactly once, with the previous version superseded."""

import pytest
from celery.exceptions import Retry
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError

from campaigns import documents, tasks
from campaigns.models import DocumentPublication, DocumentVersion, PolicyDocument, PublicationStatus
from campaigns.services import PermissionRefused, TransitionError
from connectors.tradinggrid.client import TradingGridClient

from .conftest import make_user
from .documents_support import (
    approve_version,
    document,  # noqa: F401 - fixture
    docx_bytes,
    new_version,
    pdf_bytes,
    private_documents,  # noqa: F401 - autouse
    upload,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tg_settings", "eager_tasks")]


def reload(version) -> DocumentVersion:
    return DocumentVersion.objects.select_related("document", "publication").get(pk=version.pk)


def tg_documents(tg_emulator) -> list[dict]:
    return [tg_emulator.state.render_document(doc_id) for doc_id in tg_emulator.state.documents]


def version_posts(tg_emulator) -> list:
    return [r for r in tg_emulator.state.requests if r["method"] == "POST" and r["path"].endswith("/versions")]


# --- four eyes ------------------------------------------------------------------------------------------------


def test_the_submitter_cannot_approve_their_own_version(document, approver):
    version = new_version(document, approver)
    documents.document_version_submit(version_id=version.pk, actor=approver)

    with pytest.raises(PermissionRefused) as caught:
        documents.document_version_approve(version_id=version.pk, actor=approver)

    assert str(caught.value) == (
        "You submitted “Trading terms” version 2026.1: someone else has to approve it (four-eyes rule)."
    )
    assert reload(version).status == "submitted"


def test_only_approvers_approve(document, author):
    version = new_version(document, author)
    documents.document_version_submit(version_id=version.pk, actor=author)
    other_manager = make_user("Partner managers", username="james2")

    for person in (author, other_manager):
        with pytest.raises(PermissionRefused, match="Only members of “Approvers” can approve a document version."):
            documents.document_version_approve(version_id=version.pk, actor=person)


def test_a_draft_cannot_be_approved_before_it_is_submitted(document, author, approver):
    version = new_version(document, author)

    with pytest.raises(TransitionError, match="is draft: submit it first"):
        documents.document_version_approve(version_id=version.pk, actor=approver)


def test_request_changes_needs_a_comment_and_a_new_file_before_resubmitting(
    document, author, approver, second_approver, tg_emulator, django_capture_on_commit_callbacks
):
    version = new_version(document, author)
    documents.document_version_submit(version_id=version.pk, actor=author)
    with pytest.raises(TransitionError, match="a comment is required"):
        documents.document_version_request_changes(version_id=version.pk, actor=approver, comment=" ")

    documents.document_version_request_changes(version_id=version.pk, actor=approver, comment="Penalty table is old.")
    with pytest.raises(TransitionError, match="replace its file first"):
        documents.document_version_submit(version_id=version.pk, actor=author)
    documents.document_version_replace_file(
        version_id=version.pk, actor=author, upload=upload("terms-v2.docx", docx_bytes("new table"))
    )

    version = reload(version)
    assert (version.status, version.file_name, version.file_type) == ("draft", "terms-v2.docx", "docx")
    approved = approve_version(version, author, second_approver, django_capture_on_commit_callbacks)
    assert approved.status == "approved"
    history = list(LogEntry.objects.filter(object_id=str(version.pk)).order_by("pk").values_list("change_message",
                                                                                                  flat=True))
    assert "Submitted for approval → Changes requested. Penalty table is old." in history
    assert any(line.startswith("Replaced the file with terms-v2.docx") for line in history)


def test_an_approved_version_cannot_change_its_file(document, author, approver, django_capture_on_commit_callbacks):
    version = approve_version(new_version(document, author), author, approver, django_capture_on_commit_callbacks)

    with pytest.raises(TransitionError, match="upload a new version instead"):
        documents.document_version_replace_file(version_id=version.pk, actor=author, upload=upload("x.pdf", pdf_bytes()))


# --- publication ----------------------------------------------------------------------------------------------


def test_approving_publishes_the_version_once_to_trading_grid(
    document, author, approver, tg_emulator, django_capture_on_commit_callbacks
):
    version = approve_version(new_version(document, author), author, approver, django_capture_on_commit_callbacks)

    [remote] = tg_documents(tg_emulator)
    assert (remote["kind"], remote["title"]) == ("trading_terms", "Trading terms")
    assert [v["version"] for v in remote["versions"]] == ["2026.1"]
    assert remote["latest"]["sha256"] == version.sha256
    assert remote["latest"]["status"] == "approved"
    assert remote["latest"]["content_url"].endswith(f"/campaigns/documentversion/{version.pk}/download/")
    document = PolicyDocument.objects.get(pk=document.pk)
    assert (document.tg_document_id, document.tg_url) == (remote["id"], remote["url"])
    assert version.publication.status == PublicationStatus.PUBLISHED
    assert version.publication.tg_document_id == remote["id"]


def test_a_second_version_supersedes_the_first_and_becomes_latest_in_the_same_tg_document(
    document, author, approver, tg_emulator, django_capture_on_commit_callbacks
):
    first = approve_version(new_version(document, author, "1"), author, approver, django_capture_on_commit_callbacks)
    second = approve_version(new_version(document, author, "2"), author, approver, django_capture_on_commit_callbacks)

    first = reload(first)
    assert (first.status, first.superseded_by_id) == ("superseded", second.pk)
    assert second.status == "approved"
    [remote] = tg_documents(tg_emulator)
    assert [v["version"] for v in remote["versions"]] == ["1", "2"]
    assert remote["latest"]["version"] == "2"
    assert len([r for r in tg_emulator.state.requests if r["method"] == "POST" and r["path"].endswith("/documents")]) == 1


def test_the_task_run_twice_publishes_one_version(
    document, author, approver, tg_emulator, django_capture_on_commit_callbacks
):
    version = approve_version(new_version(document, author), author, approver, django_capture_on_commit_callbacks)
    publication = version.publication

    tasks.document_publication_task.apply(args=[publication.pk])
    DocumentPublication.objects.filter(pk=publication.pk).update(status=PublicationStatus.PENDING)  # as if lost
    tasks.document_publication_task.apply(args=[publication.pk])

    [remote] = tg_documents(tg_emulator)
    assert len(remote["versions"]) == 1
    assert len(tg_emulator.state.documents) == 1
    assert DocumentPublication.objects.get(pk=publication.pk).status == PublicationStatus.PUBLISHED


def test_a_version_tg_already_holds_with_the_same_content_is_recorded_as_published(
    document, author, approver, tg_emulator, django_capture_on_commit_callbacks
):
    first = approve_version(new_version(document, author, "1"), author, approver, django_capture_on_commit_callbacks)
    second = new_version(document, author, "2")
    # An earlier attempt reached Trading Grid but its answer was lost.
    tg_emulator.state.add_document_version(
        first.document.tg_document_id,
        {"version": "2", "file_name": "terms.pdf", "sha256": second.sha256, "content_url": "http://x/y"},
    )

    second = approve_version(second, author, approver, django_capture_on_commit_callbacks)

    assert second.publication.status == PublicationStatus.PUBLISHED
    assert len(tg_documents(tg_emulator)[0]["versions"]) == 2


def test_a_label_tg_holds_with_other_content_fails_with_the_reason(
    document, author, approver, tg_emulator, django_capture_on_commit_callbacks
):
    first = approve_version(new_version(document, author, "1"), author, approver, django_capture_on_commit_callbacks)
    tg_emulator.state.add_document_version(
        first.document.tg_document_id,
        {"version": "2", "file_name": "other.pdf", "sha256": "ab" * 32, "content_url": "http://x/y"},
    )

    second = approve_version(new_version(document, author, "2"), author, approver, django_capture_on_commit_callbacks)

    assert second.publication.status == PublicationStatus.FAILED
    assert second.publication.last_error == (
        f"Trading Grid document {first.document.tg_document_id} already holds a version 2 with other content "
        f"(SHA-256 {'ab' * 32}): give this version another label."
    )


def test_transient_failures_retry_then_publish(document, author, approver, tg_emulator, monkeypatch,
                                               django_capture_on_commit_callbacks):
    # The client's own bounded retries don't really sleep here.
    monkeypatch.setattr(
        documents, "_tg_client", lambda client: client or TradingGridClient.from_settings(sleep=lambda seconds: None)
    )
    tg_emulator.state.add_faults([{"status": 503, "path": "/community/v1/documents", "times": None}])
    version = new_version(document, author)
    documents.document_version_submit(version_id=version.pk, actor=author)

    with pytest.raises(Retry), django_capture_on_commit_callbacks(execute=True):
        documents.document_version_approve(version_id=version.pk, actor=approver)

    publication = DocumentPublication.objects.get(version=version)
    assert publication.status == PublicationStatus.PENDING
    assert publication.last_error.startswith("will retry: Trading Grid POST /community/v1/documents unavailable")
    assert publication.next_attempt_at is not None
    assert not tg_emulator.state.documents

    tg_emulator.state.clear_faults()
    tasks.document_publication_task.apply(args=[publication.pk])

    assert DocumentPublication.objects.get(pk=publication.pk).status == PublicationStatus.PUBLISHED
    assert len(tg_emulator.state.documents) == 1


def test_a_refusal_is_a_permanent_failure_shown_on_the_row_and_retried_by_an_approver(
    document, author, approver, tg_emulator, django_capture_on_commit_callbacks
):
    tg_emulator.state.add_faults([{"status": 422, "path": "/community/v1/documents", "times": 1}])

    version = approve_version(new_version(document, author), author, approver, django_capture_on_commit_callbacks)

    assert version.publication.status == PublicationStatus.FAILED
    assert version.publication.last_error.startswith("Trading Grid refused (HTTP 422)")
    with django_capture_on_commit_callbacks(execute=True):
        documents.document_publication_retry(publication_id=version.publication.pk, actor=approver)
    assert reload(version).publication.status == PublicationStatus.PUBLISHED


def test_approving_a_newer_version_cancels_a_publication_not_started(
    document, author, approver, tg_emulator, django_capture_on_commit_callbacks
):
    first = new_version(document, author, "1")
    documents.document_version_submit(version_id=first.pk, actor=author)
    with django_capture_on_commit_callbacks(execute=False):  # its task is lost
        documents.document_version_approve(version_id=first.pk, actor=approver)

    second = approve_version(new_version(document, author, "2"), author, approver, django_capture_on_commit_callbacks)

    assert reload(first).publication.status == PublicationStatus.CANCELLED
    assert [v["version"] for v in tg_documents(tg_emulator)[0]["versions"]] == ["2"]
    assert second.publication.status == PublicationStatus.PUBLISHED


def test_a_run_that_finds_the_lease_held_waits(document, author, approver, tg_emulator,
                                               django_capture_on_commit_callbacks):
    version = new_version(document, author)
    documents.document_version_submit(version_id=version.pk, actor=author)
    with django_capture_on_commit_callbacks(execute=False):
        documents.document_version_approve(version_id=version.pk, actor=approver)
    publication = DocumentPublication.objects.get(version=version)

    with documents._leased_publication(publication.pk):
        with pytest.raises(documents.DocumentBusy):
            documents.document_publication_execute(publication_id=publication.pk)

    assert not tg_emulator.state.documents


def test_the_relay_reenqueues_a_lost_publication(document, author, approver, tg_emulator,
                                                 django_capture_on_commit_callbacks):
    import datetime as dt

    from django.utils import timezone

    version = new_version(document, author)
    documents.document_version_submit(version_id=version.pk, actor=author)
    with django_capture_on_commit_callbacks(execute=False):
        documents.document_version_approve(version_id=version.pk, actor=approver)

    with django_capture_on_commit_callbacks(execute=True):
        assert documents.document_reminders_relay(now=timezone.now() + dt.timedelta(minutes=3)) == 1

    assert reload(version).publication.status == PublicationStatus.PUBLISHED


def test_a_kind_tg_holds_cannot_change(document, author, approver, django_capture_on_commit_callbacks):
    approve_version(new_version(document, author), author, approver, django_capture_on_commit_callbacks)

    with pytest.raises(ValidationError):
        documents.document_update(document_id=document.pk, actor=author, changes={"kind": "policy"})


def test_publishing_uses_the_client_retries_without_sleeping(document, author, approver, tg_emulator, tg_settings,
                                                            django_capture_on_commit_callbacks):
    """A 429 with Retry-After is retried inside the client (bounded), so one task run publishes."""
    tg_emulator.state.add_faults([{"status": 429, "retry_after": 0, "path": "/community/v1/documents", "times": 1}])
    version = new_version(document, author)
    documents.document_version_submit(version_id=version.pk, actor=author)
    with django_capture_on_commit_callbacks(execute=False):
        documents.document_version_approve(version_id=version.pk, actor=approver)
    client = TradingGridClient.from_settings(sleep=lambda seconds: None)

    publication = documents.document_publication_execute(
        publication_id=DocumentPublication.objects.get(version=version).pk, client=client
    )

    assert publication.status == PublicationStatus.PUBLISHED
