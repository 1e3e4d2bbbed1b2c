"""Admin for partner managers: thin; scoping and writes come from selectors and services."""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django_countries import countries as all_countries

from partners import selectors, services, tg_sync
from partners.imports import ImportFileError
from partners.models import (
    Certification,
    CommunityIssue,
    Contact,
    ImportStatus,
    IssueCategory,
    MailchimpAudience,
    OnboardingStatus,
    PartnerImport,
    PartnerType,
    ProductLine,
    Region,
    Segment,
    SyncCursor,
    SyncKind,
    SyncRun,
    Tier,
    TradingAddress,
    TradingPartner,
)
from partners.resources import PartnerContactResource


class TradingAddressInline(admin.TabularInline):
    model = TradingAddress
    extra = 0
    fields = ("address", "is_primary")


class ContactInline(admin.TabularInline):
    model = Contact
    extra = 0
    fields = ("email", "first_name", "last_name", "role", "phone", "language", "timezone", "marketing_status", "source")
    readonly_fields = ("marketing_status", "source")
    show_change_link = True


class CertificationInline(admin.TabularInline):
    model = Certification
    extra = 0
    can_delete = False
    fields = ("type", "number", "issuer", "issued_at", "expires_at")
    readonly_fields = fields
    ordering = ("expires_at", "type")

    def has_add_permission(self, request, obj=None):
        return False  # partners keep their certifications in their Trading Grid profile; the sync brings them


class IssueHistoryInline(admin.TabularInline):
    model = CommunityIssue
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "issue history"
    fields = (
        "tg_issue_id",
        "category",
        "severity",
        "status",
        "title",
        "amount",
        "currency",
        "raised_at",
        "resolved_at",
    )
    readonly_fields = fields
    ordering = ("-raised_at",)

    def has_add_permission(self, request, obj=None):
        return False  # issues are raised in the Trading Grid community, not here


class HasOpenIssuesFilter(admin.SimpleListFilter):
    title = "open issues"
    parameter_name = "open_issues"

    def lookups(self, request, model_admin):
        return (("yes", "Has open issues"), ("no", "No open issues"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(selectors.open_issues_exist())
        if self.value() == "no":
            return queryset.exclude(selectors.open_issues_exist())
        return queryset


class ManagerFilter(admin.RelatedOnlyFieldListFilter):
    """Only the people who manage at least one partner the viewer can see."""


@admin.action(description="Export selected partners with their contacts (CSV)")
def export_partners_csv(modeladmin, request, queryset):
    dataset = PartnerContactResource().export(queryset=selectors.contacts_for_export(queryset))
    response = HttpResponse(dataset.csv, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    response["Content-Disposition"] = f'attachment; filename="partners-{stamp}.csv"'
    return response


def _start_syncs(request, audiences, *, kind, partner_ids=None, admin_obj):
    for audience in audiences:
        run = services.audience_sync_start(
            audience=audience, kind=kind, triggered_by=request.user.get_username(), partner_ids=partner_ids
        )
        admin_obj.message_user(request, f"{audience}: sync #{run.pk} is {run.get_status_display().lower()}.")


@admin.action(description="Sync selected partners' contacts to Mailchimp now")
def sync_partners_to_mailchimp(modeladmin, request, queryset):
    audience = services.audience_default_ensure()
    if audience is None:
        modeladmin.message_user(request, "No Mailchimp audience is configured.", messages.ERROR)
        return
    _start_syncs(
        request,
        [audience],
        kind=SyncKind.INCREMENTAL,
        partner_ids=list(queryset.values_list("pk", flat=True)),
        admin_obj=modeladmin,
    )


@admin.register(TradingPartner)
class TradingPartnerAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "tg_company_id",
        "partner_type",
        "region",
        "country_code",
        "tier",
        "onboarding_status",
        "partner_manager",
        "product_line_names",
        "contact_count",
        "open_issue_count",
    )
    list_filter = (
        "partner_type",
        "region",
        "onboarding_status",
        "tier",
        ("product_lines", admin.RelatedOnlyFieldListFilter),
        ("partner_manager", ManagerFilter),
        HasOpenIssuesFilter,
    )
    search_fields = ("name", "=tg_company_id", "trading_addresses__address", "contacts__email")
    search_help_text = "Name, BUID, trading address (QUALIFIER:ID) or contact email."
    list_per_page = 100
    list_max_show_all = 1000
    filter_horizontal = ("product_lines",)
    inlines = (TradingAddressInline, ContactInline, CertificationInline, IssueHistoryInline)
    actions = (export_partners_csv, sync_partners_to_mailchimp)
    readonly_fields = ("created_at", "updated_at", "tg_synced_at")
    fieldsets = (
        (None, {"fields": ("tg_company_id", "name", "legal_name", "partner_type", "partner_manager")}),
        ("Where and what", {"fields": ("region", "country_code", "tier", "product_lines")}),
        ("Status", {"fields": ("onboarding_status", "compliance_status", "created_at", "updated_at")}),
        ("Deadlines", {"fields": ("contract_renewal_at", "compliance_review_at")}),
        (
            "Trading Grid",
            {
                "fields": ("tg_synced_at",),
                "description": "Trading Grid owns name, legal name, type, country, tier, statuses, deadlines, "
                "trading addresses and certifications: a change made here is overwritten by the next sync (and "
                "noted in the history). Region and product lines set here stay as set.",
            },
        ),
    )

    def get_queryset(self, request):
        return selectors.partner_list_annotations(selectors.partners_visible_to(request.user))

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # So the Trading Grid sync can respect or report this edit (partners/tg_sync.py).
        tg_sync.partner_manager_edits_record(partner=obj, fields=form.changed_data, user=request.user)

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        if formset.model is TradingAddress and formset.has_changed():
            tg_sync.partner_manager_edits_record(partner=form.instance, fields=["trading_addresses"], user=request.user)
        elif formset.model is Contact:
            for contact_form in formset.forms:
                if contact_form.instance.pk and contact_form.has_changed():
                    tg_sync.contact_manager_edits_record(
                        contact=contact_form.instance, fields=contact_form.changed_data, user=request.user
                    )

    def get_search_results(self, request, queryset, search_term):
        # Contact emails are stored lower-cased; trading addresses upper-cased.
        return super().get_search_results(request, queryset, search_term.strip())

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "partner_manager":
            kwargs["queryset"] = get_user_model().objects.filter(is_staff=True, is_active=True).order_by("email")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="product lines")
    def product_line_names(self, partner):
        return ", ".join(line.name for line in partner.product_lines.all())

    @admin.display(description="contacts", ordering="contact_count")
    def contact_count(self, partner):
        return partner.contact_count

    @admin.display(description="open issues", ordering="open_issue_count")
    def open_issue_count(self, partner):
        return partner.open_issue_count


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ("email", "first_name", "last_name", "partner", "role", "language", "marketing_status", "source")
    list_filter = ("role", "marketing_status", "source", "language")
    search_fields = ("email", "first_name", "last_name", "partner__name", "=partner__tg_company_id")
    list_select_related = ("partner",)
    raw_id_fields = ("partner",)
    readonly_fields = ("marketing_status", "marketing_status_in_tg", "source", "created_at", "updated_at")

    def get_queryset(self, request):
        return selectors.contacts_visible_to(request.user).select_related("partner")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        tg_sync.contact_manager_edits_record(contact=obj, fields=form.changed_data, user=request.user)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "partner":
            kwargs["queryset"] = selectors.partners_visible_to(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(CommunityIssue)
class CommunityIssueAdmin(admin.ModelAdmin):
    list_display = (
        "tg_issue_id",
        "title",
        "partner",
        "category",
        "severity",
        "status",
        "amount",
        "currency",
        "raised_at",
    )
    list_filter = ("category", "severity", "status", "raised_at")
    search_fields = ("=tg_issue_id", "title", "po_number", "asn_id", "invoice_number", "partner__name")
    list_select_related = ("partner",)
    raw_id_fields = ("partner",)
    date_hierarchy = "raised_at"

    def get_queryset(self, request):
        return selectors.issues_visible_to(request.user).select_related("partner")


@admin.register(SyncCursor)
class SyncCursorAdmin(admin.ModelAdmin):
    """Read-only: how far each Trading Grid polling stream has read."""

    list_display = ("stream", "value", "updated_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return selectors.user_is_administrator(request.user)  # deleting one makes its stream start over


@admin.register(ProductLine)
class ProductLineAdmin(admin.ModelAdmin):
    list_display = ("name", "created_at")
    search_fields = ("name",)


class PartnerImportUploadForm(forms.Form):
    file = forms.FileField(
        label="Partner list (CSV)",
        help_text=(
            "One row per contact with the partner's columns repeated: tg_company_id, partner_name, partner_type, "
            "country_code, contact_email (required); region, tier, product_lines (separated by |), first_name, "
            "last_name, role, phone, language, partner_manager (optional). UTF-8 or Windows-1252, comma or "
            "semicolon separated."
        ),
    )


@admin.register(PartnerImport)
class PartnerImportAdmin(admin.ModelAdmin):
    list_display = ("__str__", "uploaded_by", "status", "progress", "result_summary", "created_at", "finished_at")
    list_filter = ("status",)
    list_select_related = ("uploaded_by",)

    def get_queryset(self, request):
        imports = super().get_queryset(request)
        if selectors.user_is_administrator(request.user):
            return imports
        return imports.filter(uploaded_by=request.user)

    def has_change_permission(self, request, obj=None):
        return False  # an import is read back and confirmed, never edited

    def has_delete_permission(self, request, obj=None):
        return selectors.user_is_administrator(request.user)

    @admin.display(description="progress")
    def progress(self, partner_import):
        return f"{partner_import.processed_rows}/{partner_import.total_rows or '?'} rows"

    @admin.display(description="result")
    def result_summary(self, partner_import):
        return partner_import.summary

    def get_urls(self):
        return [
            path(
                "<int:object_id>/confirm/",
                self.admin_site.admin_view(self.confirm_view),
                name="partners_partnerimport_confirm",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PartnerImportUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                partner_import = services.partner_import_create(upload=form.cleaned_data["file"], user=request.user)
            except (ValueError, ImportFileError) as exc:
                form.add_error("file", str(exc))
            else:
                return HttpResponseRedirect(reverse("admin:partners_partnerimport_change", args=[partner_import.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import partners from CSV",
            "form": form,
            "sync_max_rows": services.settings.PARTNER_IMPORT_SYNC_MAX_ROWS,
        }
        return TemplateResponse(request, "admin/partners/partnerimport/upload.html", context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        partner_import = get_object_or_404(self.get_queryset(request), pk=object_id)
        running = partner_import.status in (ImportStatus.PREVIEWING, ImportStatus.IMPORTING)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": str(partner_import),
            "original": partner_import,
            "partner_import": partner_import,
            "running": running,
            "can_confirm": partner_import.status == ImportStatus.PREVIEWED,
        }
        return TemplateResponse(request, "admin/partners/partnerimport/detail.html", context)

    def confirm_view(self, request, object_id):
        partner_import = get_object_or_404(self.get_queryset(request), pk=object_id)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:partners_partnerimport_change", args=[object_id]))
        try:
            partner_import = services.partner_import_confirm(partner_import=partner_import, user=request.user)
        except (ValueError, PermissionError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            if partner_import.status == ImportStatus.DONE:
                self.message_user(request, f"Imported: {partner_import.summary}.", messages.SUCCESS)
            elif partner_import.status == ImportStatus.IMPORTING:
                self.message_user(request, "The import runs in the background; this page shows its progress.")
            else:
                self.message_user(request, f"The import failed: {partner_import.summary}.", messages.ERROR)
        return HttpResponseRedirect(reverse("admin:partners_partnerimport_change", args=[object_id]))


# --- Mailchimp audiences, segments and syncs (flow F4) ----------------------------------------------


@admin.register(MailchimpAudience)
class MailchimpAudienceAdmin(admin.ModelAdmin):
    list_display = ("name", "list_id", "purpose", "new_member_status", "is_default", "webhook_id", "last_full_sync_at")
    readonly_fields = ("webhook_id", "last_full_sync_at", "created_at")
    actions = ("sync_now", "full_sync_now")

    @admin.action(description="Sync changed contacts and segments to Mailchimp now")
    def sync_now(self, request, queryset):
        _start_syncs(request, queryset, kind=SyncKind.INCREMENTAL, admin_obj=self)

    @admin.action(description="Full sync now (read statuses back, resend everyone)")
    def full_sync_now(self, request, queryset):
        _start_syncs(request, queryset, kind=SyncKind.FULL, admin_obj=self)


class SegmentForm(forms.ModelForm):
    partner_types = forms.MultipleChoiceField(
        choices=PartnerType.choices, required=False, widget=forms.CheckboxSelectMultiple
    )
    regions = forms.MultipleChoiceField(choices=Region.choices, required=False, widget=forms.CheckboxSelectMultiple)
    countries = forms.MultipleChoiceField(choices=list(all_countries), required=False)
    tiers = forms.MultipleChoiceField(choices=Tier.choices, required=False, widget=forms.CheckboxSelectMultiple)
    onboarding_statuses = forms.MultipleChoiceField(
        choices=OnboardingStatus.choices, required=False, widget=forms.CheckboxSelectMultiple
    )
    issue_categories = forms.MultipleChoiceField(
        choices=IssueCategory.choices, required=False, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = Segment
        fields = (
            "name",
            "audience",
            "description",
            "partner_types",
            "regions",
            "countries",
            "product_lines",
            "product_lines_match",
            "tiers",
            "onboarding_statuses",
            "issue_categories",
            "issue_within_days",
            "min_issue_count",
        )


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    form = SegmentForm
    list_display = ("name", "audience", "member_count", "remote_member_count", "mailchimp_segment_id", "last_synced_at")
    list_select_related = ("audience",)
    filter_horizontal = ("product_lines",)
    readonly_fields = ("mailchimp_segment_id", "member_count", "remote_member_count", "last_synced_at")
    actions = ("sync_now",)
    change_form_template = "admin/partners/segment/change_form.html"

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """ "Preview" checks the rules without saving: how many partners and contacts match, and a sample."""
        if request.method == "POST" and "_preview" in request.POST:
            obj = self.get_object(request, object_id) if object_id else None
            form = self.get_form(request, obj)(request.POST, instance=obj)
            preview = None
            if form.is_valid():
                with transaction.atomic():
                    segment = form.save()
                    preview = selectors.segment_preview(segment)
                    transaction.set_rollback(True)
            extra_context = {**(extra_context or {}), "segment_preview": preview, "preview_form": form}
            return self._preview_response(request, object_id, form, extra_context)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _preview_response(self, request, object_id, form, extra_context):
        obj = self.get_object(request, object_id) if object_id else None
        admin_form = helpers.AdminForm(
            form,
            list(self.get_fieldsets(request, obj)),
            {},
            readonly_fields=self.get_readonly_fields(request, obj),
            model_admin=self,
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Preview segment",
            "adminform": admin_form,
            "object_id": object_id,
            "original": obj,
            "is_popup": False,
            "to_field": None,
            "media": self.media + admin_form.media,
            "inline_admin_formsets": [],
            "errors": helpers.AdminErrorList(form, []),
            "preserved_filters": self.get_preserved_filters(request),
            **extra_context,
        }
        return self.render_change_form(request, context, add=object_id is None, change=object_id is not None, obj=obj)

    @admin.action(description="Sync these segments' audiences to Mailchimp now")
    def sync_now(self, request, queryset):
        audiences = MailchimpAudience.objects.filter(pk__in=queryset.values("audience"))
        _start_syncs(request, audiences, kind=SyncKind.INCREMENTAL, admin_obj=self)


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "triggered_by", "progress", "summary", "created_at", "finished_at")
    list_filter = ("status", "kind", "audience")
    list_select_related = ("audience",)
    readonly_fields = [field.name for field in SyncRun._meta.fields] + ["progress", "summary"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress(self, run):
        return f"{run.contacts_done}/{run.contacts_total} contacts, {run.segments_synced} segments"

    @admin.display(description="result")
    def summary(self, run):
        return run.summary
