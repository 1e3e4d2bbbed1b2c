# ruff: noqa: F811 - fixtures imported from documents_support are redefined as test arguments
"""The policy documents admin: documents with versions inline and an upload row, the version page's buttons
(submit, approve, request changes) through the services, the ledgers, and constant query counts on list pages."""

import pytest
from django.urls import reverse

from campaigns import documents
from campaigns.models import (
    DocumentAcknowledgement,
    DocumentDistribution,
    DocumentPublication,
    DocumentRecipient,
    DocumentReminder,
    DocumentVersion,
    PolicyDocument,
    PublicationStatus,
)
from tests.partners.factories import AdministratorFactory

from .conftest import new_communication
from .documents_support import document, new_version, pdf_bytes, private_documents, upload  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("tg_settings", "eager_tasks")]


def inline_management(response) -> dict:
    """The management form fields of every inline on a page, as the browser would post them back."""
    data = {}
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update({f"{formset.prefix}-{key}": value for key, value in formset.management_form.initial.items()})
    return data


def upload_prefix(response) -> str:
    return next(
        inline.formset.prefix
        for inline in response.context["inline_admin_formsets"]
        if inline.opts.__class__.__name__ == "DocumentVersionUploadInline"
    )


def test_a_document_and_its_first_version_are_created_on_one_page(client, author):
    client.force_login(author)
    url = reverse("admin:campaigns_policydocument_add")
    page = client.get(url)
    prefix = upload_prefix(page)
    data = {
        **inline_management(page),
        "kind": "policy",
        "title": "Supplier code of conduct",
        "remind_after_days": 5,
        "max_reminders": 1,
        "reminder_tag": "coc-reminder",
        f"{prefix}-0-version": "1.0",
        f"{prefix}-0-change_summary": "First issue.",
        f"{prefix}-0-file": upload("code.pdf", pdf_bytes()),
    }

    response = client.post(url, data)

    assert response.status_code == 302, response.context and response.context["errors"]
    document = PolicyDocument.objects.get()
    assert (document.title, document.owner, document.max_reminders) == ("Supplier code of conduct", author, 1)
    version = DocumentVersion.objects.get()
    assert (version.version, version.status, version.created_by, version.file_name) == ("1.0", "draft", author,
                                                                                         "code.pdf")


def test_a_bad_upload_is_shown_on_the_page_and_nothing_is_saved(client, author, document):
    client.force_login(author)
    url = reverse("admin:campaigns_policydocument_change", args=[document.pk])
    page = client.get(url)
    prefix = upload_prefix(page)
    data = {
        **inline_management(page),
        "kind": document.kind,
        "title": document.title,
        "owner": author.pk,
        "remind_after_days": 7,
        "max_reminders": 2,
        f"{prefix}-0-version": "1.0",
        f"{prefix}-0-change_summary": "First issue.",
        f"{prefix}-0-file": upload("terms.docx", pdf_bytes()),
    }

    response = client.post(url, data)

    assert response.status_code == 200
    assert "“terms.docx” ends in .docx but its content is not a Word document: it is a PDF." in response.content.decode()
    assert not DocumentVersion.objects.exists()


def act(client, version, action, **data):
    return client.post(reverse("admin:campaigns_documentversion_action", args=[version.pk, action]), data, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_the_version_page_walks_the_four_eyes_rule(client, author, approver, document, tg_emulator,
                                                   django_capture_on_commit_callbacks):
    version = new_version(document, author)
    client.force_login(author)
    page = client.get(reverse("admin:campaigns_documentversion_change", args=[version.pk]))
    assert [a[0] for a in page.context["actions"]] == ["submit"]
    assert act(client, version, "submit").status_code == 200

    client.force_login(approver)
    page = client.get(reverse("admin:campaigns_documentversion_change", args=[version.pk]))
    assert [a[0] for a in page.context["actions"]] == ["approve", "request_changes"]
    with django_capture_on_commit_callbacks(execute=True):
        response = act(client, version, "approve")
    page = client.get(reverse("admin:campaigns_documentversion_change", args=[version.pk]))

    assert messages_of(response) == ["Approved: it is the latest version and is being published to Trading Grid."]
    assert DocumentPublication.objects.get(version=version).status == PublicationStatus.PUBLISHED
    assert "Published in Trading Grid" in page.content.decode()
    assert page.context["actions"] == []


def test_the_submitter_sees_no_approve_button_and_is_refused(client, approver, document):
    version = new_version(document, approver)
    documents.document_version_submit(version_id=version.pk, actor=approver)
    client.force_login(approver)

    page = client.get(reverse("admin:campaigns_documentversion_change", args=[version.pk]))
    response = act(client, version, "approve")

    assert page.context["actions"] == []
    assert page.context["waiting_note"] == "You submitted it: another approver has to approve it (four-eyes rule)."
    assert messages_of(response) == [
        "You submitted “Trading terms” version 2026.1: someone else has to approve it (four-eyes rule)."
    ]
    assert DocumentVersion.objects.get(pk=version.pk).status == "submitted"


def test_request_changes_from_the_page_needs_a_comment(client, author, approver, document):
    version = new_version(document, author)
    documents.document_version_submit(version_id=version.pk, actor=author)
    client.force_login(approver)

    refused = act(client, version, "request_changes", comment="")
    done = act(client, version, "request_changes", comment="Fix the penalty table.")

    assert messages_of(refused) == ["Say what should change: a comment is required when requesting changes."]
    assert messages_of(done) == ["Sent back to its author with your comment."]
    assert DocumentVersion.objects.get(pk=version.pk).status == "changes_requested"


def test_the_file_can_be_replaced_from_the_page(client, author, document):
    version = new_version(document, author)
    client.force_login(author)

    response = client.post(
        reverse("admin:campaigns_documentversion_action", args=[version.pk, "replace_file"]),
        {"file": upload("terms-2.pdf", pdf_bytes("second")), "change_summary": "Typo fixed."},
        follow=True,
    )

    assert messages_of(response) == ["File replaced; the version is a draft again."]
    version = DocumentVersion.objects.get(pk=version.pk)
    assert (version.file_name, version.change_summary) == ("terms-2.pdf", "Typo fixed.")


def test_distribute_creates_a_draft_policy_update_linked_to_the_version(
    client, author, approver, document, audience, suppliers, tg_emulator, django_capture_on_commit_callbacks
):
    from .documents_support import approve_version

    version = approve_version(new_version(document, author), author, approver, django_capture_on_commit_callbacks)
    client.force_login(author)
    url = reverse("admin:campaigns_documentversion_distribute", args=[version.pk])
    page = client.get(url)
    assert f"/d/{version.pk}/*|DOCKEY|*" in page.context["form"].initial["html_body"]

    response = client.post(url, {
        "audience": audience.pk, "segments": [suppliers.pk], "subject": "New trading terms",
        "from_name": "Partner team", "reply_to": "partners@example.com",
        "html_body": page.context["form"].initial["html_body"],
    })

    distribution = DocumentDistribution.objects.get()
    assert response["Location"] == reverse("admin:campaigns_communication_change", args=[distribution.communication_id])
    assert (distribution.version, distribution.communication.kind) == (version, "policy_update")


# --- list pages: a constant number of queries ------------------------------------------------------------------


def _rows(model_name: str, count: int, user, document) -> None:
    for _ in range(count):
        n = DocumentVersion.objects.count()
        version = new_version(document, user, label=f"v{n}")
        if model_name == "policydocument":
            other = documents.document_create(actor=user, kind="policy", title=f"Doc {n}")
            new_version(other, user, label="1")
        elif model_name == "documentpublication":
            DocumentPublication.objects.create(version=version)
        elif model_name in ("documentreminder", "documentacknowledgement"):
            communication = new_communication(user, _audience(), [])
            distribution = DocumentDistribution.objects.create(communication=communication, version=version)
            recipient = DocumentRecipient.objects.create(version=version, distribution=distribution,
                                                         email=f"c{n}@x.example")
            from django.utils import timezone

            if model_name == "documentreminder":
                DocumentReminder.objects.create(recipient=recipient, version=version, kind="reminder", stage=1,
                                                due_at=timezone.now())
            else:
                DocumentAcknowledgement.objects.create(version=version, partner_company_id="GC00000001AA",
                                                       email=recipient.email, acknowledged_at=timezone.now(),
                                                       source="poll")


def _audience():
    from partners import services as partner_services

    return partner_services.audience_default_ensure()


@pytest.mark.parametrize(
    "model_name",
    ["policydocument", "documentversion", "documentpublication", "documentreminder", "documentacknowledgement"],
)
def test_list_pages_have_a_constant_query_count(client, model_name, document, django_assert_max_num_queries):
    user = AdministratorFactory(is_superuser=True)
    client.force_login(user)
    url = reverse(f"admin:campaigns_{model_name}_changelist")
    _rows(model_name, 2, user, document)
    with django_assert_max_num_queries(30) as few:
        assert client.get(url).status_code == 200

    _rows(model_name, 25, user, document)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(url)
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 27


def test_the_reminder_ledger_is_visible_and_read_only(client, approver, document, author):
    _rows("documentreminder", 1, author, document)
    client.force_login(approver)

    listing = client.get(reverse("admin:campaigns_documentreminder_changelist"))
    row = DocumentReminder.objects.get()
    detail = client.get(reverse("admin:campaigns_documentreminder_change", args=[row.pk]))

    assert listing.status_code == 200 and b"c" in listing.content
    assert detail.status_code == 200
    assert not detail.context["has_change_permission"]
