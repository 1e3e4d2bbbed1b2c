"""Admin for communications and journey mappings."""

from django import forms
from django.contrib import admin

from campaigns.models import (
    WATCHABLE_FIELDS,
    JourneyMapping,
    JourneyTrigger,
    JourneyTriggerKind,
)
from partners.admin import TradingPartnerAdmin
from partners.models import PartnerType, Region, Tier


class JourneyMappingForm(forms.ModelForm):
    partner_types = forms.MultipleChoiceField(
        choices=PartnerType.choices, required=False, widget=forms.CheckboxSelectMultiple
    )
    regions = forms.MultipleChoiceField(choices=Region.choices, required=False, widget=forms.CheckboxSelectMultiple)
    tiers = forms.MultipleChoiceField(choices=Tier.choices, required=False, widget=forms.CheckboxSelectMultiple)
    watched_fields = forms.MultipleChoiceField(
        choices=WATCHABLE_FIELDS,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=JourneyMapping._meta.get_field("watched_fields").help_text,
    )
    tags = forms.CharField(
        required=False, help_text="Comma-separated Mailchimp tags set on each contact before the trigger."
    )

    class Meta:
        model = JourneyMapping
        fields = (
            "name",
            "is_active",
            "trigger",
            "partner_types",
            "regions",
            "tiers",
            "watched_fields",
            "audience",
            "journey_id",
            "step_id",
            "tags",
            "member_event",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["tags"] = ", ".join(self.instance.tags)

    def clean_tags(self):
        return [tag.strip() for tag in self.cleaned_data["tags"].split(",") if tag.strip()]

    def clean_member_event(self):
        name = self.cleaned_data["member_event"].strip()
        if name and not (2 <= len(name) <= 30 and all(ch.isalnum() or ch in "-_" for ch in name)):
            raise forms.ValidationError("2 to 30 letters, digits, - or _.")
        return name

    def clean(self):
        data = super().clean()
        if data.get("trigger") == JourneyTriggerKind.PROFILE_UPDATED and not data.get("watched_fields"):
            self.add_error("watched_fields", "A “profile updated” mapping fires only when a field it names changes.")
        return data


@admin.register(JourneyMapping)
class JourneyMappingAdmin(admin.ModelAdmin):
    form = JourneyMappingForm
    list_display = ("name", "trigger", "is_active", "audience", "journey_id", "step_id")
    list_filter = ("trigger", "is_active", "audience")
    list_select_related = ("audience",)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(JourneyTrigger)
class JourneyTriggerAdmin(admin.ModelAdmin):
    list_display = ("created_at", "mapping", "partner", "email", "status", "stage", "attempts", "triggered_at")
    list_filter = ("status", "mapping")
    search_fields = ("email", "partner__name", "=partner__tg_company_id")
    list_select_related = ("mapping", "partner")
    readonly_fields = [field.name for field in JourneyTrigger._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class JourneyTriggerInline(admin.TabularInline):
    """On the partner's page: what was triggered for whom and when, and what failed with the reason."""

    model = JourneyTrigger
    extra = 0
    can_delete = False
    verbose_name_plural = "onboarding journeys"
    fields = ("mapping", "email", "status", "reason", "attempts", "triggered_at", "created_at")
    readonly_fields = fields
    ordering = ("-created_at",)

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("mapping")


# The partner page is partners' admin; campaigns adds its inline so partners never depends on campaigns.
TradingPartnerAdmin.inlines = (*TradingPartnerAdmin.inlines, JourneyTriggerInline)
