"""Outbound communications to partner contacts, approved in the admin and sent through Mailchimp.

State changes go through campaigns/services.py (the state machine lives there); reads through
campaigns/selectors.py."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from campaigns.document_files import FILE_TYPE_CHOICES, document_upload_to, private_document_storage
from partners.models import MailchimpAudience, Segment


class CommunicationKind(models.TextChoices):
    NEWSLETTER = "newsletter", "Newsletter"
    POLICY_UPDATE = "policy_update", "Policy update"
    ONBOARDING_ANNOUNCEMENT = "onboarding_announcement", "Onboarding announcement"
    PROGRAM_CHANGE = "program_change", "Program change"
    COMPLIANCE_REMINDER = "compliance_reminder", "Compliance reminder"
    PRODUCT_LAUNCH = "product_launch", "Product launch"
    PROCESS_UPDATE = "process_update", "Process update"
    EVENT_INVITATION = "event_invitation", "Event invitation"


class CommunicationState(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted for approval"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    APPROVED = "approved", "Approved"
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class Communication(models.Model):
    kind = models.CharField(max_length=32, choices=CommunicationKind.choices)
    audience = models.ForeignKey(MailchimpAudience, on_delete=models.PROTECT, related_name="communications")
    segments = models.ManyToManyField(
        Segment, related_name="communications", help_text="Who receives it: every contact in any of these segments."
    )
    subject = models.CharField(max_length=150)
    preview_text = models.CharField(max_length=150, blank=True, help_text="The line inboxes show after the subject.")
    from_name = models.CharField(max_length=100)
    reply_to = models.EmailField("reply-to address")
    html_body = models.TextField("HTML body", blank=True)
    template_id = models.PositiveIntegerField(
        "Mailchimp template id", null=True, blank=True, help_text="Instead of an HTML body: a saved Mailchimp template."
    )
    template_sections = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            'The template\'s editable sections by name (its mc:edit names), e.g. {"body": "Hello partners"} '
            "(HTML allowed in the values)."
        ),
    )
    schedule_time = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Empty: send as soon as it is approved. Mailchimp sends on the quarter hour, so a time in "
        "between is rounded up to the next :00, :15, :30 or :45.",
    )
    state = models.CharField(max_length=20, choices=CommunicationState.choices, default=CommunicationState.DRAFT)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="communications_created"
    )
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="communications_submitted",
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="communications_approved",
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    mailchimp_campaign_id = models.CharField(max_length=40, blank=True)
    mailchimp_web_id = models.BigIntegerField(null=True, blank=True)
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="The quarter-hour slot Mailchimp was given (UTC)."
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True, help_text="What Mailchimp said when it refused.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-pk"]
        permissions = [("approve_communication", "Can approve communications (not ones they submitted)")]
        indexes = [models.Index(fields=["state", "submitted_by"]), models.Index(fields=["created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(template_id__isnull=True) | models.Q(html_body=""),
                name="communication_html_or_template",
                violation_error_message="A communication has an HTML body or a Mailchimp template, not both.",
            )
        ]

    def __str__(self):
        return f"#{self.pk} {self.subject}" if self.pk else self.subject

    @property
    def uses_template(self) -> bool:
        return self.template_id is not None


class StateTransition(models.Model):
    """One step through a state machine (communications, community posts): who moved it, when, and why."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty: Partnerlink itself (a task or a sweep).",
    )
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True
        ordering = ["created_at", "pk"]


class CommunicationTransition(StateTransition):
    communication = models.ForeignKey(Communication, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20, choices=CommunicationState.choices, blank=True)  # blank: created
    to_state = models.CharField(max_length=20, choices=CommunicationState.choices)

    class Meta(StateTransition.Meta):
        pass

    def __str__(self):
        return f"{self.communication_id}: {self.from_state} → {self.to_state}"


class SendStatus(models.TextChoices):
    IDLE = "idle", "Draft in Mailchimp (for the checklist and test emails)"
    PENDING = "pending", "Waiting to be handed to Mailchimp"
    DONE = "done", "Handed to Mailchimp (sent or scheduled)"
    FAILED = "failed", "Failed"
    CANCELLING = "cancelling", "Waiting for Mailchimp to unschedule it"
    CANCELLED = "cancelled", "Cancelled"


class CampaignSend(models.Model):
    """The ledger row of a communication's one Mailchimp campaign (unique per communication).

    The campaign id is recorded the moment Mailchimp creates it, and every later run (a retry, a task run
    twice, a retry after failure) reuses it. `pending` rows are what the beat relay re-enqueues when their
    message was lost. The lease serializes everything that talks to Mailchimp about this campaign, across
    workers, without holding a database transaction open over HTTP calls."""

    communication = models.OneToOneField(Communication, on_delete=models.CASCADE, related_name="send")
    status = models.CharField(max_length=20, choices=SendStatus.choices, default=SendStatus.IDLE)
    mailchimp_campaign_id = models.CharField(max_length=40, blank=True)
    mailchimp_web_id = models.BigIntegerField(null=True, blank=True)
    mailchimp_segment_id = models.BigIntegerField(
        null=True, blank=True, help_text="The static segment made for this communication: its segments combined."
    )
    recipient_count = models.PositiveIntegerField(null=True, blank=True, help_text="Mailchimp's count.")
    checklist = models.JSONField(null=True, blank=True, help_text="Mailchimp's send checklist, as last read.")
    rendered_html = models.TextField(blank=True, help_text="The content as Mailchimp holds it, as last read.")
    prepared_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When its task was last enqueued.")
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When a retry is due.")
    cancel_requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    cancel_comment = models.TextField(blank=True)
    lease_owner = models.CharField(max_length=40, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "queued_at"])]

    def __str__(self):
        return f"send of communication {self.communication_id} ({self.status})"


class EmailTestStatus(models.TextChoices):
    PENDING = "pending", "Queued"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class CommunicationTestEmail(models.Model):
    """A "send test to me": one Mailchimp test email of the communication's campaign, to one person."""

    communication = models.ForeignKey(Communication, on_delete=models.CASCADE, related_name="test_emails")
    email = models.EmailField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=10, choices=EmailTestStatus.choices, default=EmailTestStatus.PENDING)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"test of {self.communication_id} to {self.email} ({self.status})"


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


# --- Community posts (flow F1) ------------------------------------------------------------------------
# A sent Mailchimp campaign becomes a community post in Trading Grid, after a partner manager approves it.
# Services: campaigns/posts.py; cleaning: campaigns/post_content.py.

EXTERNAL_CAMPAIGN_KIND = "external"
POST_KIND_CHOICES = [*CommunicationKind.choices, (EXTERNAL_CAMPAIGN_KIND, "Not sent from Partnerlink")]


class PostStyle(models.TextChoices):
    FULL = "full", "Full content"
    SUMMARY = "summary", "Summary (title, first paragraphs, key links)"


# Used until an administrator sets a kind's style in the admin (Community post styles).
DEFAULT_POST_STYLES = {
    CommunicationKind.NEWSLETTER: PostStyle.SUMMARY,
    CommunicationKind.POLICY_UPDATE: PostStyle.FULL,
    CommunicationKind.ONBOARDING_ANNOUNCEMENT: PostStyle.FULL,
    CommunicationKind.PROGRAM_CHANGE: PostStyle.FULL,
    CommunicationKind.COMPLIANCE_REMINDER: PostStyle.SUMMARY,
    CommunicationKind.PRODUCT_LAUNCH: PostStyle.SUMMARY,
    CommunicationKind.PROCESS_UPDATE: PostStyle.FULL,
    CommunicationKind.EVENT_INVITATION: PostStyle.SUMMARY,
    EXTERNAL_CAMPAIGN_KIND: PostStyle.SUMMARY,
}


class PostStylePerKind(models.Model):
    """Whether a communication kind's campaigns become posts with their full content or a summary."""

    kind = models.CharField(max_length=32, choices=POST_KIND_CHOICES, unique=True)
    style = models.CharField(max_length=10, choices=PostStyle.choices)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind"]
        verbose_name = "community post style"
        verbose_name_plural = "community post styles"

    def __str__(self):
        return f"{self.get_kind_display()}: {self.get_style_display()}"


class PostState(models.TextChoices):
    IMPORTING = "importing", "Fetching from Mailchimp"
    IMPORT_FAILED = "import_failed", "Import failed"
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted for approval"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    APPROVED = "approved", "Approved (publishing)"
    PUBLISHED = "published", "Published"
    FAILED = "failed", "Publishing failed"
    DISCARDED = "discarded", "Discarded"


class PostOrigin(models.TextChoices):
    PARTNERLINK = "partnerlink", "Sent from Partnerlink"
    WEBHOOK = "webhook", "Mailchimp webhook"
    SWEEP = "sweep", "Sweep of sent campaigns"
    IMPORT = "import", "Imported from past campaigns"


class CommunityPost(models.Model):
    """One sent Mailchimp campaign as a Trading Grid community post, and the ledger row of its publication.

    Unique on the Mailchimp campaign id: a webhook delivered twice, a webhook and the sweep, or an import of a
    campaign already here all find this row. The Trading Grid post id is recorded the moment Trading Grid returns
    it; a later publication (after an edit and a new approval) updates that post, never creates another."""

    mailchimp_campaign_id = models.CharField(max_length=40, unique=True)
    mailchimp_list_id = models.CharField(max_length=20, blank=True)
    campaign_title = models.CharField(max_length=200, blank=True, help_text="Mailchimp's internal campaign name.")
    campaign_subject = models.CharField(max_length=200, blank=True)
    campaign_sent_at = models.DateTimeField(null=True, blank=True)
    archive_url = models.URLField(max_length=500, blank=True, help_text="The campaign's web version in Mailchimp.")
    communication = models.OneToOneField(
        Communication, null=True, blank=True, on_delete=models.SET_NULL, related_name="community_post"
    )
    kind = models.CharField(max_length=32, choices=POST_KIND_CHOICES, default=EXTERNAL_CAMPAIGN_KIND)
    origin = models.CharField(max_length=20, choices=PostOrigin.choices)
    style = models.CharField(max_length=10, choices=PostStyle.choices, default=PostStyle.SUMMARY)
    source_html = models.TextField(blank=True, help_text="The email as Mailchimp returned it.")
    source_plain_text = models.TextField(blank=True)
    title = models.CharField(max_length=200, blank=True)
    summary = models.TextField(blank=True, help_text="Plain text: the first paragraphs of the email.")
    body_html = models.TextField("body (HTML)", blank=True)
    partner_types = models.JSONField(default=list, blank=True, help_text="Who sees it in the community; empty: all.")
    regions = models.JSONField(default=list, blank=True, help_text="Empty: every region.")
    state = models.CharField(max_length=20, choices=PostState.choices, default=PostState.IMPORTING)
    revision = models.PositiveIntegerField(default=1, help_text="Goes up with every edit of what partners see.")
    published_revision = models.PositiveIntegerField(null=True, blank=True)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True, help_text="What Mailchimp or Trading Grid said when it refused.")
    # The publication ledger.
    tg_post_id = models.CharField("Trading Grid post id", max_length=64, blank=True)
    tg_post_url = models.URLField("Trading Grid post URL", max_length=500, blank=True)
    tg_published_at = models.DateTimeField(null=True, blank=True)
    tg_create_started_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set just before POST /posts, cleared once Trading Grid's answer (or a sure refusal) is recorded: "
        "still set afterwards means the create is in doubt.",
    )
    last_pushed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Publication runs that talked to Trading Grid.")
    last_error = models.TextField(blank=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When its task was last enqueued.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=40, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        permissions = [("approve_communitypost", "Can approve community posts (not ones they submitted)")]
        constraints = [
            models.UniqueConstraint(
                fields=["tg_post_id"], condition=~models.Q(tg_post_id=""), name="community_post_one_tg_post"
            )
        ]
        indexes = [models.Index(fields=["state", "queued_at"]), models.Index(fields=["campaign_sent_at"])]

    def __str__(self):
        return f"#{self.pk} {self.title or self.campaign_subject or self.mailchimp_campaign_id}"

    @property
    def create_in_doubt(self) -> bool:
        return self.tg_create_started_at is not None and not self.tg_post_id

    @property
    def unpublished_edits(self) -> bool:
        return bool(self.tg_post_id) and self.published_revision != self.revision


class CommunityPostTransition(StateTransition):
    post = models.ForeignKey(CommunityPost, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20, choices=PostState.choices, blank=True)  # blank: created
    to_state = models.CharField(max_length=20, choices=PostState.choices)

    class Meta(StateTransition.Meta):
        pass

    def __str__(self):
        return f"post {self.post_id}: {self.from_state} → {self.to_state}"


# --- Policy documents with confirmed receipt (flow F5) ----------------------------------------------
# Services: campaigns/documents.py. Files: campaigns/document_files.py (checks, private storage).


class DocumentKind(models.TextChoices):
    """Trading Grid's document kinds (CONTRACT.md)."""

    POLICY = "policy", "Policy"
    TRADING_TERMS = "trading_terms", "Trading terms"
    OPERATIONAL_GUIDE = "operational_guide", "Operational guide"


class PolicyDocument(models.Model):
    """A policy, trading terms or operational guide whose latest approved version lives in the Trading Grid
    community, where partners read it and confirm receipt; who has not confirmed gets reminders."""

    kind = models.CharField(max_length=20, choices=DocumentKind.choices)
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, help_text="Shown on the community page above the file.")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="policy_documents",
        help_text="Who answers for it (empty: you); alerted when a partner without a partner manager does not "
        "confirm.",
    )
    remind_after_days = models.PositiveSmallIntegerField(
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text="Days after the email (and between reminders) before a contact who has not confirmed is reminded.",
    )
    max_reminders = models.PositiveSmallIntegerField(
        default=2,
        validators=[MaxValueValidator(10)],
        help_text="At most this many reminders per contact; after the last, the partner manager is alerted.",
    )
    reminder_tag = models.CharField(
        max_length=100,
        blank=True,
        help_text="Mailchimp tag set on the contact for each reminder (an automation triggered by the tag sends "
        "the reminder email). Removed and set again for every reminder so the automation fires each time.",
    )
    reminder_journey_id = models.PositiveBigIntegerField(
        "reminder journey id", null=True, blank=True, help_text=JOURNEY_IDS_HELP
    )
    reminder_step_id = models.PositiveBigIntegerField("reminder step id", null=True, blank=True)
    tg_document_id = models.CharField("TG document id", max_length=64, blank=True, editable=False)
    tg_url = models.URLField("community page", max_length=500, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["tg_document_id"], condition=~models.Q(tg_document_id=""), name="policy_document_tg_id_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(reminder_journey_id__isnull=True, reminder_step_id__isnull=True)
                | models.Q(reminder_journey_id__isnull=False, reminder_step_id__isnull=False),
                name="policy_document_journey_and_step",
                violation_error_message="A reminder journey needs both its journey id and its step id.",
            ),
        ]

    def __str__(self):
        return self.title

    @property
    def has_reminder_action(self) -> bool:
        return bool(self.reminder_tag or self.reminder_journey_id)


class DocumentVersionStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Submitted for approval"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    APPROVED = "approved", "Approved (latest)"
    SUPERSEDED = "superseded", "Superseded"


class DocumentVersion(models.Model):
    """One uploaded file of a document. Four-eyes: the submitter cannot approve it; only Approvers approve.
    The approved version is the latest; approving a newer one supersedes it."""

    document = models.ForeignKey(PolicyDocument, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(
        max_length=40, help_text="The label partners see, e.g. 2026.1 or 3.2; unique within the document."
    )
    change_summary = models.TextField(help_text="What changed since the previous version.")
    file = models.FileField(storage=private_document_storage, upload_to=document_upload_to, max_length=300)
    file_name = models.CharField(max_length=255, help_text="The name it was uploaded with.")
    file_type = models.CharField(max_length=10, choices=FILE_TYPE_CHOICES)
    size = models.PositiveBigIntegerField(help_text="Bytes.")
    sha256 = models.CharField("SHA-256", max_length=64)
    status = models.CharField(
        max_length=20, choices=DocumentVersionStatus.choices, default=DocumentVersionStatus.DRAFT
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="document_versions_created"
    )
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="document_versions_submitted",
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="document_versions_approved",
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="supersedes"
    )
    superseded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["document_id", "-created_at", "-pk"]
        permissions = [("approve_documentversion", "Can approve document versions (not ones they submitted)")]
        constraints = [
            models.UniqueConstraint(fields=["document", "version"], name="document_version_label_unique"),
            models.UniqueConstraint(
                fields=["document"],
                condition=models.Q(status="approved"),
                name="document_one_approved_version",
                violation_error_message="A document has one approved version: the latest.",
            ),
        ]
        indexes = [models.Index(fields=["status", "submitted_by"])]

    def __str__(self):
        return f"{self.document} v{self.version}" if self.document_id else f"v{self.version}"


class PublicationStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be published"
    PUBLISHED = "published", "Published in Trading Grid"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Not published (superseded first)"


class DocumentPublication(models.Model):
    """The ledger row of one version's publication to the Trading Grid community (unique per version).

    The Trading Grid document id is recorded on the document the moment Trading Grid creates it, so a retry
    adds a version to it instead of creating a second document; adding a version Trading Grid already holds
    (409) is recognised by its SHA-256 and recorded as published. The lease keeps two workers apart."""

    version = models.OneToOneField(DocumentVersion, on_delete=models.CASCADE, related_name="publication")
    status = models.CharField(max_length=20, choices=PublicationStatus.choices, default=PublicationStatus.PENDING)
    tg_document_id = models.CharField("TG document id", max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    queued_at = models.DateTimeField(null=True, blank=True, help_text="When its task was last enqueued.")
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="When a retry is due.")
    lease_owner = models.CharField(max_length=40, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["status", "queued_at"])]

    def __str__(self):
        return f"publication of {self.version_id} ({self.status})"


class DocumentDistribution(models.Model):
    """A communication (kind “policy update”) that sends one version to partner contacts. Its links carry the
    version and each reader's key, so clicks are attributed; reminders count from its send."""

    communication = models.OneToOneField(
        Communication, on_delete=models.CASCADE, related_name="document_distribution"
    )
    version = models.ForeignKey(DocumentVersion, on_delete=models.PROTECT, related_name="distributions")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    links_ready_at = models.DateTimeField(
        null=True, blank=True, help_text="When every recipient's link key was in Mailchimp (just before the send)."
    )
    reminders_started_at = models.DateTimeField(
        null=True, blank=True, help_text="When the reminder schedule was set, once Mailchimp had sent it."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return f"distribution of {self.version_id} by communication {self.communication_id}"


class DocumentLinkKey(models.Model):
    """A reader's random key, held in the Mailchimp merge field DOCKEY of their member. Links in distribution
    emails are /d/<version>/*|DOCKEY|*: the version comes from the email, the reader from the key, so the key
    never changes and two distributions in flight can never overwrite each other's links."""

    audience = models.ForeignKey(MailchimpAudience, on_delete=models.CASCADE, related_name="document_link_keys")
    email = models.EmailField(max_length=254)
    key = models.CharField(max_length=64, unique=True)
    pushed_at = models.DateTimeField(null=True, blank=True, help_text="When Mailchimp accepted it.")
    push_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["audience", "email"], name="document_link_key_per_member")]

    def __str__(self):
        return f"link key of {self.email}"


class DocumentRecipient(models.Model):
    """One address a version was sent to (unique per version): its clicks, its confirmation, its reminders."""

    version = models.ForeignKey(DocumentVersion, on_delete=models.CASCADE, related_name="recipients")
    distribution = models.ForeignKey(DocumentDistribution, on_delete=models.CASCADE, related_name="recipients")
    email = models.EmailField(max_length=254)
    contact = models.ForeignKey(
        "partners.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="document_receipts"
    )
    partner = models.ForeignKey(
        "partners.TradingPartner",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="document_receipts",
    )
    first_clicked_at = models.DateTimeField(null=True, blank=True)
    last_clicked_at = models.DateTimeField(null=True, blank=True)
    click_count = models.PositiveIntegerField(default=0)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    reminders_sent = models.PositiveSmallIntegerField(
        default=0, help_text="Reminder stages taken (sent or skipped)."
    )
    next_reminder_at = models.DateTimeField(
        null=True, blank=True, help_text="When the next stage (reminder or alert) is due; empty: none."
    )
    reminders_stopped = models.CharField(max_length=200, blank=True, help_text="Why no more stages follow.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["version_id", "email"]
        constraints = [models.UniqueConstraint(fields=["version", "email"], name="document_recipient_once")]
        indexes = [models.Index(fields=["next_reminder_at"])]

    def __str__(self):
        return f"{self.email} ← {self.version_id}"


class AcknowledgementSource(models.TextChoices):
    WEBHOOK = "webhook", "Webhook"
    POLL = "poll", "Poll"


class DocumentAcknowledgement(models.Model):
    """A contact confirmed receipt of a version in the community (Trading Grid's key: partner, email,
    version). Stored once: a duplicate, by webhook or poll, changes nothing."""

    version = models.ForeignKey(DocumentVersion, on_delete=models.CASCADE, related_name="acknowledgements")
    partner_company_id = models.CharField("partner BUID", max_length=12)
    email = models.EmailField(max_length=254)
    partner = models.ForeignKey(
        "partners.TradingPartner", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    contact = models.ForeignKey("partners.Contact", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    acknowledged_at = models.DateTimeField()
    source = models.CharField(max_length=10, choices=AcknowledgementSource.choices)
    recorded_at = models.DateTimeField(auto_now_add=True)
    raw = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-acknowledged_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "partner_company_id", "email"], name="document_acknowledgement_once"
            )
        ]
        indexes = [models.Index(fields=["version", "email"])]

    def __str__(self):
        return f"{self.email} ({self.partner_company_id}) confirmed {self.version_id}"


class ReminderKind(models.TextChoices):
    REMINDER = "reminder", "Reminder to the contact"
    ALERT = "alert", "Alert to the partner manager"


class ReminderStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    SKIPPED = "skipped", "Skipped"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class ReminderProgress(models.IntegerChoices):
    """How far a reminder got in Mailchimp; a retry continues from here."""

    NOTHING = 0, "Nothing sent yet"
    CHECKED = 1, "Member checked"
    TAG_CLEARED = 2, "Tag removed"
    TAG_SET = 3, "Tag set"
    JOURNEY = 4, "Journey step triggered"


class DocumentReminder(models.Model):
    """The ledger row of one reminder stage for one recipient of one version: reminder 1…M through
    Mailchimp, then the alert to the partner manager. Unique, so a sweep that runs twice does nothing twice."""

    recipient = models.ForeignKey(DocumentRecipient, on_delete=models.CASCADE, related_name="reminders")
    version = models.ForeignKey(DocumentVersion, on_delete=models.CASCADE, related_name="reminders")
    kind = models.CharField(max_length=10, choices=ReminderKind.choices)
    stage = models.PositiveSmallIntegerField(help_text="Reminder number; for the alert, the reminders before it + 1.")
    status = models.CharField(max_length=10, choices=ReminderStatus.choices, default=ReminderStatus.PENDING)
    progress = models.PositiveSmallIntegerField(choices=ReminderProgress.choices, default=ReminderProgress.NOTHING)
    due_at = models.DateTimeField()
    reason = models.TextField(blank=True, help_text="Why it was skipped, cancelled or failed.")
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, help_text="Lease or retry time.")
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["recipient", "version", "kind", "stage"], name="document_reminder_once"),
            models.UniqueConstraint(
                fields=["recipient", "version"],
                condition=models.Q(kind="alert"),
                name="document_alert_once",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self):
        what = "alert" if self.kind == ReminderKind.ALERT else f"reminder {self.stage}"
        return f"{what} for {self.recipient_id} ({self.status})"
