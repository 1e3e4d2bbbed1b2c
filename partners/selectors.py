"""Reads about partners. Interfaces and services call these instead of building querysets themselves."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, IntegerField, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from partners.models import (
    OPEN_ISSUE_STATUSES,
    CommunityIssue,
    Contact,
    MailchimpAudience,
    MarketingStatus,
    ProductLineMatch,
    Segment,
    TradingPartner,
)

ADMINISTRATORS_GROUP = "Administrators"
PARTNER_MANAGERS_GROUP = "Partner managers"
APPROVERS_GROUP = "Approvers"


def user_is_administrator(user: AbstractBaseUser) -> bool:
    """Superusers and members of "Administrators" see and change every partner."""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    cached = getattr(user, "_partnerlink_is_administrator", None)
    if cached is None:
        cached = user.groups.filter(name=ADMINISTRATORS_GROUP).exists()
        user._partnerlink_is_administrator = cached
    return cached


def partners_visible_to(user: AbstractBaseUser) -> QuerySet[TradingPartner]:
    """Every partner for administrators; a partner manager's own partners otherwise."""
    partners = TradingPartner.objects.all()
    if user_is_administrator(user):
        return partners
    return partners.filter(partner_manager_id=user.pk)


def contacts_visible_to(user: AbstractBaseUser) -> QuerySet[Contact]:
    contacts = Contact.objects.all()
    if user_is_administrator(user):
        return contacts
    return contacts.filter(partner__partner_manager_id=user.pk)


def issues_visible_to(user: AbstractBaseUser) -> QuerySet[CommunityIssue]:
    issues = CommunityIssue.objects.all()
    if user_is_administrator(user):
        return issues
    return issues.filter(partner__partner_manager_id=user.pk)


def open_issues_exist() -> Exists:
    return Exists(CommunityIssue.objects.filter(partner=OuterRef("pk"), status__in=OPEN_ISSUE_STATUSES))


def _count_per_partner(queryset: QuerySet) -> Subquery:
    # A correlated count instead of JOIN + GROUP BY, so contacts and issues never multiply each other.
    counted = queryset.filter(partner=OuterRef("pk")).order_by().values("partner").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def partner_list_annotations(partners: QuerySet[TradingPartner]) -> QuerySet[TradingPartner]:
    """What the partner list shows beside each partner, in a constant number of queries whatever the page
    size (one for the page, one for its product lines)."""
    return (
        partners.select_related("partner_manager")
        .prefetch_related("product_lines")
        .annotate(
            contact_count=_count_per_partner(Contact.objects.all()),
            open_issue_count=_count_per_partner(CommunityIssue.objects.filter(status__in=OPEN_ISSUE_STATUSES)),
        )
    )


def contacts_for_export(partners: QuerySet[TradingPartner]) -> QuerySet[Contact]:
    """Contacts of the given partners with everything an export row needs, in import-file order."""
    return (
        Contact.objects.filter(partner__in=partners)
        .select_related("partner", "partner__partner_manager")
        .prefetch_related("partner__product_lines")
        .order_by("partner__tg_company_id", "email")
    )


# --- Mailchimp audiences and segments (flow F4) -------------------------------------------------------

# Contacts Partnerlink never sends to Mailchimp: they unsubscribed, or Mailchimp cleaned the address.
NEVER_SENT_STATUSES = (MarketingStatus.UNSUBSCRIBED, MarketingStatus.CLEANED)


def sendable_contacts() -> QuerySet[Contact]:
    return Contact.objects.exclude(marketing_status__in=NEVER_SENT_STATUSES).exclude(email_invalid=True)


def partners_for_sync(*, partner_ids: list[int] | None = None) -> QuerySet[TradingPartner]:
    """Partners with what their contacts' merge fields need: manager, product lines, open issue count."""
    partners = (
        TradingPartner.objects.all() if partner_ids is None else TradingPartner.objects.filter(pk__in=partner_ids)
    )
    return (
        partners.select_related("partner_manager")
        .annotate(open_issue_count=_count_per_partner(CommunityIssue.objects.filter(status__in=OPEN_ISSUE_STATUSES)))
        .order_by("pk")
    )


def iter_partners_with_contacts(*, partner_ids: list[int] | None = None, chunk: int = 500):
    """Partners in id order, `chunk` at a time, each with its product lines and sendable contacts loaded:
    three queries per chunk, whatever the number of contacts."""
    last_id = 0
    base = partners_for_sync(partner_ids=partner_ids)
    while True:
        page = list(
            base.filter(pk__gt=last_id).prefetch_related(
                "product_lines", Prefetch("contacts", queryset=sendable_contacts().order_by("pk"), to_attr="sendable")
            )[:chunk]
        )
        if not page:
            return
        yield page
        last_id = page[-1].pk


def segment_partners(segment: Segment, *, now=None) -> QuerySet[TradingPartner]:
    """The partners a segment's rules select."""
    partners = TradingPartner.objects.all()
    for field, values in (
        ("partner_type", segment.partner_types),
        ("region", segment.regions),
        ("country_code", segment.countries),
        ("tier", segment.tiers),
        ("onboarding_status", segment.onboarding_statuses),
    ):
        if values:
            partners = partners.filter(**{f"{field}__in": values})
    line_ids = [line.pk for line in segment.product_lines.all()]
    if line_ids:
        links = TradingPartner.product_lines.through.objects
        if segment.product_lines_match == ProductLineMatch.ALL:
            for line_id in line_ids:
                partners = partners.filter(
                    Exists(links.filter(tradingpartner_id=OuterRef("pk"), productline_id=line_id))
                )
        else:
            partners = partners.filter(
                Exists(links.filter(tradingpartner_id=OuterRef("pk"), productline_id__in=line_ids))
            )
    since = None
    if segment.issue_within_days:
        since = (now or timezone.now()) - timedelta(days=segment.issue_within_days)
    if segment.issue_categories:
        open_issues = CommunityIssue.objects.filter(
            partner=OuterRef("pk"), status__in=OPEN_ISSUE_STATUSES, category__in=segment.issue_categories
        )
        if since:
            open_issues = open_issues.filter(raised_at__gte=since)
        partners = partners.filter(Exists(open_issues))
    if segment.min_issue_count:
        issues = CommunityIssue.objects.all()
        if since:
            issues = issues.filter(raised_at__gte=since)
        partners = partners.annotate(window_issue_count=_count_per_partner(issues)).filter(
            window_issue_count__gte=segment.min_issue_count
        )
    return partners


def segment_contacts(segment: Segment) -> QuerySet[Contact]:
    """The contacts a segment reaches: sendable contacts of its partners."""
    return sendable_contacts().filter(partner__in=segment_partners(segment).values("pk"))


def segment_preview(segment: Segment, *, sample_size: int = 10) -> dict:
    partners = segment_partners(segment)
    contacts = segment_contacts(segment)
    return {
        "partners": partners.count(),
        "contacts": contacts.count(),
        "sample": list(
            contacts.select_related("partner")
            .order_by("partner__name", "email")[:sample_size]
            .values_list("partner__name", "partner__tg_company_id", "email")
        ),
    }


def default_audience() -> MailchimpAudience | None:
    return MailchimpAudience.objects.filter(is_default=True).first()
