"""Outbound communications and the mappings that trigger them."""

from django.conf import settings
from django.db import models

from partners.models import MailchimpAudience

# --- Onboarding journeys (flow F2) -----------------------------------------------------------------


class JourneyTriggerKind(models.TextChoices):
    PARTNER_APPROVED = "partner_approved", "Partner approved in Trading Grid"
    PROFILE_UPDATED = "profile_updated", "Partner profile updated in Trading Grid"
    CONTACT_ADDED = "contact_added", "Contact added in Trading Grid"


# Partner fields a "profile updated" mapping can watch (what the Trading Grid sync reports as changed).
WATCHABLE_FIELDS = (
    ("name", "Name"),
    ("legal_name", "Legal name"),
    ("partner_type", "Partner type"),
    ("country_code", "Country"),
    ("region", "Region"),
    ("tier", "Tier"),
    ("onboarding_status", "Onboarding status"),
    ("compliance_status", "Compliance status"),
    ("product_lines", "Product lines"),
    ("trading_addresses", "Trading addresses"),
    ("certifications", "Certifications"),
    ("contract_renewal_at", "Contract renewal date"),
    ("compliance_review_at", "Compliance review date"),
)

JOURNEY_IDS_HELP = (
    "Mailchimp's API cannot list customer journeys, so copy the ids by hand: in Mailchimp open Automations → "
    "Customer Journeys → your journey, add (or open) the starting point “API trigger”; it shows a URL ending in "
    "/customer-journeys/journeys/{journey id}/steps/{step id}/actions/trigger."
)


class JourneyMapping(models.Model):
    """When Trading Grid reports a trigger for a partner matching the conditions, its contacts enter the
    Mailchimp customer journey at this step (once per partner, contact, mapping and occurrence)."""

    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    trigger = models.CharField(max_length=30, choices=JourneyTriggerKind.choices)
    partner_types = models.JSONField(default=list, blank=True, help_text="Empty: any type.")
    regions = models.JSONField(default=list, blank=True, help_text="Empty: any region.")
    tiers = models.JSONField(default=list, blank=True, help_text="Empty: any tier.")
    watched_fields = models.JSONField(
        default=list,
        blank=True,
        help_text="For “profile updated”: fire only when one of these fields actually changed.",
    )
    audience = models.ForeignKey(MailchimpAudience, on_delete=models.PROTECT, related_name="journey_mappings")
    journey_id = models.PositiveBigIntegerField(help_text=JOURNEY_IDS_HELP)
    step_id = models.PositiveBigIntegerField(help_text="The step id from the same URL.")
    tags = models.JSONField(default=list, blank=True, help_text="Tags to set on each contact before the trigger.")
    member_event = models.CharField(
        max_length=30, blank=True, help_text="Optional Mailchimp member event to record (letters, digits, - and _)."
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def matches_partner(self, partner) -> bool:
        return (
            (not self.partner_types or partner.partner_type in self.partner_types)
            and (not self.regions or partner.region in self.regions)
            and (not self.tiers or partner.tier in self.tiers)
        )


class JourneyTriggerStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Triggered"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"


class JourneyStage(models.IntegerChoices):
    """How far a trigger got; a retry continues from here, so no Mailchimp call is repeated needlessly."""

    NOTHING = 0, "Nothing sent yet"
    MEMBER = 1, "Member upserted"
    TAGS = 2, "Tags set"
    EVENT = 3, "Event recorded"
    TRIGGERED = 4, "Journey step triggered"


class JourneyTrigger(models.Model):
    """The ledger row of one journey trigger for one contact: its unique key makes it happen once."""

    mapping = models.ForeignKey(JourneyMapping, on_delete=models.CASCADE, related_name="triggers")
    partner = models.ForeignKey("partners.TradingPartner", on_delete=models.CASCADE, related_name="journey_triggers")
    contact = models.ForeignKey(
        "partners.Contact", null=True, on_delete=models.SET_NULL, related_name="journey_triggers"
    )
    email = models.EmailField(max_length=254)
    occurrence = models.CharField(
        max_length=120, help_text="Which occurrence of the trigger: approval, a profile version, a contact."
    )
    status = models.CharField(max_length=20, choices=JourneyTriggerStatus.choices, default=JourneyTriggerStatus.PENDING)
    stage = models.PositiveSmallIntegerField(choices=JourneyStage.choices, default=JourneyStage.NOTHING)
    reason = models.TextField(blank=True, help_text="Why it was skipped or failed.")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    triggered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["mapping", "partner", "email", "occurrence"], name="journey_trigger_once")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self):
        return f"{self.mapping} → {self.email} ({self.get_status_display()})"
