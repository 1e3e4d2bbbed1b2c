"""Reads about policy documents: who may do what, and the coverage of a version (who confirmed receipt)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import OuterRef, QuerySet, Subquery

from campaigns.models import (
    CommunicationState,
    DocumentAcknowledgement,
    DocumentRecipient,
    DocumentVersion,
    DocumentVersionStatus,
    PolicyDocument,
)
from partners.resources import neutralise_formula

APPROVE_PERMISSION = "campaigns.approve_documentversion"
CHANGE_PERMISSION = "campaigns.change_documentversion"

CONFIRMED, OPENED, NOT_OPENED = "confirmed", "opened", "not_opened"
# Recipients count once their email is in Mailchimp's hands (a failed or cancelled send reached nobody).
HANDED_TO_MAILCHIMP = (CommunicationState.SCHEDULED, CommunicationState.SENDING, CommunicationState.SENT)
STATUS_LABELS = {
    CONFIRMED: "Confirmed receipt",
    OPENED: "Opened the link, not confirmed",
    NOT_OPENED: "Did not open",
}


def user_can_approve_documents(user: AbstractBaseUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(APPROVE_PERMISSION))


def user_can_change_documents(user: AbstractBaseUser) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(CHANGE_PERMISSION))


def documents_for_list(documents: QuerySet[PolicyDocument]) -> QuerySet[PolicyDocument]:
    """Everything a list row shows (owner, latest approved version label) in one query."""
    latest = DocumentVersion.objects.filter(document=OuterRef("pk"), status=DocumentVersionStatus.APPROVED)
    return documents.select_related("owner").annotate(latest_version=Subquery(latest.values("version")[:1]))


def versions_for_list(versions: QuerySet[DocumentVersion]) -> QuerySet[DocumentVersion]:
    return versions.select_related("document", "submitted_by", "approved_by", "publication")


@dataclass
class CoverageRow:
    email: str
    partner_buid: str
    partner_name: str
    contact_name: str
    status: str
    emailed: bool
    first_clicked_at: datetime | None
    clicks: int
    acknowledged_at: datetime | None
    reminders_sent: int

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]


@dataclass
class Coverage:
    """Per version: contacts and partners that confirmed, opened the link without confirming, or did not open."""

    version: DocumentVersion
    rows: list[CoverageRow] = field(default_factory=list)
    contacts: dict[str, int] = field(default_factory=dict)
    partners: dict[str, int] = field(default_factory=dict)

    @property
    def contact_total(self) -> int:
        return sum(self.contacts.values())

    @property
    def partner_total(self) -> int:
        return sum(self.partners.values())

    def summary(self) -> list[tuple[str, str, int, int]]:
        """(status, label, contacts, partners) in display order."""
        return [(key, STATUS_LABELS[key], self.contacts[key], self.partners[key]) for key in STATUS_LABELS]


def version_coverage(version: DocumentVersion) -> Coverage:
    """Every address the version was sent to (its email handed to Mailchimp), plus every address that confirmed
    it without having been sent it (found it in the community). An address is confirmed when Trading Grid reports
    its acknowledgement of this version (for any partner), opened when it followed the link. A partner counts as
    confirmed when any of its contacts confirmed, opened when any opened, else not opened. Two queries whatever
    the size."""
    acknowledgements: dict[str, DocumentAcknowledgement] = {}
    for ack in DocumentAcknowledgement.objects.filter(version=version).select_related("partner", "contact").order_by(
        "acknowledged_at", "pk"
    ):
        acknowledgements.setdefault(ack.email, ack)
    rows: list[CoverageRow] = []
    seen: set[str] = set()
    recipients = DocumentRecipient.objects.filter(
        version=version, distribution__communication__state__in=HANDED_TO_MAILCHIMP
    )
    for recipient in recipients.select_related("partner", "contact").order_by("email"):
        seen.add(recipient.email)
        ack = acknowledgements.get(recipient.email)
        partner = recipient.partner or (ack.partner if ack else None)
        status = CONFIRMED if ack else OPENED if recipient.first_clicked_at else NOT_OPENED
        rows.append(
            CoverageRow(
                email=recipient.email,
                partner_buid=partner.tg_company_id if partner else (ack.partner_company_id if ack else ""),
                partner_name=partner.name if partner else "",
                contact_name=recipient.contact.full_name if recipient.contact else "",
                status=status,
                emailed=True,
                first_clicked_at=recipient.first_clicked_at,
                clicks=recipient.click_count,
                acknowledged_at=ack.acknowledged_at if ack else None,
                reminders_sent=recipient.reminders_sent,
            )
        )
    for email, ack in acknowledgements.items():
        if email in seen:
            continue
        rows.append(
            CoverageRow(
                email=email,
                partner_buid=ack.partner_company_id,
                partner_name=ack.partner.name if ack.partner else "",
                contact_name=ack.contact.full_name if ack.contact else "",
                status=CONFIRMED,
                emailed=False,
                first_clicked_at=None,
                clicks=0,
                acknowledged_at=ack.acknowledged_at,
                reminders_sent=0,
            )
        )
    rows.sort(key=lambda row: (row.partner_name.lower(), row.partner_buid, row.email))
    coverage = Coverage(version=version, rows=rows)
    coverage.contacts = {key: 0 for key in STATUS_LABELS}
    by_partner: dict[str, set[str]] = {}
    for row in rows:
        coverage.contacts[row.status] += 1
        if row.partner_buid:
            by_partner.setdefault(row.partner_buid, set()).add(row.status)
    coverage.partners = {key: 0 for key in STATUS_LABELS}
    for statuses in by_partner.values():
        best = CONFIRMED if CONFIRMED in statuses else OPENED if OPENED in statuses else NOT_OPENED
        coverage.partners[best] += 1
    return coverage


CSV_HEADER = (
    "partner_buid",
    "partner_name",
    "contact_email",
    "contact_name",
    "status",
    "emailed",
    "first_clicked_at",
    "clicks",
    "confirmed_at",
    "reminders_sent",
)


def coverage_csv_rows(coverage: Coverage) -> Iterator[list[str]]:
    """The coverage as CSV rows; cells a spreadsheet would run as a formula are neutralised."""
    yield list(CSV_HEADER)
    for row in coverage.rows:
        cells: Iterable = (
            row.partner_buid,
            row.partner_name,
            row.email,
            row.contact_name,
            row.status,
            "yes" if row.emailed else "no",
            _iso(row.first_clicked_at),
            str(row.clicks),
            _iso(row.acknowledged_at),
            str(row.reminders_sent),
        )
        yield [neutralise_formula(cell) for cell in cells]


def coverage_csv(coverage: Coverage) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerows(coverage_csv_rows(coverage))
    return out.getvalue()


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""
