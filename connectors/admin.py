from django.contrib import admin

from connectors.models import InboundEvent


@admin.register(InboundEvent)
class InboundEventAdmin(admin.ModelAdmin):
    """Read-only: what arrived from Mailchimp and Trading Grid, and what processing made of it."""

    list_display = ("received_at", "source", "event_type", "status", "attempts", "short_outcome")
    list_filter = ("source", "status", "event_type")
    search_fields = ("=dedupe_key", "outcome", "raw")
    date_hierarchy = "received_at"
    readonly_fields = [field.name for field in InboundEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="outcome")
    def short_outcome(self, event):
        return event.outcome[:120]
