"""Builders and fixtures shared by the policy document tests (tests/campaigns/test_documents*.py)."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from campaigns import documents
from campaigns.models import DocumentKind, DocumentVersion, PolicyDocument

WORD_MAIN = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
EXCEL_MAIN = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"


def pdf_bytes(text: str = "Trading terms") -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n% " + text.encode() + b"\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    )


def office_bytes(main_content_type: str | None, *, part: str = "word/document.xml", text: str = "x") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        if main_content_type is not None:
            archive.writestr(
                "[Content_Types].xml",
                '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                'content-types"><Default Extension="xml" ContentType="application/xml"/>'
                f'<Override PartName="/{part}" ContentType="{main_content_type}"/></Types>',
            )
        archive.writestr(part, f"<doc>{text}</doc>")
    return out.getvalue()


def docx_bytes(text: str = "x") -> bytes:
    return office_bytes(WORD_MAIN, text=text)


def xlsx_bytes(text: str = "x") -> bytes:
    return office_bytes(EXCEL_MAIN, part="xl/workbook.xml", text=text)


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


@pytest.fixture(autouse=True)
def private_documents(settings, tmp_path):
    """Uploaded versions go to a fresh folder for each test."""
    settings.POLICY_DOCUMENT_ROOT = tmp_path / "private"
    return settings.POLICY_DOCUMENT_ROOT


@pytest.fixture
def document(author) -> PolicyDocument:
    return documents.document_create(
        actor=author,
        kind=DocumentKind.TRADING_TERMS,
        title="Trading terms",
        description="Payment, delivery and penalties.",
        remind_after_days=7,
        max_reminders=2,
        reminder_tag="policy-reminder",
    )


def new_version(document: PolicyDocument, actor, label: str = "2026.1", content: bytes | None = None,
                name: str = "terms.pdf") -> DocumentVersion:
    return documents.document_version_upload(
        document_id=document.pk,
        actor=actor,
        upload=upload(name, content if content is not None else pdf_bytes(label)),
        version=label,
        change_summary=f"Version {label}.",
    )


def approve_version(version: DocumentVersion, author, approver, capture) -> DocumentVersion:
    """Submit (author) and approve (approver); on-commit tasks run, so the publication happens."""
    documents.document_version_submit(version_id=version.pk, actor=author)
    with capture(execute=True):
        documents.document_version_approve(version_id=version.pk, actor=approver)
    return DocumentVersion.objects.select_related("document", "publication").get(pk=version.pk)
