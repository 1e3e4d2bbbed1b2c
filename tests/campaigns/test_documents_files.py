# ruff: noqa: F811 - fixtures imported from documents_support are redefined as test arguments
"""Policy document uploads: size and type (extension AND content), size and SHA-256 recorded, files kept outside
any URL and served only to logged-in staff."""

import hashlib
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from campaigns import documents
from campaigns.document_files import check_upload, private_document_storage
from campaigns.models import DocumentVersion
from tests.partners.factories import UserFactory

from .conftest import make_user
from .documents_support import (  # noqa: F401 - private_documents is an autouse fixture
    EXCEL_MAIN,
    document,
    docx_bytes,
    new_version,
    office_bytes,
    pdf_bytes,
    private_documents,
    upload,
    xlsx_bytes,
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("name", "content", "file_type"),
    [("terms.pdf", pdf_bytes(), "pdf"), ("Guide.DOCX", docx_bytes(), "docx"), ("rates.xlsx", xlsx_bytes(), "xlsx")],
)
def test_pdf_docx_and_xlsx_are_accepted_with_size_and_sha256(document, author, name, content, file_type):
    version = new_version(document, author, content=content, name=name)

    assert (version.file_name, version.file_type, version.size) == (name, file_type, len(content))
    assert version.sha256 == hashlib.sha256(content).hexdigest()
    with version.file.open("rb") as stored:
        assert stored.read() == content


def message(name: str, content: bytes) -> str:
    with pytest.raises(ValidationError) as caught:
        check_upload(upload(name, content))
    return caught.value.messages[0]


def test_too_large_is_refused_naming_the_size_and_the_limit(settings):
    settings.POLICY_DOCUMENT_MAX_BYTES = 1024

    assert message("big.pdf", pdf_bytes() + b"0" * 2048) == "“big.pdf” is 2.1 KiB; files up to 1 KiB are accepted."
    assert check_upload(upload("small.pdf", pdf_bytes())).file_type == "pdf"


def test_the_default_limit_is_20_mib(settings):
    assert message("huge.pdf", b"%PDF-" + b"0" * (20 * 1024 * 1024)) == (
        "“huge.pdf” is 20 MiB; files up to 20 MiB are accepted."
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("notes.txt", "“notes.txt” has .txt: only .pdf, .docx and .xlsx files are accepted (PDF, Word, Excel)."),
        ("terms.doc", "“terms.doc” has .doc: only .pdf, .docx and .xlsx files are accepted (PDF, Word, Excel)."),
        ("terms", "“terms” has no extension: only .pdf, .docx and .xlsx files are accepted (PDF, Word, Excel)."),
        ("macro.xlsm", "“macro.xlsm” has .xlsm: only .pdf, .docx and .xlsx files are accepted (PDF, Word, Excel)."),
    ],
)
def test_other_extensions_are_refused_even_with_good_content(name, expected):
    assert message(name, pdf_bytes()) == expected


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("fake.pdf", b"just some text, no PDF", "“fake.pdf” ends in .pdf but its content is not a PDF."),
        ("terms.pdf", docx_bytes(), "“terms.pdf” ends in .pdf but its content is not a PDF: it is a Word document."),
        ("terms.docx", pdf_bytes(), "“terms.docx” ends in .docx but its content is not a Word document: it is a PDF."),
        (
            "rates.xlsx",
            docx_bytes(),
            "“rates.xlsx” ends in .xlsx but its content is not an Excel workbook: it is a Word document.",
        ),
        (
            "terms.docx",
            office_bytes(None),
            "“terms.docx” ends in .docx but its content is not a Word document: it is a ZIP archive, not a Word or "
            "Excel file.",
        ),
        (
            "rates.xlsx",
            office_bytes("application/vnd.ms-excel.sheet.macroEnabled.main+xml", part="xl/workbook.xml"),
            "“rates.xlsx” ends in .xlsx but its content is not an Excel workbook: it is a macro-enabled Excel "
            "workbook (.xlsm).",
        ),
        ("broken.docx", b"PK\x03\x04 not really a zip", "“broken.docx” ends in .docx but its content is not a Word "
         "document: it is a ZIP archive, not a Word or Excel file."),
        ("evil.xlsx", b"MZ\x90\x00 an executable", "“evil.xlsx” ends in .xlsx but its content is not an Excel "
         "workbook."),
    ],
)
def test_content_must_match_the_extension(name, content, expected):
    assert message(name, content) == expected


def test_an_empty_file_is_refused():
    assert message("empty.pdf", b"") == "“empty.pdf” is empty."


def test_an_xlsx_content_type_is_recognised_whatever_the_other_parts():
    assert check_upload(upload("a.xlsx", office_bytes(EXCEL_MAIN, part="xl/workbook.xml"))).file_type == "xlsx"


def test_a_refused_upload_writes_nothing(document, author, private_documents):
    with pytest.raises(ValidationError) as caught:
        new_version(document, author, content=b"not a pdf", name="terms.pdf")

    assert caught.value.message_dict == {"file": ["“terms.pdf” ends in .pdf but its content is not a PDF."]}
    assert not DocumentVersion.objects.exists()
    assert not any(Path(private_documents).rglob("*.pdf"))


def test_a_version_label_is_unique_within_its_document(document, author):
    new_version(document, author, label="1.0")

    with pytest.raises(ValidationError) as caught:
        new_version(document, author, label="1.0")

    assert caught.value.message_dict == {"version": ["“Trading terms” already has a version 1.0."]}


def test_files_live_in_the_private_root_and_have_no_url(document, author, private_documents, settings):
    version = new_version(document, author)

    assert Path(version.file.path).is_relative_to(Path(private_documents).resolve())
    assert not Path(version.file.path).is_relative_to(Path(settings.MEDIA_ROOT).resolve())
    with pytest.raises(ValueError, match="no public URL"):
        private_document_storage.url(version.file.name)


# --- the staff-only download --------------------------------------------------------------------------------


@pytest.fixture
def stored(document, author):
    return new_version(document, author, content=pdf_bytes("secret terms"))


def download(client, version):
    return client.get(reverse("admin:campaigns_documentversion_download", args=[version.pk]))


def test_staff_with_the_permission_download_the_file(client, stored, approver):
    client.force_login(approver)

    response = download(client, stored)

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == pdf_bytes("secret terms")
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="terms.pdf"'
    assert {"private", "no-store"} <= {part.strip() for part in response["Cache-Control"].split(",")}


def test_anonymous_visitors_are_sent_to_the_login_page(client, stored):
    response = download(client, stored)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert b"secret terms" not in response.content


def test_logged_in_non_staff_are_refused_even_with_the_permission(client, stored):
    outsider = make_user("Approvers", username="partner-user", is_staff=False)
    assert outsider.has_perm("campaigns.view_documentversion")
    client.force_login(outsider)

    response = download(client, stored)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_permission_are_refused(client, stored):
    client.force_login(UserFactory(is_staff=True))

    assert download(client, stored).status_code == 403


def test_the_service_refuses_people_without_the_upload_permission(document):
    with pytest.raises(documents.PermissionRefused):
        new_version(document, UserFactory(is_staff=True))
