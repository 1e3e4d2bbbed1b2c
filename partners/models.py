"""What Trading Grid holds about a trading partner, plus the import records partner managers create.

Writes go through partners/services.py; reads through partners/selectors.py."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django_countries.fields import CountryField

BUID_PATTERN = r"^[A-Z]{2}[0-9]{8}[A-Z0-9]{2}$"
validate_buid = RegexValidator(
    BUID_PATTERN,
    "A Trading Grid company id (BUID) is two letters, eight digits and two letters or digits, like GC00804444LX.",
)
TRADING_ADDRESS_PATTERN = r"^[0-9A-Z]{2}:[^\s:]{1,35}$"
validate_trading_address = RegexValidator(
    TRADING_ADDRESS_PATTERN, "A trading address is QUALIFIER:ID, like ZZ:DEMOSUPPLIER5."
)


class NormalizedEmailField(models.EmailField):
    """An email stored lower-cased and stripped, whichever path wrote it (admin, import, sync)."""

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return value.strip().lower() if isinstance(value, str) else value

    def to_python(self, value):
        value = super().to_python(value)
        return value.strip().lower() if isinstance(value, str) else value


class PartnerType(models.TextChoices):
    SUPPLIER = "supplier", "Supplier"
    DISTRIBUTOR = "distributor", "Distributor"
    CARRIER = "carrier", "Carrier"
    THIRD_PARTY_LOGISTICS = "3pl", "3PL"
    CUSTOMER = "customer", "Customer"
    RESELLER = "reseller", "Reseller"


class Region(models.TextChoices):
    NORTH_AMERICA = "na", "North America"
    LATIN_AMERICA = "latam", "Latin America"
    EMEA = "emea", "EMEA"
    APAC = "apac", "Asia Pacific"


class Tier(models.TextChoices):
    STRATEGIC = "strategic", "Strategic"
    PREFERRED = "preferred", "Preferred"
    STANDARD = "standard", "Standard"


class OnboardingStatus(models.TextChoices):
    NEW = "new", "New"
    INVITED = "invited", "Invited"
    REGISTERED = "registered", "Registered"
    TESTING = "testing", "Testing"
    APPROVED = "approved", "Approved"
    SUSPENDED = "suspended", "Suspended"
    REJECTED = "rejected", "Rejected"


class ComplianceStatus(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    COMPLIANT = "compliant", "Compliant"
    REVIEW_DUE = "review_due", "Review due"
    NON_COMPLIANT = "non_compliant", "Non-compliant"


class ProductLine(models.Model):
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(Lower("name"), name="productline_name_ci_unique")]

    def __str__(self):
        return self.name


class TradingPartner(models.Model):
    tg_company_id = models.CharField("TG company id (BUID)", max_length=12, unique=True, validators=[validate_buid])
    name = models.CharField(max_length=200)
    legal_name = models.CharField(max_length=200, blank=True)
    partner_type = models.CharField(max_length=20, choices=PartnerType.choices)
    region = models.CharField(max_length=10, choices=Region.choices, blank=True)
    country_code = CountryField("country", blank=True)
    tier = models.CharField(max_length=20, choices=Tier.choices, blank=True)
    onboarding_status = models.CharField(max_length=20, choices=OnboardingStatus.choices, default=OnboardingStatus.NEW)
    compliance_status = models.CharField(
        max_length=20, choices=ComplianceStatus.choices, default=ComplianceStatus.UNKNOWN
    )
    partner_manager = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="managed_partners",
    )
    product_lines = models.ManyToManyField(ProductLine, blank=True, related_name="partners")
    contract_renewal_at = models.DateField("contract renewal", null=True, blank=True)
    compliance_review_at = models.DateField("compliance review", null=True, blank=True)
    tg_raw = models.JSONField(
        "last Trading Grid record", default=dict, blank=True, editable=False,
        help_text="The profile and directory entry last read from Trading Grid, as received.",
    )
    tg_updated_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Trading Grid's updated_at of the profile last applied."
    )
    tg_synced_at = models.DateTimeField("last synced from Trading Grid", null=True, blank=True, editable=False)
    manager_edits = models.JSONField(
        default=dict, blank=True, editable=False,
        help_text="Fields a partner manager changed in Partnerlink: {field: {at, by}} (see partners/tg_sync.py).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(fields=["partner_type"]),
            models.Index(fields=["region"]),
            models.Index(fields=["onboarding_status"]),
            models.Index(fields=["tier"]),
            models.Index(fields=["updated_at"]),
        ]

    def __str__(self):
        return f"{self.name} ({self.tg_company_id})"


class TradingAddress(models.Model):
    partner = models.ForeignKey(TradingPartner, on_delete=models.CASCADE, related_name="trading_addresses")
    address = models.CharField(
        max_length=40,
        unique=True,
        validators=[validate_trading_address],
        help_text="QUALIFIER:ID, e.g. ZZ:DEMOSUPPLIER5 or 01:123456789 (DUNS).",
    )
    is_primary = models.BooleanField(default=False)

    class Meta:
        ordering = ["-is_primary", "address"]
        verbose_name_plural = "trading addresses"

    def __str__(self):
        return self.address

    def save(self, *args, **kwargs):
        self.address = self.address.strip().upper()
        super().save(*args, **kwargs)

    @property
    def qualifier(self) -> str:
        return self.address.split(":", 1)[0]


class ContactRole(models.TextChoices):
    PRIMARY = "primary", "Primary"
    TECHNICAL = "technical", "Technical"
    COMPLIANCE = "compliance", "Compliance"
    FINANCE = "finance", "Finance"
    LOGISTICS = "logistics", "Logistics"
    SALES = "sales", "Sales"


class MarketingStatus(models.TextChoices):
    UNKNOWN = "unknown", "Unknown"
    SUBSCRIBED = "subscribed", "Subscribed"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    CLEANED = "cleaned", "Cleaned"
    PENDING = "pending", "Pending"


class ContactSource(models.TextChoices):
    ADMIN = "admin", "Admin"
    IMPORT = "import", "CSV import"
    TRADING_GRID = "tradinggrid", "Trading Grid"
    MAILCHIMP = "mailchimp", "Mailchimp"
    DEMO = "demo", "Demo data"


class Contact(models.Model):
    partner = models.ForeignKey(TradingPartner, on_delete=models.CASCADE, related_name="contacts")
    email = NormalizedEmailField(max_length=254)
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    role = models.CharField(max_length=20, choices=ContactRole.choices, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    language = models.CharField(max_length=10, blank=True, help_text="ISO 639-1 code, e.g. en, de, pt-BR.")
    timezone = models.CharField(max_length=64, blank=True)
    marketing_status = models.CharField(
        max_length=20,
        choices=MarketingStatus.choices,
        default=MarketingStatus.UNKNOWN,
        help_text="As Mailchimp reports it.",
    )
    email_invalid = models.BooleanField(
        default=False, help_text="Mailchimp cleaned the address (hard bounce or abuse report)."
    )
    marketing_status_changed_at = models.DateTimeField(null=True, blank=True)
    marketing_status_in_tg = models.CharField(
        max_length=20, blank=True, editable=False,
        help_text="The marketing status last written to the partner's Trading Grid profile.",
    )
    source = models.CharField(max_length=20, choices=ContactSource.choices, default=ContactSource.ADMIN)
    manager_edits = models.JSONField(
        default=dict, blank=True, editable=False,
        help_text="Fields a partner manager changed in Partnerlink: {field: {at, by}}.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["partner_id", "email"]
        constraints = [models.UniqueConstraint(fields=["partner", "email"], name="contact_email_per_partner")]
        indexes = [models.Index(fields=["email"]), models.Index(fields=["updated_at"])]

    def __str__(self):
        return f"{self.full_name} <{self.email}>" if self.full_name else self.email

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class IssueCategory(models.TextChoices):
    SHIPMENT_EXCEPTION = "shipment_exception", "Shipment exception"
    ASN_MISMATCH = "asn_mismatch", "ASN mismatch"
    INVOICE_PO_MISMATCH = "invoice_po_mismatch", "Invoice/PO mismatch"
    CHARGEBACK_DISPUTE = "chargeback_dispute", "Chargeback dispute"
    EDI_TRANSACTION_FAILURE = "edi_transaction_failure", "EDI transaction failure"
    QUALITY_CLAIM = "quality_claim", "Quality claim"
    OTHER = "other", "Other"


class IssueSeverity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"
    CRITICAL = "critical", "Critical"


class IssueStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    AWAITING_PARTNER = "awaiting_partner", "Awaiting partner"
    UNDER_REVIEW = "under_review", "Under review"
    RESOLVED = "resolved", "Resolved"
    CLOSED = "closed", "Closed"


OPEN_ISSUE_STATUSES = (
    IssueStatus.OPEN,
    IssueStatus.ACKNOWLEDGED,
    IssueStatus.AWAITING_PARTNER,
    IssueStatus.UNDER_REVIEW,
)


class CommunityIssue(models.Model):
    """An operational issue raised in the TG community: the partner's issue history."""

    tg_issue_id = models.CharField("TG issue id", max_length=64, unique=True)
    partner = models.ForeignKey(TradingPartner, on_delete=models.CASCADE, related_name="issues")
    category = models.CharField(max_length=32, choices=IssueCategory.choices)
    reason_code = models.CharField(max_length=40, blank=True)
    severity = models.CharField(max_length=10, choices=IssueSeverity.choices, default=IssueSeverity.MEDIUM)
    status = models.CharField(max_length=20, choices=IssueStatus.choices, default=IssueStatus.OPEN)
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    po_number = models.CharField("PO number", max_length=60, blank=True)
    asn_id = models.CharField("ASN id", max_length=60, blank=True)
    invoice_number = models.CharField(max_length=60, blank=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True, help_text="ISO 4217, e.g. USD.")
    raised_at = models.DateTimeField()
    due_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    tg_updated_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Trading Grid's updated_at of the version last applied."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-raised_at"]
        indexes = [
            models.Index(fields=["partner", "status"]),
            models.Index(fields=["category", "raised_at"]),
        ]

    def __str__(self):
        return f"{self.tg_issue_id}: {self.title}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ISSUE_STATUSES


class ImportStatus(models.TextChoices):
    UPLOADED = "uploaded", "Uploaded"
    PREVIEWING = "previewing", "Checking"
    PREVIEWED = "previewed", "Ready to import"
    IMPORTING = "importing", "Importing"
    DONE = "done", "Imported"
    FAILED = "failed", "Failed"


class PartnerImport(models.Model):
    """One uploaded partner list: the stored file, its preview, progress and outcome."""

    file = models.FileField(upload_to="partner-imports/%Y/%m/")
    original_name = models.CharField(max_length=255)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="partner_imports"
    )
    status = models.CharField(max_length=20, choices=ImportStatus.choices, default=ImportStatus.UPLOADED)
    runs_in_background = models.BooleanField(default=False)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    error_count = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)
    preview_rows = models.JSONField(default=list, blank=True)
    notices = models.JSONField(default=list, blank=True)
    failure = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When its background job was last enqueued.")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"Import #{self.pk} ({self.original_name})"

    @property
    def progress_percent(self) -> int:
        if not self.total_rows:
            return 0
        return min(100, round(100 * self.processed_rows / self.total_rows))

    @property
    def summary(self) -> str:
        return f"created={self.created} updated={self.updated} unchanged={self.unchanged} errors={self.error_count}"


# --- Mailchimp audiences, segments and sync state (flow F4) ----------------------------------------


class AudiencePurpose(models.TextChoices):
    PARTNERS = "partners", "Partner contacts"
    INTERNAL = "internal", "Internal teams"


class NewMemberStatus(models.TextChoices):
    SUBSCRIBED = "subscribed", "Subscribed"
    PENDING = "pending", "Pending (double opt-in email)"


class MailchimpAudience(models.Model):
    name = models.CharField(max_length=200)
    list_id = models.CharField("Mailchimp list id", max_length=20, unique=True)
    purpose = models.CharField(max_length=20, choices=AudiencePurpose.choices, default=AudiencePurpose.PARTNERS)
    new_member_status = models.CharField(
        max_length=20,
        choices=NewMemberStatus.choices,
        default=NewMemberStatus.SUBSCRIBED,
        help_text="The status a contact gets when Partnerlink adds them; existing members always keep theirs.",
    )
    is_default = models.BooleanField(default=False)
    webhook_id = models.CharField(max_length=40, blank=True, help_text="Set by `manage.py mailchimp_setup`.")
    last_full_sync_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_audience"
            )
        ]

    def __str__(self):
        return f"{self.name} ({self.list_id})"


class ProductLineMatch(models.TextChoices):
    ANY = "any", "any of them"
    ALL = "all", "all of them"


class Segment(models.Model):
    """Partners chosen by rules; synced to a Mailchimp static segment of the audience by add/remove diffs."""

    name = models.CharField(max_length=100)
    audience = models.ForeignKey(MailchimpAudience, on_delete=models.PROTECT, related_name="segments")
    description = models.TextField(blank=True)
    partner_types = models.JSONField(default=list, blank=True)
    regions = models.JSONField(default=list, blank=True)
    countries = models.JSONField(default=list, blank=True)
    product_lines = models.ManyToManyField(ProductLine, blank=True, related_name="segments")
    product_lines_match = models.CharField(max_length=3, choices=ProductLineMatch.choices, default=ProductLineMatch.ANY)
    tiers = models.JSONField(default=list, blank=True)
    onboarding_statuses = models.JSONField(default=list, blank=True)
    issue_categories = models.JSONField(
        default=list, blank=True, help_text="Partners with an open issue of one of these categories…"
    )
    issue_within_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="…raised within this many days (empty: any time)."
    )
    min_issue_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="Partners with at least this many issues (any status) in that window."
    )
    mailchimp_segment_id = models.BigIntegerField(null=True, blank=True, editable=False)
    member_count = models.PositiveIntegerField(default=0, editable=False, help_text="Contacts we last sent.")
    remote_member_count = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="Mailchimp's count after the last sync."
    )
    last_synced_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["audience", "name"], name="segment_name_per_audience")]

    def __str__(self):
        return self.name


class SegmentMember(models.Model):
    """An address we have put into the segment's static segment in Mailchimp: the base of the next diff."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="sent_members")
    email = models.EmailField(max_length=254)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "email"], name="segment_member_unique")]

    def __str__(self):
        return f"{self.email} in {self.segment_id}"


class ContactSyncState(models.Model):
    """What Partnerlink last sent to Mailchimp for a contact: an unchanged fingerprint means nothing to send."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="sync_states")
    audience = models.ForeignKey(MailchimpAudience, on_delete=models.CASCADE, related_name="sync_states")
    email = models.EmailField(max_length=254, help_text="The address the fingerprint was sent for.")
    fingerprint = models.CharField(max_length=64)
    synced_at = models.DateTimeField()
    last_error = models.TextField(
        blank=True, help_text="Mailchimp refused this contact; it is sent again only when its data changes."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["contact", "audience"], name="contact_sync_state_unique"),
        ]

    def __str__(self):
        return f"{self.email} → {self.audience_id}"


class SyncKind(models.TextChoices):
    INCREMENTAL = "incremental", "Incremental"
    FULL = "full", "Full"


class SyncStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ABANDONED = "abandoned", "Abandoned (worker stopped; the next run resumes)"


class SyncRun(models.Model):
    audience = models.ForeignKey(MailchimpAudience, on_delete=models.CASCADE, related_name="sync_runs")
    kind = models.CharField(max_length=20, choices=SyncKind.choices, default=SyncKind.INCREMENTAL)
    status = models.CharField(max_length=20, choices=SyncStatus.choices, default=SyncStatus.QUEUED)
    triggered_by = models.CharField(max_length=100, blank=True, help_text="beat, a user, or a command")
    partner_ids = models.JSONField(null=True, blank=True, help_text="Only these partners' contacts (empty: all).")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    contacts_total = models.PositiveIntegerField(default=0)
    contacts_done = models.PositiveIntegerField(default=0)
    calls = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0, help_text="Unsubscribed or cleaned contacts never sent.")
    failed = models.PositiveIntegerField(default=0)
    segments_synced = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["audience", "status"])]

    def __str__(self):
        return f"{self.get_kind_display()} sync #{self.pk} of {self.audience}"

    @property
    def seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def summary(self) -> str:
        text = (
            f"calls={self.calls} created={self.created} updated={self.updated} unchanged={self.unchanged} "
            f"failed={self.failed}"
        )
        return text if self.seconds is None else f"{text} seconds={self.seconds:.1f}"


class MemberBatchStatus(models.TextChoices):
    SUBMITTED = "submitted", "Submitted"
    FINISHED = "finished", "Finished"


class MemberBatch(models.Model):
    """One Mailchimp batch of member upserts (at most 500): the ledger row that makes a sync resumable.
    Its members' fingerprints are recorded as sent only when Mailchimp has finished it."""

    audience = models.ForeignKey(MailchimpAudience, on_delete=models.CASCADE, related_name="member_batches")
    run = models.ForeignKey("SyncRun", null=True, on_delete=models.SET_NULL, related_name="member_batches")
    batch_id = models.CharField("Mailchimp batch id", max_length=40, unique=True)
    status = models.CharField(max_length=20, choices=MemberBatchStatus.choices, default=MemberBatchStatus.SUBMITTED)
    members = models.JSONField(help_text="[contact id, email, fingerprint, first time sent] per member")
    errored = models.PositiveIntegerField(default=0)
    submitted_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["audience", "status"])]

    def __str__(self):
        return f"batch {self.batch_id} ({len(self.members)} members, {self.status})"


# --- Trading Grid sync (partners/tg_sync.py) --------------------------------------------------------


class Certification(models.Model):
    """A certification the partner holds, as its Trading Grid profile lists it (Trading Grid owns these)."""

    partner = models.ForeignKey(TradingPartner, on_delete=models.CASCADE, related_name="certifications")
    type = models.CharField(max_length=100, help_text="e.g. ISO 9001, C-TPAT.")
    number = models.CharField(max_length=100, blank=True)
    issuer = models.CharField(max_length=200, blank=True)
    issued_at = models.DateField(null=True, blank=True)
    expires_at = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["partner_id", "expires_at", "type"]
        constraints = [
            models.UniqueConstraint(fields=["partner", "type", "number"], name="certification_unique_per_partner")
        ]
        indexes = [models.Index(fields=["expires_at"])]

    def __str__(self):
        return f"{self.type} {self.number}".strip()


class SyncCursor(models.Model):
    """How far a polling stream has read (e.g. the last `updated_at` seen), so a restart resumes there."""

    stream = models.CharField(max_length=100, unique=True)
    value = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["stream"]

    def __str__(self):
        return f"{self.stream} @ {self.value or '(start)'}"
