"""Reads about partners. Interfaces and services call these instead of building querysets themselves."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from partners.models import OPEN_ISSUE_STATUSES, CommunityIssue, Contact, TradingPartner

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
