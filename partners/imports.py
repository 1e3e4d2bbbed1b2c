"""CSV import of partner lists: one row per contact, the partner's columns repeated on each row.

The file is read twice, streaming, so memory does not grow with the file's text:
1. check: decode, parse and validate every row, merge each partner's columns across its rows, and collect
   every error (row number as a spreadsheet shows it, column, problem). Nothing is written.
2. apply (only when the check found no error): inside one transaction, upsert partners, product lines and
   contacts in chunks with bulk queries. A dry run applies too and then rolls back, so its counts are exact.

Interfaces call `partners.services.partner_import_file`, never this module directly.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models.functions import Lower
from django_countries import countries

from partners.models import (
    BUID_PATTERN,
    Contact,
    ContactRole,
    ContactSource,
    PartnerType,
    ProductLine,
    Region,
    Tier,
    TradingPartner,
)

REQUIRED_COLUMNS = ("tg_company_id", "partner_name", "partner_type", "country_code", "contact_email")
OPTIONAL_COLUMNS = (
    "region",
    "tier",
    "product_lines",
    "first_name",
    "last_name",
    "role",
    "phone",
    "language",
    "partner_manager",
)
PARTNER_COLUMNS = ("partner_name", "partner_type", "region", "country_code", "tier", "product_lines", "partner_manager")
CONTACT_COLUMNS = ("first_name", "last_name", "role", "phone", "language")
EXPORT_COLUMNS = (
    REQUIRED_COLUMNS[:4] + ("region", "tier", "product_lines", "contact_email") + CONTACT_COLUMNS + ("partner_manager",)
)

# Cells starting with these are run as formulas by spreadsheet programs (CSV injection, OWASP); the
# export prefixes them with an apostrophe, which the import removes again.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

CHUNK_ROWS = 1000
SNIFF_BYTES = 64 * 1024
DECODE_CHUNK_BYTES = 1024 * 1024
MAX_ERRORS_KEPT = 5000

_BUID_RE = re.compile(BUID_PATTERN)
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}([-_][a-z]{2,4})?$")
_PHONE_RE = re.compile(r"^[0-9+()./ \-]*(?:(?:ext\.?|x) ?[0-9]+)?$", re.IGNORECASE)
_BINARY_SIGNATURES = {
    b"PK\x03\x04": "a ZIP archive or an Excel/Word file (.xlsx, .docx)",
    b"\xd0\xcf\x11\xe0": "an old-style Excel or Word file (.xls, .doc)",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip archive",
}


# --- Results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportProblem:
    """One problem with the file; `row` is the line number a spreadsheet shows (the header is row 1)."""

    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"Row {self.row}")
        if self.column:
            where.append(f"column {self.column}")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def as_dict(self) -> dict:
        return {"row": self.row, "column": self.column, "message": self.message, "text": str(self)}


class ImportFileError(Exception):
    """The file as a whole cannot be imported (not CSV, undecodable, missing columns)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.problem = ImportProblem(message)


@dataclass
class RowOutcome:
    row: int
    status: str  # new, updated, unchanged, error
    tg_company_id: str
    email: str
    detail: str = ""

    def as_dict(self) -> dict:
        return {
            "row": self.row,
            "status": self.status,
            "tg_company_id": self.tg_company_id,
            "email": self.email,
            "detail": self.detail,
        }


@dataclass
class ImportResult:
    dry_run: bool
    total_rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    error_rows: int = 0
    partners_created: int = 0
    partners_updated: int = 0
    problems: list[ImportProblem] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    preview: list[RowOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        return f"created={self.created} updated={self.updated} unchanged={self.unchanged} errors={self.error_rows}"

    @property
    def changed_nothing(self) -> bool:
        return self.ok and self.created == 0 and self.updated == 0


ProgressCallback = Callable[[str, int, int], None]  # (phase, rows done, rows in all; 0 while unknown)


# --- Reading the file -------------------------------------------------------------------------------


def _detect_encoding(stream: BinaryIO) -> str:
    """UTF-8 (with or without BOM) or UTF-16 by BOM; otherwise Windows-1252, as Excel writes it."""
    stream.seek(0)
    head = stream.read(SNIFF_BYTES)
    if not head.strip():
        raise ImportFileError("The file is empty.")
    for signature, what in _BINARY_SIGNATURES.items():
        if head.startswith(signature):
            raise ImportFileError(f"The file is not a CSV file: it looks like {what}. Save it as CSV and try again.")
    if head.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    else:
        if b"\x00" in head:
            raise ImportFileError("The file is not a CSV file: it contains binary data.")
        encoding = "utf-8"
    stream.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        while chunk := stream.read(DECODE_CHUNK_BYTES):
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        if encoding == "utf-8-sig":
            raise ImportFileError("The file starts with a UTF-8 marker but is not valid UTF-8 text.") from None
        encoding = "cp1252"
        stream.seek(0)
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            while chunk := stream.read(DECODE_CHUNK_BYTES):
                decoder.decode(chunk)
        except UnicodeDecodeError:
            raise ImportFileError(
                "The file is not a CSV file: it cannot be read as UTF-8 or Windows-1252 text."
            ) from None
    return encoding


def _normalise_header(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip().strip("\ufeff").strip().lower())


class CsvSource:
    """A partner list on disk or in memory, readable as many times as needed."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.encoding = _detect_encoding(stream)
        self.delimiter = self._detect_delimiter()
        self.columns, self.header_row = self._read_header()

    def _text(self) -> io.TextIOWrapper:
        self.stream.seek(0)
        return io.TextIOWrapper(self.stream, encoding=self.encoding, newline="")

    def _detect_delimiter(self) -> str:
        text = self._text()
        try:
            for line in text:
                if line.strip():
                    counts = {d: line.count(d) for d in (",", ";", "\t")}
                    return max(counts, key=counts.get) if max(counts.values()) else ","
            return ","
        finally:
            text.detach()

    def _reader(self, text: io.TextIOWrapper):
        return csv.reader(text, delimiter=self.delimiter, strict=False)

    def _read_header(self) -> tuple[list[str], int]:
        text = self._text()
        try:
            reader = self._reader(text)
            for cells in reader:
                if any(cell.strip() for cell in cells):
                    header, header_row = [_normalise_header(cell) for cell in cells], reader.line_num
                    break
            else:
                raise ImportFileError("The file has no header row.")
        except csv.Error as exc:
            raise ImportFileError(f"The file is not a CSV file: {exc}.") from None
        finally:
            text.detach()
        while header and not header[-1]:
            header.pop()
        seen = set()
        for name in header:
            if name and name in seen:
                raise ImportFileError(f"Column {name} appears twice in the header.")
            seen.add(name)
        missing = [name for name in REQUIRED_COLUMNS if name not in seen]
        if missing:
            raise ImportFileError(
                "Missing required column"
                + ("s" if len(missing) > 1 else "")
                + ": "
                + ", ".join(missing)
                + f". The header row has: {', '.join(name or '(blank)' for name in header) or 'nothing'}."
            )
        return header, header_row

    @property
    def ignored_columns(self) -> list[str]:
        known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS)
        return [name for name in self.columns if name and name not in known]

    def rows(self) -> Iterator[tuple[int, dict[str, str] | ImportProblem]]:
        """(spreadsheet row number, {column: stripped value}) per non-blank data row; a problem instead of
        the values when the row itself cannot be read."""
        text = self._text()
        try:
            reader = self._reader(text)
            width = len(self.columns)
            previous_line = 0
            try:
                for cells in reader:
                    row_number = previous_line + 1
                    previous_line = reader.line_num
                    if row_number <= self.header_row:
                        continue
                    if not any(cell.strip() for cell in cells):
                        continue
                    if len(cells) > width and any(cell.strip() for cell in cells[width:]):
                        yield (
                            row_number,
                            ImportProblem(
                                f"the row has {len(cells)} values but the header has {width} columns.", row=row_number
                            ),
                        )
                        continue
                    yield (
                        row_number,
                        {
                            name: _cell(cells[index]) if index < len(cells) else ""
                            for index, name in enumerate(self.columns)
                            if name
                        },
                    )
            except csv.Error as exc:
                yield previous_line + 1, ImportProblem(f"the file is not valid CSV here: {exc}.", row=previous_line + 1)
        finally:
            text.detach()


# --- Validating a row --------------------------------------------------------------------------------


def _choice_lookup(choices) -> dict[str, str]:
    lookup = {}
    for value, label in choices.choices:
        lookup[value.lower()] = value
        lookup[str(label).lower()] = value
    return lookup


_PARTNER_TYPES = _choice_lookup(PartnerType)
_REGIONS = _choice_lookup(Region)
_TIERS = _choice_lookup(Tier)
_ROLES = _choice_lookup(ContactRole)


def _choice(value: str, lookup: dict[str, str], choices, what: str) -> str:
    try:
        return lookup[value.lower()]
    except KeyError:
        raise ValidationError(f"'{value}' is not a {what}; use one of {', '.join(choices.values)}.") from None


class RowValidator:
    def __init__(self, staff_by_email: dict[str, int]):
        self.staff_by_email = staff_by_email

    def partner_values(self, raw: dict[str, str]) -> tuple[str, dict, list[tuple[str, str]]]:
        """(BUID, {partner column: normalized value, only for cells that are filled}, [(column, error)])."""
        errors: list[tuple[str, str]] = []
        values: dict = {}
        buid = raw["tg_company_id"].upper()
        if not buid:
            errors.append(("tg_company_id", "a value is required."))
        elif not _BUID_RE.match(buid):
            errors.append(
                ("tg_company_id", f"'{raw['tg_company_id']}' is not a Trading Grid company id (like GC00804444LX).")
            )
        for column, check in (
            ("partner_name", self._name),
            ("partner_type", lambda v: _choice(v, _PARTNER_TYPES, PartnerType, "partner type")),
            ("region", lambda v: _choice(v, _REGIONS, Region, "region")),
            ("country_code", self._country),
            ("tier", lambda v: _choice(v, _TIERS, Tier, "tier")),
            ("product_lines", self._product_lines),
            ("partner_manager", self._manager),
        ):
            value = raw.get(column, "")
            if not value:
                if column in REQUIRED_COLUMNS:
                    errors.append((column, "a value is required."))
                continue
            try:
                values[column] = check(value)
            except ValidationError as exc:
                errors.append((column, exc.messages[0]))
        return buid, values, errors

    def contact_values(self, raw: dict[str, str]) -> tuple[str, dict, list[tuple[str, str]]]:
        errors: list[tuple[str, str]] = []
        values: dict = {}
        email = raw["contact_email"].lower()
        if not email:
            errors.append(("contact_email", "a value is required."))
        else:
            try:
                validate_email(email)
            except ValidationError:
                errors.append(("contact_email", f"'{raw['contact_email']}' is not a valid email address."))
        for column, check in (
            ("first_name", lambda v: self._max_length(v, 100)),
            ("last_name", lambda v: self._max_length(v, 100)),
            ("role", lambda v: _choice(v, _ROLES, ContactRole, "contact role")),
            ("phone", self._phone),
            ("language", self._language),
        ):
            value = raw.get(column, "")
            if value:
                try:
                    values[column] = check(value)
                except ValidationError as exc:
                    errors.append((column, exc.messages[0]))
        return email, values, errors

    @staticmethod
    def _max_length(value: str, limit: int) -> str:
        if len(value) > limit:
            raise ValidationError(f"is {len(value)} characters long; at most {limit} are allowed.")
        return value

    def _name(self, value: str) -> str:
        return self._max_length(value, 200)

    @staticmethod
    def _country(value: str) -> str:
        code = value.upper()
        if len(code) != 2 or not countries.alpha2(code):
            raise ValidationError(f"'{value}' is not an ISO 3166-1 alpha-2 country code (like DE or US).")
        return code

    @staticmethod
    def _product_lines(value: str) -> tuple[str, ...]:
        names: dict[str, str] = {}
        for name in value.split("|"):
            name = " ".join(name.split())
            if len(name) > 100:
                raise ValidationError(f"product line '{name[:30]}…' is longer than 100 characters.")
            if name:
                names.setdefault(name.lower(), name)
        return tuple(sorted(names.values(), key=str.lower))

    def _manager(self, value: str) -> int:
        try:
            return self.staff_by_email[value.lower()]
        except KeyError:
            raise ValidationError(f"'{value}' is not the email of a Partnerlink staff user.") from None

    @staticmethod
    def _phone(value: str) -> str:
        if len(value) > 40 or not _PHONE_RE.match(value):
            raise ValidationError(f"'{value}' is not a phone number.")
        return value

    @staticmethod
    def _language(value: str) -> str:
        if not _LANGUAGE_RE.match(value.lower()):
            raise ValidationError(f"'{value}' is not a language code (like en, de or pt-BR).")
        code = value.replace("_", "-")
        head, _, tail = code.partition("-")
        return f"{head.lower()}-{tail.upper()}" if tail else head.lower()


# --- The import -------------------------------------------------------------------------------------


class ScratchStore:
    """An import's working memory on disk (a private temporary SQLite database, deleted when closed), so
    memory does not grow with the file: the contacts seen so far, and each partner's merged columns, the
    rows they came from, its id and its outcome. Recently used partner plans stay in a small cache, since a
    file's rows usually come grouped by partner."""

    CACHED_PLANS = 2000

    def __init__(self):
        self.db = sqlite3.connect("")
        self.db.executescript(
            """
            PRAGMA journal_mode = OFF;
            PRAGMA synchronous = OFF;
            CREATE TABLE contact (key TEXT PRIMARY KEY, row INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE partner (
                buid TEXT PRIMARY KEY, first_row INTEGER NOT NULL, plan TEXT NOT NULL,
                id INTEGER, status TEXT, detail TEXT
            );
            """
        )
        self._plans: OrderedDict[str, dict] = OrderedDict()
        self._dirty: set[str] = set()

    def close(self) -> None:
        self.db.close()

    def first_row_of_contact(self, buid: str, email: str, row: int) -> int:
        key = f"{buid}\x1f{email}"
        if self.db.execute("INSERT OR IGNORE INTO contact VALUES (?, ?)", (key, row)).rowcount:
            return row
        return self.db.execute("SELECT row FROM contact WHERE key = ?", (key,)).fetchone()[0]

    def partner_plan(self, buid: str) -> dict | None:
        plan = self._plans.get(buid)
        if plan is not None:
            self._plans.move_to_end(buid)
            return plan
        found = self.db.execute("SELECT plan FROM partner WHERE buid = ?", (buid,)).fetchone()
        if found is None:
            return None
        plan = _decode_plan(found[0])
        self._cache(buid, plan)
        return plan

    def add_partner_plan(self, buid: str, plan: dict) -> None:
        self.db.execute("INSERT INTO partner (buid, first_row, plan) VALUES (?, ?, ?)", (buid, plan["row"], "{}"))
        self._dirty.add(buid)
        self._cache(buid, plan)

    def plan_changed(self, buid: str) -> None:
        self._dirty.add(buid)

    def _cache(self, buid: str, plan: dict) -> None:
        self._plans[buid] = plan
        if len(self._plans) > self.CACHED_PLANS:
            old, old_plan = self._plans.popitem(last=False)
            if old in self._dirty:
                self._write(old, old_plan)

    def _write(self, buid: str, plan: dict) -> None:
        self.db.execute("UPDATE partner SET plan = ? WHERE buid = ?", (json.dumps(plan), buid))
        self._dirty.discard(buid)

    def flush(self) -> None:
        for buid in list(self._dirty):
            self._write(buid, self._plans[buid])

    def partner_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM partner").fetchone()[0]

    def partner_chunks(self, size: int) -> Iterator[list[tuple[str, dict]]]:
        """Every partner plan in the order the file first named them, `size` at a time."""
        self.flush()
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT rowid, buid, plan FROM partner WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, size)
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [(buid, _decode_plan(plan)) for _, buid, plan in rows]

    def record_partner_outcomes(self, outcomes: list[tuple[int, str, str, str]]) -> None:
        """(id, status, detail, buid) per partner."""
        self.db.executemany("UPDATE partner SET id = ?, status = ?, detail = ? WHERE buid = ?", outcomes)

    def partner_outcomes(self, buids: set[str]) -> dict[str, tuple[int, int, str, str]]:
        """BUID -> (id, first row, status, detail)."""
        found = {}
        names = list(buids)
        for start in range(0, len(names), 500):
            batch = names[start : start + 500]
            marks = ",".join("?" * len(batch))
            for buid, partner_id, first_row, status, detail in self.db.execute(
                f"SELECT buid, id, first_row, status, detail FROM partner WHERE buid IN ({marks})",  # noqa: S608
                batch,
            ):
                found[buid] = (partner_id, first_row, status, detail)
        return found


def _decode_plan(text: str) -> dict:
    plan = json.loads(text)
    if "product_lines" in plan["values"]:
        plan["values"]["product_lines"] = tuple(plan["values"]["product_lines"])
    return plan


class PartnerListImport:
    """One run over one file. `run()` returns the result; nothing is written unless it is ok."""

    def __init__(
        self,
        stream: BinaryIO,
        *,
        actor_id: int | None,
        default_manager_id: int | None,
        restrict_to_manager_id: int | None,
        dry_run: bool,
        source_label: str,
        preview_limit: int,
        progress: ProgressCallback | None,
    ):
        self.stream = stream
        self.actor_id = actor_id
        self.default_manager_id = default_manager_id
        self.restrict_to_manager_id = restrict_to_manager_id
        self.dry_run = dry_run
        self.source_label = source_label
        self.preview_limit = preview_limit
        self.progress = progress or (lambda phase, done, total: None)
        self.result = ImportResult(dry_run=dry_run)
        self.scratch = ScratchStore()

    # Problems -----------------------------------------------------------------------------------
    def _problem(self, problem: ImportProblem) -> None:
        if len(self.result.problems) < MAX_ERRORS_KEPT:
            self.result.problems.append(problem)

    def _row_error(self, row: int, buid: str, email: str, problems: list[ImportProblem]) -> None:
        for problem in problems:
            self._problem(problem)
        self.result.error_rows += 1
        if len(self.result.preview) < self.preview_limit:
            self.result.preview.append(RowOutcome(row, "error", buid, email, "; ".join(str(p) for p in problems)))

    # Pass 1 ---------------------------------------------------------------------------------------
    def check(self, source: CsvSource) -> None:
        user_model = get_user_model()
        staff_by_email = {
            email.lower(): pk
            for pk, email in user_model.objects.filter(is_staff=True, is_active=True)
            .exclude(email="")
            .values_list("pk", "email")
        }
        validator = RowValidator(staff_by_email)
        rows = 0
        for row, raw in source.rows():
            rows += 1
            if isinstance(raw, ImportProblem):
                self._row_error(row, "", "", [raw])
                continue
            buid, partner_values, partner_errors = validator.partner_values(raw)
            email, contact_values, contact_errors = validator.contact_values(raw)
            problems = [ImportProblem(message, row, column) for column, message in partner_errors + contact_errors]
            if all(column != "tg_company_id" for column, _ in partner_errors):
                problems += self._merge_partner(row, buid, partner_values)
            if email and all(column != "contact_email" for column, _ in contact_errors):
                first = self.scratch.first_row_of_contact(buid, email, row)
                if first != row:
                    problems.append(
                        ImportProblem(
                            f"contact {email} of {buid} already appears in row {first}.", row, "contact_email"
                        )
                    )
            if problems:
                self._row_error(row, buid, email, problems)
            if rows % CHUNK_ROWS == 0:
                self.progress("checking", rows, 0)
        self.result.total_rows = rows
        if rows == 0:
            self._problem(ImportProblem("The file has a header but no data rows."))
            self.result.error_rows = 1
        if self.restrict_to_manager_id is not None:
            self._check_ownership()

    def _merge_partner(self, row: int, buid: str, values: dict) -> list[ImportProblem]:
        """Remember the partner's columns; a later row may fill a blank cell but not contradict a value."""
        plan = self.scratch.partner_plan(buid)
        if plan is None:
            self.scratch.add_partner_plan(buid, {"row": row, "values": values, "rows": dict.fromkeys(values, row)})
            return []
        problems = []
        for column, value in values.items():
            known = plan["values"].get(column)
            if known is None:
                plan["values"][column] = value
                plan["rows"][column] = row
                self.scratch.plan_changed(buid)
            elif known != value:
                problems.append(
                    ImportProblem(
                        f"'{_display(value)}' differs from '{_display(known)}' given for {buid} "
                        f"in row {plan['rows'][column]}.",
                        row,
                        column,
                    )
                )
        return problems

    def _check_ownership(self) -> None:
        """A partner manager who is not an administrator may only change the partners they manage."""
        user_model = get_user_model()
        names = {}
        for chunk in self.scratch.partner_chunks(CHUNK_ROWS):
            plans = dict(chunk)
            owned_elsewhere = (
                TradingPartner.objects.filter(tg_company_id__in=list(plans))
                .exclude(partner_manager_id=self.restrict_to_manager_id)
                .values_list("tg_company_id", "partner_manager_id")
            )
            for buid, manager_id in owned_elsewhere:
                if manager_id is not None and manager_id not in names:
                    manager = user_model.objects.filter(pk=manager_id).first()
                    names[manager_id] = (manager.get_full_name() or manager.get_username()) if manager else "someone"
                owner = names.get(manager_id, "no one")
                row = plans[buid]["row"]
                message = f"{buid} is managed by {owner}; only its partner manager or an administrator can change it."
                self._row_error(row, buid, "", [ImportProblem(message, row, "tg_company_id")])

    # Pass 2 ---------------------------------------------------------------------------------------
    def apply(self, source: CsvSource) -> None:
        with transaction.atomic():
            self._apply_partners()
            self._apply_contacts(source)
            if self.dry_run:
                transaction.set_rollback(True)

    def _product_line_ids(self) -> dict[str, int]:
        wanted: dict[str, str] = {}
        for chunk in self.scratch.partner_chunks(CHUNK_ROWS):
            for _, plan in chunk:
                for name in plan["values"].get("product_lines", ()):
                    wanted.setdefault(name.lower(), name)
        known = dict(ProductLine.objects.annotate(key=Lower("name")).values_list("key", "pk"))
        missing = [ProductLine(name=name) for key, name in wanted.items() if key not in known]
        if missing:
            ProductLine.objects.bulk_create(missing, ignore_conflicts=True)
            known = dict(ProductLine.objects.annotate(key=Lower("name")).values_list("key", "pk"))
        return known

    def _apply_partners(self) -> None:
        """Upsert every partner of the file, chunk by chunk; each one's id and outcome go to the scratch store."""
        line_ids = self._product_line_ids()
        links = TradingPartner.product_lines.through
        log_entries: list[LogEntry] = []
        for chunk in self.scratch.partner_chunks(CHUNK_ROWS):
            plans = dict(chunk)
            existing = {p.tg_company_id: p for p in TradingPartner.objects.filter(tg_company_id__in=list(plans))}
            current_lines: dict[int, set[int]] = {}
            for partner_id, line_id in links.objects.filter(
                tradingpartner_id__in=[p.pk for p in existing.values()]
            ).values_list("tradingpartner_id", "productline_id"):
                current_lines.setdefault(partner_id, set()).add(line_id)
            to_create, to_update, update_fields = [], [], set()
            new_links, stale_links, outcomes = [], [], []
            wanted_lines: dict[str, set[int]] = {}
            for buid, plan in chunk:
                values = plan["values"]
                if "product_lines" in values:
                    wanted_lines[buid] = {line_ids[name.lower()] for name in values["product_lines"]}
                partner = existing.get(buid)
                if partner is None:
                    partner = TradingPartner(tg_company_id=buid, partner_manager_id=self.default_manager_id)
                    self._assign_partner_fields(partner, values)
                    to_create.append(partner)
                    continue
                changed = self._assign_partner_fields(partner, values)
                if changed:
                    to_update.append(partner)
                    update_fields.update(changed)
                lines = wanted_lines.get(buid)
                have = current_lines.get(partner.pk, set())
                if lines is not None and lines != have:
                    new_links += [links(tradingpartner_id=partner.pk, productline_id=i) for i in lines - have]
                    stale_links += [(partner.pk, i) for i in have - lines]
                    changed.append("product_lines")
                if changed:
                    outcomes.append((partner.pk, "updated", "partner: " + ", ".join(sorted(changed)), buid))
                    self._log(log_entries, partner.pk, buid, CHANGE, "Changed " + ", ".join(sorted(changed)))
                    self.result.partners_updated += 1
                else:
                    outcomes.append((partner.pk, "unchanged", "", buid))
            if to_create:
                TradingPartner.objects.bulk_create(to_create)
                if to_create[0].pk is None:  # backends that cannot return ids from bulk inserts
                    created_ids = dict(
                        TradingPartner.objects.filter(
                            tg_company_id__in=[p.tg_company_id for p in to_create]
                        ).values_list("tg_company_id", "pk")
                    )
                    for partner in to_create:
                        partner.pk = created_ids[partner.tg_company_id]
                for partner in to_create:
                    buid = partner.tg_company_id
                    outcomes.append((partner.pk, "new", "new partner", buid))
                    new_links += [
                        links(tradingpartner_id=partner.pk, productline_id=i) for i in wanted_lines.get(buid, ())
                    ]
                    self._log(log_entries, partner.pk, buid, ADDITION, "Created")
                self.result.partners_created += len(to_create)
            if to_update:
                TradingPartner.objects.bulk_update(to_update, sorted(update_fields | {"updated_at"}))
            for partner_id, line_id in stale_links:
                links.objects.filter(tradingpartner_id=partner_id, productline_id=line_id).delete()
            if new_links:
                links.objects.bulk_create(new_links, ignore_conflicts=True)
            self.scratch.record_partner_outcomes(outcomes)
            if log_entries:
                LogEntry.objects.bulk_create(log_entries)
                log_entries = []

    def _assign_partner_fields(self, partner: TradingPartner, values: dict) -> list[str]:
        changed = []
        for column, attribute in (
            ("partner_name", "name"),
            ("partner_type", "partner_type"),
            ("region", "region"),
            ("country_code", "country_code"),
            ("tier", "tier"),
            ("partner_manager", "partner_manager_id"),
        ):
            if column in values and getattr(partner, attribute) != values[column]:
                setattr(partner, attribute, values[column])
                changed.append(attribute)
        return changed

    def _log(self, entries: list[LogEntry], object_id: int, buid: str, action: int, what: str) -> None:
        if self.actor_id is None or self.dry_run:
            return
        entries.append(
            LogEntry(
                user_id=self.actor_id,
                content_type_id=ContentType.objects.get_for_model(TradingPartner).pk,
                object_id=str(object_id),
                object_repr=buid,
                action_flag=action,
                change_message=f"{what} by CSV import of {self.source_label}.",
            )
        )

    def _apply_contacts(self, source: CsvSource) -> None:
        validator = RowValidator({})
        chunk: list[tuple[int, str, str, dict]] = []
        done = 0
        for row, raw in source.rows():
            email, values, _ = validator.contact_values(raw)
            chunk.append((row, raw["tg_company_id"].upper(), email, values))
            if len(chunk) == CHUNK_ROWS:
                done += self._apply_contact_chunk(chunk)
                self.progress("importing", done, self.result.total_rows)
                chunk = []
        if chunk:
            done += self._apply_contact_chunk(chunk)
            self.progress("importing", done, self.result.total_rows)

    def _apply_contact_chunk(self, chunk: list[tuple[int, str, str, dict]]) -> int:
        partners = self.scratch.partner_outcomes({buid for _, buid, _, _ in chunk})
        existing = {
            (c.partner_id, c.email): c
            for c in Contact.objects.filter(
                partner_id__in={partner_id for partner_id, _, _, _ in partners.values()},
                email__in={email for _, _, email, _ in chunk},
            ).only("id", "partner_id", "email", *CONTACT_COLUMNS)
        }
        to_create, to_update, update_fields = [], [], set()
        for row, buid, email, values in chunk:
            partner_id, first_row, status, detail = partners[buid]
            if row != first_row:  # a partner's own outcome counts on the first row that names it
                status, detail = "unchanged", ""
            contact = existing.get((partner_id, email))
            if contact is None:
                to_create.append(Contact(partner_id=partner_id, email=email, source=ContactSource.IMPORT, **values))
                status, detail = "new", ("new partner and contact" if status == "new" else "new contact")
            else:
                changed = [name for name, value in values.items() if getattr(contact, name) != value]
                if changed:
                    for name in changed:
                        setattr(contact, name, values[name])
                    to_update.append(contact)
                    update_fields.update(changed)
                    detail = "; ".join(filter(None, [detail, "contact: " + ", ".join(changed)]))
                    status = "updated"
            if status == "new":
                self.result.created += 1
            elif status == "updated":
                self.result.updated += 1
            else:
                self.result.unchanged += 1
            if len(self.result.preview) < self.preview_limit:
                self.result.preview.append(RowOutcome(row, status, buid, email, detail))
        if to_create:
            Contact.objects.bulk_create(to_create)
        if to_update:
            Contact.objects.bulk_update(to_update, sorted(update_fields | {"updated_at"}))
        return len(chunk)

    # Both passes -----------------------------------------------------------------------------------
    def run(self) -> ImportResult:
        try:
            return self._run()
        finally:
            self.scratch.close()

    def _run(self) -> ImportResult:
        try:
            source = CsvSource(self.stream)
        except ImportFileError as exc:
            self.result.problems.append(exc.problem)
            self.result.error_rows = 1
            return self.result
        if source.encoding not in ("utf-8", "utf-8-sig"):
            self.result.notices.append(f"Read as {source.encoding} text.")
        if source.ignored_columns:
            self.result.notices.append("Ignored unknown columns: " + ", ".join(source.ignored_columns) + ".")
        self.check(source)
        if not self.result.ok:
            self.result.problems.sort(key=lambda p: p.row or 0)
            self.result.preview.sort(key=lambda outcome: outcome.row)
            return self.result
        self.apply(source)
        self.result.preview.sort(key=lambda outcome: outcome.row)
        if self.result.changed_nothing:
            self.result.notices.append("Nothing to change: every row matches what Partnerlink already holds.")
        return self.result


def _cell(text: str) -> str:
    text = text.strip()
    if text.startswith("'") and text[1:2] in FORMULA_PREFIXES and text[1:2]:
        return text[1:].strip()
    return text


def _display(value) -> str:
    if isinstance(value, tuple):
        return "|".join(value)
    return str(value)
