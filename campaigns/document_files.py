"""Policy document files: what an upload may be, and where it is kept.

An upload is accepted when its size is within `POLICY_DOCUMENT_MAX_BYTES` and it is a PDF, a Word document
(.docx) or an Excel workbook (.xlsx) by its extension AND by its content: a PDF starts with `%PDF-`; .docx
and .xlsx are ZIP containers whose `[Content_Types].xml` declares the main part of a Word document or of a
workbook. Each refusal names the file and the problem.

Files live in a private storage (`POLICY_DOCUMENT_ROOT`, outside any URL): `url()` refuses, so the only way
to read one is the staff-only download view of the admin."""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import FileSystemStorage
from django.utils.deconstruct import deconstructible
from django.utils.text import get_valid_filename

PDF, DOCX, XLSX = "pdf", "docx", "xlsx"
# extension -> (what it is, with its article; MIME type)
FILE_TYPES = {
    PDF: ("a PDF", "application/pdf"),
    DOCX: ("a Word document", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    XLSX: ("an Excel workbook", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
}
FILE_TYPE_CHOICES = [(PDF, "PDF"), (DOCX, "Word (.docx)"), (XLSX, "Excel (.xlsx)")]
# The main part each Office format declares in [Content_Types].xml.
_MAIN_PART = {
    DOCX: b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
    XLSX: b"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
}
# Macro-enabled variants (docm, xlsm) declare these instead: refused, named as what they are.
_MACRO_PART = {
    b"application/vnd.ms-word.document.macroEnabled.main+xml": "docm",
    b"application/vnd.ms-excel.sheet.macroEnabled.main+xml": "xlsm",
}
_CONTENT_TYPES_MAX = 1024 * 1024  # a real [Content_Types].xml is a few KiB; more is not an Office file
ACCEPTED = ".pdf, .docx and .xlsx"


def max_upload_bytes() -> int:
    return int(getattr(settings, "POLICY_DOCUMENT_MAX_BYTES", 20 * 1024 * 1024))


def human_size(size: int) -> str:
    """1.5 KiB, 20 MiB: one decimal, none when it is zero."""
    if size < 1024:
        return f"{size} bytes"
    value, unit = (size / 1024, "KiB") if size < 1024 * 1024 else (size / (1024 * 1024), "MiB")
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


@dataclass(frozen=True)
class CheckedFile:
    file_name: str
    file_type: str
    size: int
    sha256: str

    @property
    def content_type(self) -> str:
        return FILE_TYPES[self.file_type][1]


def check_upload(upload) -> CheckedFile:
    """Size, extension and content signature of an uploaded file; ValidationError naming the problem."""
    name = Path(str(getattr(upload, "name", "") or "")).name or "The file"
    size = upload.size if getattr(upload, "size", None) is not None else _measure(upload)
    limit = max_upload_bytes()
    if size > limit:
        raise ValidationError(
            f"“{name}” is {human_size(size)}; files up to {human_size(limit)} are accepted.", code="too_large"
        )
    if size == 0:
        raise ValidationError(f"“{name}” is empty.", code="empty")
    extension = Path(name).suffix.lower().lstrip(".")
    if extension not in FILE_TYPES:
        shown = f".{extension}" if extension else "no extension"
        raise ValidationError(
            f"“{name}” has {shown}: only {ACCEPTED} files are accepted (PDF, Word, Excel).", code="extension"
        )
    digest = hashlib.sha256()
    head = b""
    upload.seek(0)
    for chunk in upload.chunks() if hasattr(upload, "chunks") else iter(lambda: upload.read(65536), b""):
        if len(head) < 8:
            head += chunk[: 8 - len(head)]
        digest.update(chunk)
    actual = _sniff(upload, head)
    upload.seek(0)
    if actual != extension:
        raise ValidationError(
            f"“{name}” ends in .{extension} but its content is not {FILE_TYPES[extension][0]}{_describe(actual)}.",
            code="content",
        )
    return CheckedFile(file_name=name, file_type=extension, size=size, sha256=digest.hexdigest())


def _measure(upload) -> int:
    upload.seek(0, io.SEEK_END)
    size = upload.tell()
    upload.seek(0)
    return size


def _sniff(upload, head: bytes) -> str:
    """pdf, docx, xlsx, or what else it is ("zip", "docm", "xlsm", "" for unknown)."""
    if head.startswith(b"%PDF-"):
        return PDF
    if not head.startswith(b"PK\x03\x04"):
        return ""
    upload.seek(0)
    try:
        with zipfile.ZipFile(upload) as archive:
            info = archive.getinfo("[Content_Types].xml")
            if info.file_size > _CONTENT_TYPES_MAX:
                return "zip"
            with archive.open(info) as member:
                content_types = member.read(_CONTENT_TYPES_MAX + 1)
    except (KeyError, zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError, EOFError):
        return "zip"
    for kind, part in _MAIN_PART.items():
        if part in content_types:
            return kind
    for part, kind in _MACRO_PART.items():
        if part in content_types:
            return kind
    return "zip"


def _describe(actual: str) -> str:
    if actual in FILE_TYPES:
        return f": it is {FILE_TYPES[actual][0]}"
    return {
        "docm": ": it is a macro-enabled Word document (.docm)",
        "xlsm": ": it is a macro-enabled Excel workbook (.xlsm)",
        "zip": ": it is a ZIP archive, not a Word or Excel file",
    }.get(actual, "")


def document_upload_to(instance, filename: str) -> str:
    """policy-documents/<document id>/<random>/<original name>: names never collide nor reveal each other."""
    safe = get_valid_filename(Path(filename).name)[:120] or "document"
    return f"policy-documents/{instance.document_id or 'new'}/{uuid.uuid4().hex}/{safe}"


@deconstructible(path="campaigns.document_files.PrivateDocumentStorage")
class PrivateDocumentStorage(FileSystemStorage):
    """Files under POLICY_DOCUMENT_ROOT (read when used, so tests can point it elsewhere); never a URL."""

    def __init__(self):
        super().__init__()

    @property
    def base_location(self):
        return str(getattr(settings, "POLICY_DOCUMENT_ROOT", Path(settings.MEDIA_ROOT).parent / "private"))

    @property
    def location(self):
        return str(Path(self.base_location).resolve())

    def url(self, name):
        raise ValueError("Policy documents have no public URL: staff download them through the admin.")


private_document_storage = PrivateDocumentStorage()
