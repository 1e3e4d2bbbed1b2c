"""Admin for communications: thin. Every change of state goes through campaigns/services.py; what the
change page shows beside the form (recipients, Mailchimp's checklist and rendering, history) comes from
selectors and the ledger row."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from campaigns import selectors, services
from campaigns.models import (
    WATCHABLE_FIELDS,
    CampaignSend,
    Communication,
    CommunicationState,
    JourneyMapping,
    JourneyTrigger,
    JourneyTriggerKind,
    SendStatus,
)
from partners.admin import TradingPartnerAdmin
from partners.models import PartnerType, Region, Segment, Tier

EDIT_FIELDS = (
    "kind",
    "audience",
    "subject",
    "preview_text",
    "from_name",
    "reply_to",
    "html_body",
    "template_id",
    "template_sections",
    "schedule_time",
)
S = CommunicationState


class HtmlWithLivePreview(forms.Textarea):
    """The HTML body beside a sandboxed iframe that shows it as it is typed (static/campaigns/live-preview.js)."""

    def __init__(self, attrs=None):
        super().__init__(attrs={"rows": 18, "class": "vLargeTextField", "data-live-preview": "1", **(attrs or {})})

    def render(self, name, value, attrs=None, renderer=None):
        textarea = super().render(name, value, attrs, renderer)
        # sandbox="" : the email's own scripts and forms never run in the admin's origin.
        return format_html(
            '<div class="communication-editor">{}<div class="communication-live-preview">'
            '<p class="help">Live preview (as you type; Mailchimp\'s own rendering is shown above once its '
            'draft exists)</p><iframe sandbox="" title="Live preview of the HTML body" srcdoc="{}"></iframe>'
            "</div></div>",
            textarea,
            value or "",
        )

    class Media:
        js = ("campaigns/live-preview.js",)
        css = {"all": ("campaigns/communication.css",)}


class CommunicationForm(forms.ModelForm):
    segments = forms.ModelMultipleChoiceField(
        queryset=Segment.objects.select_related("audience"),
        widget=admin.widgets.FilteredSelectMultiple("segments", is_stacked=False),
        help_text="Every contact in any of these segments receives it (each address once).",
    )

    class Meta:
        model = Communication
        fields = (*EDIT_FIELDS, "segments")
        widgets = {"html_body": HtmlWithLivePreview}

    def clean_template_sections(self):
        return self.cleaned_data.get("template_sections") or {}

    def clean(self):
        cleaned = super().clean()
        html, template_id = (cleaned.get("html_body") or "").strip(), cleaned.get("template_id")
        if html and template_id is not None:
            raise ValidationError("Write an HTML body or choose a Mailchimp template, not both.")
        audience, segments = cleaned.get("audience"), cleaned.get("segments")
        if audience is None and self.instance.audience_id:  # read-only once its Mailchimp campaign exists
            audience = self.instance.audience
        if audience is not None and segments:
            outside = selectors.segments_outside_audience(audience, segments)
            if outside:
                self.add_error(
                    "segments",
                    f"Not segments of {audience.name}: {', '.join(segment.name for segment in outside)}.",
                )
        sections = cleaned.get("template_sections")
        if sections and not isinstance(sections, dict):
            self.add_error("template_sections", 'Sections are an object of names and HTML: {"body": "<p>…</p>"}.')
        return cleaned


class WaitingForMyApprovalFilter(admin.SimpleListFilter):
    title = "approval"
    parameter_name = "waiting_for"

    def lookups(self, request, model_admin):
        # Hidden (no choices) for people who can't approve anything.
        return (("me", "Waiting for my approval"),) if selectors.user_can_approve(request.user) else ()

    def queryset(self, request, queryset):
        if self.value() == "me":
            return selectors.communications_waiting_for(request.user, queryset)
        return queryset


@admin.register(Communication)
class CommunicationAdmin(admin.ModelAdmin):
    form = CommunicationForm
    list_display = ("subject", "kind", "state", "audience", "created_by", "approved_by", "when", "updated_at")
    list_filter = (
        WaitingForMyApprovalFilter,
        "kind",
        "state",
        ("created_by", admin.RelatedOnlyFieldListFilter),
        ("approved_by", admin.RelatedOnlyFieldListFilter),
        "created_at",
    )
    search_fields = ("subject", "=mailchimp_campaign_id")
    list_per_page = 100
    change_form_template = "admin/campaigns/communication/change_form.html"
    change_list_template = "admin/campaigns/communication/change_list.html"
    fieldsets = (
        (None, {"fields": ("kind", "audience", "segments")}),
        ("Email", {"fields": ("subject", "preview_text", "from_name", "reply_to")}),
        (
            "Content: an HTML body, or a Mailchimp template with its sections",
            {"fields": ("html_body", "template_id", "template_sections")},
        ),
        ("When", {"fields": ("schedule_time",)}),
    )

    def get_queryset(self, request):
        return selectors.communications_for_list(super().get_queryset(request))

    @admin.display(description="scheduled / sent", ordering="sent_at")
    def when(self, communication):
        if communication.sent_at:
            return f"sent {selectors.format_utc(communication.sent_at)}"
        if communication.scheduled_for:
            return f"for {selectors.format_utc(communication.scheduled_for)}"
        if communication.schedule_time:
            return f"asked {selectors.format_utc(communication.schedule_time)}"
        return "at once"

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        if obj.state not in services.EDITABLE_STATES:
            return (*EDIT_FIELDS, "segments")
        if obj.mailchimp_campaign_id:
            return ("audience",)  # its Mailchimp campaign belongs to this audience
        return ()

    def has_delete_permission(self, request, obj=None):
        # Communications are cancelled, not deleted: their history and Mailchimp campaign stay traceable.
        return False

    # -- saving through the services -------------------------------------------------------------------
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except (services.TransitionError, ValidationError) as exc:
            # The state changed between showing the form and saving it: nothing was saved.
            self.message_user(request, _message(exc), messages.ERROR)
            target = reverse("admin:campaigns_communication_change", args=[object_id]) if object_id else request.path
            return HttpResponseRedirect(target)

    def save_model(self, request, obj, form, change):
        data = {field: form.cleaned_data[field] for field in EDIT_FIELDS if field in form.cleaned_data}
        segments = form.cleaned_data.get("segments")
        if change:
            saved = services.communication_update(
                communication_id=obj.pk, actor=request.user, changes=data, segments=segments
            )
        else:
            saved = services.communication_create(author=request.user, segments=segments or [], **data)
            obj.pk = obj.id = saved.pk
            obj._state.adding = False
        if saved.schedule_time and saved.state in services.EDITABLE_STATES:
            slot = selectors.communication_schedule_slot(saved)
            if slot != saved.schedule_time:
                self.message_user(
                    request,
                    f"Mailchimp sends on the quarter hour: {selectors.format_utc(saved.schedule_time)} "
                    f"becomes {selectors.format_utc(slot)}.",
                    messages.WARNING,
                )

    def save_related(self, request, form, formsets, change):
        pass  # segments are set by the service

    # -- the change page -------------------------------------------------------------------------------
    def change_view(self, request, object_id, form_url="", extra_context=None):
        communication = self.get_object(request, object_id)
        if communication is not None:
            extra_context = {**(extra_context or {}), **self._page_context(request, communication)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _page_context(self, request, communication):
        send = CampaignSend.objects.filter(communication=communication).first()
        user = request.user
        state = communication.state
        is_submitter = communication.submitted_by_id == user.pk
        can_approve = selectors.user_can_approve(user)
        can_change = selectors.user_can_change(user)
        allowed = services.ALLOWED_TRANSITIONS[state]
        actions = []
        if can_change and S.SUBMITTED in allowed:
            actions.append(("submit", "Submit for approval", False))
        if state == S.SUBMITTED and can_approve and not is_submitter:
            actions.append(("approve", "Approve", False))
            actions.append(("request_changes", "Request changes", True))
        if state == S.FAILED and can_approve and not is_submitter:
            actions.append(("retry", "Retry the send", False))
        if can_change and S.CANCELLED in allowed and not (send and send.status == SendStatus.CANCELLING):
            actions.append(("cancel", "Cancel", True))
        if state != S.CANCELLED and (communication.html_body.strip() or communication.template_id is not None):
            actions.append(("test_email", f"Send test to me ({user.email or 'no address'})", False))
        if send is not None and state in services.DRAFT_PUSH_STATES:
            actions.append(("refresh", "Refresh Mailchimp checklist and preview", False))
        waiting_note = ""
        if state == S.SUBMITTED and is_submitter:
            waiting_note = "You submitted it: another approver has to approve it (four-eyes rule)."
        elif state == S.SUBMITTED and not can_approve:
            waiting_note = "Waiting for a member of “Approvers”."
        return {
            "communication": communication,
            "send": send,
            "actions": actions,
            "waiting_note": waiting_note,
            "recipient_rows": selectors.communication_recipient_rows(communication),
            "send_plan": selectors.communication_send_plan(communication),
            "scheduled_for_utc": selectors.format_utc(communication.scheduled_for),
            "transitions": communication.transitions.select_related("actor"),
            "test_emails": communication.test_emails.select_related("requested_by")[:10],
            "preview_html": (send.rendered_html if send and send.rendered_html else communication.html_body),
            "preview_from_mailchimp": bool(send and send.rendered_html),
            "cancelling": bool(send and send.status == SendStatus.CANCELLING),
        }

    def get_urls(self):
        return [
            path(
                "waiting-for-me/",
                self.admin_site.admin_view(self.waiting_for_me_view),
                name="campaigns_communication_waiting",
            ),
            path(
                "<int:object_id>/do/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="campaigns_communication_action",
            ),
            *super().get_urls(),
        ]

    def waiting_for_me_view(self, request):
        """Submitted communications I may approve: the list, filtered."""
        query = urlencode({WaitingForMyApprovalFilter.parameter_name: "me"})
        return HttpResponseRedirect(f"{reverse('admin:campaigns_communication_changelist')}?{query}")

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_approve": selectors.user_can_approve(request.user)}
        if extra_context["can_approve"]:
            extra_context["waiting_count"] = selectors.communications_waiting_for(request.user).count()
        return super().changelist_view(request, extra_context)

    def action_view(self, request, object_id, action):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        communication = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_view_permission(request, communication):
            raise PermissionDenied
        comment = request.POST.get("comment", "")
        handlers = {
            "submit": self._submit,
            "approve": self._approve,
            "request_changes": self._request_changes,
            "retry": self._retry,
            "cancel": self._cancel,
            "test_email": self._test_email,
            "refresh": self._refresh,
        }
        handler = handlers.get(action)
        if handler is None:
            self.message_user(request, f"Unknown action “{action}”.", messages.ERROR)
        else:
            try:
                text = handler(request, communication, comment)
            except (services.TransitionError, ValidationError) as exc:
                self.message_user(request, _message(exc), messages.ERROR)
            else:
                self.message_user(request, text, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:campaigns_communication_change", args=[communication.pk]))

    def _submit(self, request, communication, comment):
        services.communication_submit(communication_id=communication.pk, actor=request.user, comment=comment)
        return "Submitted for approval. Mailchimp's checklist and preview appear here once its draft is ready."

    def _approve(self, request, communication, comment):
        approved = services.communication_approve(
            communication_id=communication.pk, actor=request.user, comment=comment
        )
        return f"Approved. {selectors.communication_send_plan(approved, now=timezone.now())}"

    def _request_changes(self, request, communication, comment):
        services.communication_request_changes(communication_id=communication.pk, actor=request.user, comment=comment)
        return "Sent back to its author with your comment."

    def _retry(self, request, communication, comment):
        retried = services.communication_retry(communication_id=communication.pk, actor=request.user, comment=comment)
        return f"Approved again; the same Mailchimp campaign is reused. {selectors.communication_send_plan(retried)}"

    def _cancel(self, request, communication, comment):
        cancelled = services.communication_cancel(
            communication_id=communication.pk, actor=request.user, comment=comment
        )
        if cancelled.state == S.SCHEDULED:
            return "Mailchimp is asked to unschedule it; this page shows the outcome."
        return "Cancelled."

    def _test_email(self, request, communication, comment):
        test_email = services.communication_test_email_request(communication_id=communication.pk, actor=request.user)
        return f"A test email to {test_email.email} is on its way through Mailchimp; its outcome is listed below."

    def _refresh(self, request, communication, comment):
        services.communication_refresh_mailchimp_draft(communication_id=communication.pk, actor=request.user)
        return "Mailchimp's draft is being brought up to date; reload the page in a moment."


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


@admin.register(CampaignSend)
class CampaignSendAdmin(admin.ModelAdmin):
    """The ledger: one row per communication that reached Mailchimp, for operators."""

    list_display = (
        "communication",
        "status",
        "mailchimp_campaign_id",
        "mailchimp_segment_id",
        "recipient_count",
        "attempts",
        "last_error",
        "queued_at",
        "finished_at",
    )
    list_filter = ("status",)
    list_select_related = ("communication",)
    search_fields = ("=mailchimp_campaign_id", "communication__subject")
    exclude = ("rendered_html",)

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in CampaignSend._meta.fields if field.name != "rendered_html"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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


# --- Community posts (flow F1) ------------------------------------------------------------------------
# Thin as above: every change goes through campaigns/posts.py.

from django.core.paginator import Paginator  # noqa: E402
from django.template.response import TemplateResponse  # noqa: E402

from campaigns import posts  # noqa: E402
from campaigns.models import CommunityPost, PostState, PostStyle, PostStylePerKind  # noqa: E402
from connectors.mailchimp.errors import MailchimpError  # noqa: E402

P = PostState
POST_EDIT_FIELDS = posts.EDITABLE_FIELDS


@admin.register(PostStylePerKind)
class PostStylePerKindAdmin(admin.ModelAdmin):
    """Full content or a summary, per kind of communication (and for campaigns not sent from Partnerlink)."""

    list_display = ("kind", "style", "updated_at")
    list_editable = ("style",)
    list_display_links = ("kind",)

    def has_delete_permission(self, request, obj=None):
        return False  # a kind without a row falls back to the shipped default; keep them explicit


class PostBodyWithLivePreview(HtmlWithLivePreview):
    """The post's body beside a sandboxed preview; what partners see once it is published."""

    def render(self, name, value, attrs=None, renderer=None):
        textarea = forms.Textarea.render(self, name, value, attrs, renderer)
        return format_html(
            '<div class="communication-editor">{}<div class="communication-live-preview">'
            '<p class="help">Live preview (as you type). Scripts, frames and event handlers are removed when '
            'it is saved.</p><iframe sandbox="" title="Live preview of the post body" srcdoc="{}"></iframe>'
            "</div></div>",
            textarea,
            value or "",
        )


class CommunityPostForm(forms.ModelForm):
    partner_types = forms.MultipleChoiceField(
        choices=PartnerType.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Who sees it in the community. None ticked: every partner type.",
    )
    regions = forms.MultipleChoiceField(
        choices=Region.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every region.",
    )

    class Meta:
        model = CommunityPost
        fields = POST_EDIT_FIELDS
        widgets = {
            "title": forms.TextInput(attrs={"class": "vLargeTextField"}),
            "summary": forms.Textarea(attrs={"rows": 5, "cols": 90}),
            "body_html": PostBodyWithLivePreview,
        }


class PostsWaitingForMeFilter(admin.SimpleListFilter):
    title = "approval"
    parameter_name = "waiting_for"

    def lookups(self, request, model_admin):
        return (("me", "Waiting for my approval"),) if posts.user_can_approve_posts(request.user) else ()

    def queryset(self, request, queryset):
        if self.value() == "me":
            return posts.posts_waiting_for(request.user, queryset)
        return queryset


@admin.register(CommunityPost)
class CommunityPostAdmin(admin.ModelAdmin):
    form = CommunityPostForm
    list_display = (
        "title_or_subject",
        "kind",
        "origin",
        "state",
        "campaign_sent_at",
        "tg_post_id",
        "submitted_by",
        "approved_by",
        "updated_at",
    )
    list_filter = (PostsWaitingForMeFilter, "state", "kind", "origin", "style", "campaign_sent_at", "created_at")
    search_fields = ("title", "campaign_subject", "=mailchimp_campaign_id", "=tg_post_id")
    date_hierarchy = "campaign_sent_at"
    list_per_page = 100
    change_form_template = "admin/campaigns/communitypost/change_form.html"
    change_list_template = "admin/campaigns/communitypost/change_list.html"
    fieldsets = (
        (None, {"fields": ("title", "summary", "body_html")}),
        ("Audience in the community", {"fields": ("partner_types", "regions")}),
    )

    def get_queryset(self, request):
        return posts.posts_for_list(super().get_queryset(request))

    @admin.display(description="title", ordering="title")
    def title_or_subject(self, post):
        return post.title or post.campaign_subject or post.mailchimp_campaign_id

    def has_add_permission(self, request):
        return False  # posts come from sent campaigns; past ones through "Import past campaigns"

    def has_delete_permission(self, request, obj=None):
        return False  # discarded, not deleted: the ledger row keeps the campaign from coming back

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.state not in posts.EDITABLE_STATES:
            return POST_EDIT_FIELDS
        return ()

    # -- saving through the services -------------------------------------------------------------------
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except (services.TransitionError, ValidationError) as exc:
            self.message_user(request, _message(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:campaigns_communitypost_change", args=[object_id]))

    def save_model(self, request, obj, form, change):
        changes = {field: form.cleaned_data[field] for field in POST_EDIT_FIELDS if field in form.cleaned_data}
        posts.community_post_update(post_id=obj.pk, actor=request.user, changes=changes)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        post = self.get_object(request, object_id)
        if post is not None:
            extra_context = {**(extra_context or {}), **self._page_context(request, post)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _page_context(self, request, post):
        user = request.user
        can_change = posts.user_can_change_posts(user)
        can_approve = posts.user_can_approve_posts(user)
        is_submitter = post.submitted_by_id == user.pk
        allowed = posts.ALLOWED_TRANSITIONS[post.state]
        actions = []
        if can_change and P.SUBMITTED in allowed:
            actions.append(("submit", "Submit for approval", False))
        if post.state == P.SUBMITTED and can_approve and not is_submitter:
            actions.append(("approve", "Approve and publish", False))
            actions.append(("request_changes", "Request changes", True))
        if post.state == P.FAILED and can_approve and not is_submitter and not post.create_in_doubt:
            actions.append(("retry", "Retry publishing", False))
        if post.state == P.IMPORT_FAILED and can_change:
            actions.append(("import_retry", "Fetch from Mailchimp again", False))
        if can_change and post.state in posts.EDITABLE_STATES and post.source_html:
            other = PostStyle.SUMMARY if post.style == PostStyle.FULL else PostStyle.FULL
            label = "Use the summary" if other == PostStyle.SUMMARY else "Use the full content"
            actions.append((f"restyle_{other}", f"{label} (replaces title, summary and body)", False))
        if can_change and P.DISCARDED in allowed and not post.tg_post_id:
            actions.append(("discard", "Discard (not for the community)", True))
        if can_change and post.state == P.DISCARDED:
            actions.append(("restore", "Restore", False))
        waiting_note = ""
        if post.state == P.SUBMITTED and is_submitter:
            waiting_note = "You submitted it: another approver has to approve it (four-eyes rule)."
        elif post.state == P.SUBMITTED and not can_approve:
            waiting_note = "Waiting for a member of “Approvers”."
        return {
            "post": post,
            "actions": actions,
            "waiting_note": waiting_note,
            "can_resolve": post.state == P.FAILED and can_approve and not is_submitter,
            "audience_notes": posts.post_audience_notes(post),
            "transitions": post.transitions.select_related("actor"),
            "tg_payload_audience": posts.community_post_tg_payload(post)["audience"],
        }

    def get_urls(self):
        return [
            path(
                "import-campaigns/",
                self.admin_site.admin_view(self.import_campaigns_view),
                name="campaigns_communitypost_import",
            ),
            path(
                "<int:object_id>/do/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="campaigns_communitypost_action",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_approve": posts.user_can_approve_posts(request.user),
            "can_import": posts.user_can_import_posts(request.user),
        }
        if extra_context["can_approve"]:
            extra_context["waiting_count"] = posts.posts_waiting_for(request.user).count()
        return super().changelist_view(request, extra_context)

    def action_view(self, request, object_id, action):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        post = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_view_permission(request, post):
            raise PermissionDenied
        comment = request.POST.get("comment", "")
        user = request.user
        handlers = {
            "submit": lambda: (posts.community_post_submit(post_id=post.pk, actor=user, comment=comment),
                               "Submitted for approval."),
            "approve": lambda: (posts.community_post_approve(post_id=post.pk, actor=user, comment=comment),
                                "Approved: it is being published to the Trading Grid community."),
            "request_changes": lambda: (
                posts.community_post_request_changes(post_id=post.pk, actor=user, comment=comment),
                "Sent back with your comment.",
            ),
            "retry": lambda: (posts.community_post_retry(post_id=post.pk, actor=user, comment=comment),
                              "Approved again: publishing to the same Trading Grid post."),
            "import_retry": lambda: (posts.community_post_import_retry(post_id=post.pk, actor=user),
                                     "Fetching it from Mailchimp again."),
            "restyle_full": lambda: (posts.community_post_restyle(post_id=post.pk, actor=user, style=PostStyle.FULL),
                                     "Now the full content of the email."),
            "restyle_summary": lambda: (
                posts.community_post_restyle(post_id=post.pk, actor=user, style=PostStyle.SUMMARY),
                "Now a summary of the email.",
            ),
            "discard": lambda: (posts.community_post_discard(post_id=post.pk, actor=user, comment=comment),
                                "Discarded: it won't be published."),
            "restore": lambda: (posts.community_post_restore(post_id=post.pk, actor=user, comment=comment),
                                "Restored."),
            "resolve": lambda: (
                posts.community_post_resolve_tg_post(
                    post_id=post.pk, actor=user, tg_post_id=request.POST.get("tg_post_id", "")
                ),
                "Resolved: publishing now.",
            ),
        }
        handler = handlers.get(action)
        if handler is None:
            self.message_user(request, f"Unknown action “{action}”.", messages.ERROR)
        else:
            try:
                _, text = handler()
            except (services.TransitionError, ValidationError) as exc:
                self.message_user(request, _message(exc), messages.ERROR)
            else:
                self.message_user(request, text, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:campaigns_communitypost_change", args=[post.pk]))

    def import_campaigns_view(self, request):
        """Mailchimp's sent campaigns, a page at a time; the chosen ones become drafts (again: nothing new)."""
        if not posts.user_can_import_posts(request.user):
            raise PermissionDenied
        page_number = _page_number(request)
        if request.method == "POST":
            chosen = request.POST.getlist("campaign_ids")
            if not chosen:
                self.message_user(request, "Tick the campaigns to import first.", messages.WARNING)
            else:
                try:
                    created, existing = posts.community_posts_import_campaigns(campaign_ids=chosen, actor=request.user)
                except services.TransitionError as exc:
                    self.message_user(request, str(exc), messages.ERROR)
                else:
                    text = f"{len(created)} campaign{'s' if len(created) != 1 else ''} imported as drafts"
                    text += " (their content is being fetched)" if created else ""
                    if existing:
                        text += f"; {len(existing)} already had a post"
                    self.message_user(request, text + ".", messages.SUCCESS)
            target = reverse("admin:campaigns_communitypost_import")
            return HttpResponseRedirect(f"{target}?{urlencode({'page': page_number})}")
        error = ""
        page = None
        try:
            page = posts.mailchimp_sent_campaigns_page(page=page_number, per_page=IMPORT_PAGE_SIZE)
        except MailchimpError as exc:
            error = f"Mailchimp could not list its campaigns: {exc}"
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import past campaigns as community posts",
            "page": page,
            "error": error,
            "page_range": (
                Paginator(range(page.total), page.per_page).get_elided_page_range(page.page) if page else []
            ),
        }
        return TemplateResponse(request, "admin/campaigns/communitypost/import_campaigns.html", context)


IMPORT_PAGE_SIZE = 25


def _page_number(request) -> int:
    try:
        return max(1, int(request.GET.get("page") or request.POST.get("page") or 1))
    except ValueError:
        return 1


# --- Policy documents (flow F5): thin, through campaigns/documents.py ------------------------------------

from django.contrib.admin.models import LogEntry  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.http import FileResponse, HttpResponse  # noqa: E402
from django.shortcuts import render  # noqa: E402

from campaigns import document_selectors, documents  # noqa: E402
from campaigns.document_files import FILE_TYPES, check_upload, human_size  # noqa: E402
from campaigns.models import (  # noqa: E402
    DocumentAcknowledgement,
    DocumentPublication,
    DocumentReminder,
    DocumentVersion,
    DocumentVersionStatus,
    PolicyDocument,
    PublicationStatus,
)
from partners.selectors import default_audience  # noqa: E402

V = DocumentVersionStatus


class PolicyDocumentForm(forms.ModelForm):
    class Meta:
        model = PolicyDocument
        fields = documents.DOCUMENT_SETTINGS

    def clean(self):
        data = super().clean()
        if (data.get("reminder_journey_id") is None) != (data.get("reminder_step_id") is None):
            self.add_error("reminder_step_id", "A reminder journey needs both its journey id and its step id.")
        return data


class VersionUploadForm(forms.ModelForm):
    """A new version on the document's page: the file is checked (size, type, content) before anything is saved."""

    class Meta:
        model = DocumentVersion
        fields = ("version", "change_summary", "file")
        widgets = {"change_summary": forms.Textarea(attrs={"rows": 2, "cols": 50})}

    def clean_file(self):
        upload = self.cleaned_data.get("file")
        if upload:
            check_upload(upload)
        return upload

    def validate_unique(self):
        pass  # the service checks the label against the document's versions (the document may not exist yet)

    def clean(self):
        data = super().clean()
        document = self.instance.document if self.instance.document_id else None
        label = (data.get("version") or "").strip()
        if document is not None and label and document.versions.filter(version=label).exists():
            self.add_error("version", f"“{document.title}” already has a version {label}.")
        return data


class DocumentVersionUploadInline(admin.StackedInline):
    model = DocumentVersion
    form = VersionUploadForm
    extra = 1
    max_num = 1
    can_delete = False
    verbose_name = "new version"
    verbose_name_plural = "upload a new version (PDF, Word .docx or Excel .xlsx)"

    def get_queryset(self, request):
        return super().get_queryset(request).none()


class DocumentVersionListInline(admin.TabularInline):
    model = DocumentVersion
    extra = 0
    can_delete = False
    verbose_name_plural = "versions"
    fields = ("version_link", "status", "file_name", "size_shown", "created_by", "approved_by", "published")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return document_selectors.versions_for_list(super().get_queryset(request)).select_related("created_by")

    @admin.display(description="version")
    def version_link(self, version):
        url = reverse("admin:campaigns_documentversion_change", args=[version.pk])
        return format_html('<a href="{}">{}</a>', url, version.version)

    @admin.display(description="size")
    def size_shown(self, version):
        return human_size(version.size)

    @admin.display(description="Trading Grid")
    def published(self, version):
        publication = getattr(version, "publication", None)
        return publication.get_status_display() if publication else "—"


@admin.register(PolicyDocument)
class PolicyDocumentAdmin(admin.ModelAdmin):
    form = PolicyDocumentForm
    list_display = ("title", "kind", "latest_version", "owner", "tg_document_id", "updated_at")
    list_filter = ("kind", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("title", "=tg_document_id")
    list_per_page = 100
    inlines = (DocumentVersionListInline, DocumentVersionUploadInline)
    readonly_fields = ("tg_document_id", "tg_url")
    fieldsets = (
        (None, {"fields": ("kind", "title", "description", "owner")}),
        (
            "Reminders to contacts who have not confirmed receipt",
            {
                "fields": (
                    "remind_after_days",
                    "max_reminders",
                    "reminder_tag",
                    ("reminder_journey_id", "reminder_step_id"),
                )
            },
        ),
        ("Trading Grid", {"fields": ("tg_document_id", "tg_url")}),
    )

    def get_queryset(self, request):
        return document_selectors.documents_for_list(super().get_queryset(request))

    @admin.display(description="latest approved version", ordering="latest_version")
    def latest_version(self, document):
        return document.latest_version or "—"

    def has_delete_permission(self, request, obj=None):
        return False  # versions, confirmations and reminders stay traceable

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except (services.TransitionError, ValidationError) as exc:
            self.message_user(request, _message(exc), messages.ERROR)
            return HttpResponseRedirect(request.path)

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in documents.DOCUMENT_SETTINGS if name in form.cleaned_data}
        if change:
            documents.document_update(document_id=obj.pk, actor=request.user, changes=data)
        else:
            kind, title = data.pop("kind"), data.pop("title")
            saved = documents.document_create(actor=request.user, kind=kind, title=title, **data)
            obj.pk = obj.id = saved.pk
            obj._state.adding = False

    def save_formset(self, request, form, formset, change):
        if formset.model is not DocumentVersion:
            return super().save_formset(request, form, formset, change)
        # Versions are uploaded through the service; existing ones are read-only here.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for inline_form in formset.forms:
            if not inline_form.has_changed() or not inline_form.cleaned_data.get("file"):
                continue
            version = documents.document_version_upload(
                document_id=form.instance.pk,
                actor=request.user,
                upload=inline_form.cleaned_data["file"],
                version=inline_form.cleaned_data["version"],
                change_summary=inline_form.cleaned_data["change_summary"],
            )
            formset.new_objects.append(version)
            self.message_user(
                request, f"Version {version.version} uploaded as a draft: open it to submit it for approval."
            )


class WaitingForMyDocumentApproval(admin.SimpleListFilter):
    title = "approval"
    parameter_name = "waiting_for"

    def lookups(self, request, model_admin):
        can_approve = document_selectors.user_can_approve_documents(request.user)
        return (("me", "Waiting for my approval"),) if can_approve else ()

    def queryset(self, request, queryset):
        if self.value() == "me":
            return queryset.filter(status=V.SUBMITTED).exclude(submitted_by_id=request.user.pk)
        return queryset


class ReplaceFileForm(forms.Form):
    file = forms.FileField(help_text="PDF, Word (.docx) or Excel (.xlsx).")
    change_summary = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_file(self):
        upload = self.cleaned_data["file"]
        check_upload(upload)
        return upload


class DistributionForm(forms.Form):
    audience = forms.ModelChoiceField(queryset=None)
    segments = forms.ModelMultipleChoiceField(
        queryset=Segment.objects.select_related("audience"),
        widget=admin.widgets.FilteredSelectMultiple("segments", is_stacked=False),
    )
    subject = forms.CharField(max_length=150)
    preview_text = forms.CharField(max_length=150, required=False)
    from_name = forms.CharField(max_length=100)
    reply_to = forms.EmailField()
    html_body = forms.CharField(widget=HtmlWithLivePreview, help_text="Keep the link: it carries each reader's key.")

    def __init__(self, *args, **kwargs):
        from partners.models import MailchimpAudience

        super().__init__(*args, **kwargs)
        self.fields["audience"].queryset = MailchimpAudience.objects.all()


@admin.register(DocumentVersion)
class DocumentVersionAdmin(admin.ModelAdmin):
    list_display = (
        "document",
        "version",
        "status",
        "file_name",
        "size_shown",
        "submitted_by",
        "approved_by",
        "publication_status",
        "coverage_link",
    )
    list_filter = (WaitingForMyDocumentApproval, "status", "document__kind")
    search_fields = ("document__title", "version", "file_name", "=sha256")
    list_per_page = 100
    actions = ("submit_selected", "approve_selected")
    change_form_template = "admin/campaigns/documentversion/change_form.html"
    fields = (
        "document",
        "version",
        "change_summary",
        "file_name",
        "file_type",
        "size",
        "sha256",
        "status",
        "created_by",
        "submitted_by",
        "submitted_at",
        "approved_by",
        "approved_at",
        "superseded_by",
        "superseded_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return document_selectors.versions_for_list(super().get_queryset(request))

    def has_add_permission(self, request):
        return False  # uploaded on the document's page

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="size", ordering="size")
    def size_shown(self, version):
        return human_size(version.size)

    @admin.display(description="Trading Grid")
    def publication_status(self, version):
        publication = getattr(version, "publication", None)
        return publication.get_status_display() if publication else "—"

    @admin.display(description="coverage")
    def coverage_link(self, version):
        if version.status not in (V.APPROVED, V.SUPERSEDED):
            return "—"
        url = reverse("admin:campaigns_documentversion_coverage", args=[version.pk])
        return format_html('<a href="{}">coverage</a>', url)

    # -- bulk actions ------------------------------------------------------------------------------------
    def _each(self, request, queryset, service, done: str):
        ok = 0
        for version in queryset:
            try:
                service(version_id=version.pk, actor=request.user)
            except (services.TransitionError, ValidationError) as exc:
                self.message_user(request, _message(exc), messages.ERROR)
            else:
                ok += 1
        if ok:
            self.message_user(request, f"{ok} version(s) {done}.", messages.SUCCESS)

    @admin.action(description="Submit selected versions for approval")
    def submit_selected(self, request, queryset):
        self._each(request, queryset, documents.document_version_submit, "submitted")

    @admin.action(description="Approve selected versions (publishes them to Trading Grid)")
    def approve_selected(self, request, queryset):
        self._each(request, queryset, documents.document_version_approve, "approved")

    # -- the change page -------------------------------------------------------------------------------
    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = self.get_object(request, object_id)
        if version is not None:
            extra_context = {**(extra_context or {}), **self._page_context(request, version)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _page_context(self, request, version):
        user = request.user
        can_change = document_selectors.user_can_change_documents(user)
        can_approve = document_selectors.user_can_approve_documents(user)
        is_submitter = version.submitted_by_id == user.pk
        actions = []
        if can_change and version.status == V.DRAFT:
            actions.append(("submit", "Submit for approval", False))
        if version.status == V.SUBMITTED and can_approve and not is_submitter:
            actions.append(("approve", "Approve and publish to Trading Grid", False))
            actions.append(("request_changes", "Request changes", True))
        publication = DocumentPublication.objects.filter(version=version).first()
        if publication and publication.status == PublicationStatus.FAILED and can_approve:
            actions.append(("retry_publication", "Retry the publication", False))
        waiting_note = ""
        if version.status == V.SUBMITTED and is_submitter:
            waiting_note = "You submitted it: another approver has to approve it (four-eyes rule)."
        elif version.status == V.SUBMITTED and not can_approve:
            waiting_note = "Waiting for a member of “Approvers”."
        reminder_counts = {
            (kind, status): count
            for kind, status, count in DocumentReminder.objects.filter(version=version)
            .values_list("kind", "status")
            .annotate(count=Count("pk"))
            .values_list("kind", "status", "count")
        }
        return {
            "version": version,
            "publication": publication,
            "actions": actions,
            "waiting_note": waiting_note,
            "can_replace": can_change and version.status in (V.DRAFT, V.SUBMITTED, V.CHANGES_REQUESTED),
            "replace_form": ReplaceFileForm(),
            "can_distribute": version.status == V.APPROVED and user.has_perm("campaigns.add_communication"),
            "distributions": version.distributions.select_related("communication"),
            "reminder_counts": sorted(reminder_counts.items()),
            "history": _history(version),
            "size_shown": human_size(version.size),
        }

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:object_id>/download/", wrap(self.download_view), name="campaigns_documentversion_download"),
            path("<int:object_id>/coverage/", wrap(self.coverage_view), name="campaigns_documentversion_coverage"),
            path(
                "<int:object_id>/distribute/", wrap(self.distribute_view), name="campaigns_documentversion_distribute"
            ),
            path("<int:object_id>/do/<str:action>/", wrap(self.action_view), name="campaigns_documentversion_action"),
            *super().get_urls(),
        ]

    def _version_or_404(self, request, object_id):
        version = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_view_permission(request, version):
            raise PermissionDenied
        return version

    def download_view(self, request, object_id):
        """The stored file, for logged-in staff who may see document versions (admin_view checks staff)."""
        version = self._version_or_404(request, object_id)
        response = FileResponse(
            version.file.open("rb"),
            as_attachment=True,
            filename=version.file_name,
            content_type=FILE_TYPES[version.file_type][1],
        )
        response["Cache-Control"] = "private, no-store"
        response["X-Content-Type-Options"] = "nosniff"
        return response

    def coverage_view(self, request, object_id):
        version = self._version_or_404(request, object_id)
        coverage = document_selectors.version_coverage(version)
        if request.GET.get("format") == "csv":
            response = HttpResponse(document_selectors.coverage_csv(coverage), content_type="text/csv; charset=utf-8")
            name = f"coverage-{version.document_id}-{version.version}.csv".replace(" ", "_")
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            return response
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Coverage of {version}",
            "version": version,
            "coverage": coverage,
        }
        return render(request, "admin/campaigns/documentversion/coverage.html", context)

    def distribute_view(self, request, object_id):
        version = self._version_or_404(request, object_id)
        if not request.user.has_perm("campaigns.add_communication"):
            raise PermissionDenied
        audience = default_audience()
        initial = {
            "audience": audience,
            "subject": f"{version.document.title}: version {version.version}",
            "html_body": documents.distribution_default_html(version),
        }
        form = DistributionForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                distribution = documents.document_distribution_create(
                    version_id=version.pk, actor=request.user, **form.cleaned_data
                )
            except (services.TransitionError, ValidationError) as exc:
                self.message_user(request, _message(exc), messages.ERROR)
            else:
                self.message_user(
                    request,
                    "Distribution email created as a draft communication: submit it for approval there.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:campaigns_communication_change", args=[distribution.communication_id])
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Distribute {version}",
            "version": version,
            "form": form,
            "media": self.media + form.media,
        }
        return render(request, "admin/campaigns/documentversion/distribute.html", context)

    def action_view(self, request, object_id, action):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        version = self._version_or_404(request, object_id)
        comment = request.POST.get("comment", "")
        try:
            text = self._act(request, version, action, comment)
        except (services.TransitionError, ValidationError) as exc:
            self.message_user(request, _message(exc), messages.ERROR)
        else:
            self.message_user(request, text, messages.SUCCESS if text else messages.ERROR)
        return HttpResponseRedirect(reverse("admin:campaigns_documentversion_change", args=[version.pk]))

    def _act(self, request, version, action, comment) -> str:
        user = request.user
        if action == "submit":
            documents.document_version_submit(version_id=version.pk, actor=user, comment=comment)
            return "Submitted for approval."
        if action == "approve":
            documents.document_version_approve(version_id=version.pk, actor=user, comment=comment)
            return "Approved: it is the latest version and is being published to Trading Grid."
        if action == "request_changes":
            documents.document_version_request_changes(version_id=version.pk, actor=user, comment=comment)
            return "Sent back to its author with your comment."
        if action == "retry_publication":
            publication = DocumentPublication.objects.get(version=version)
            documents.document_publication_retry(publication_id=publication.pk, actor=user)
            return "The publication to Trading Grid is tried again."
        if action == "replace_file":
            form = ReplaceFileForm(request.POST, request.FILES)
            if not form.is_valid():
                raise ValidationError([message for errors in form.errors.values() for message in errors])
            documents.document_version_replace_file(
                version_id=version.pk,
                actor=user,
                upload=form.cleaned_data["file"],
                change_summary=form.cleaned_data["change_summary"],
            )
            return "File replaced; the version is a draft again."
        return f"Unknown action “{action}”."


def _history(obj):
    return (
        LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(type(obj)), object_id=str(obj.pk))
        .select_related("user")
        .order_by("action_time", "pk")
    )


class VersionListFilter(admin.SimpleListFilter):
    """The versions that have rows in this list, each named with its document, in one query."""

    title = "version"
    parameter_name = "version__id__exact"

    def lookups(self, request, model_admin):
        used = model_admin.model.objects.values("version_id")
        versions = DocumentVersion.objects.filter(pk__in=used).select_related("document").order_by("document__title")
        return [(str(version.pk), str(version)) for version in versions]

    def queryset(self, request, queryset):
        return queryset.filter(version_id=self.value()) if self.value() else queryset


class _ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DocumentPublication)
class DocumentPublicationAdmin(_ReadOnlyAdmin):
    """The publication ledger: one row per approved version, for operators."""

    list_display = ("version", "status", "tg_document_id", "attempts", "last_error", "queued_at", "published_at")
    list_filter = ("status",)
    list_select_related = ("version__document",)
    search_fields = ("=tg_document_id", "version__document__title")


@admin.register(DocumentReminder)
class DocumentReminderAdmin(_ReadOnlyAdmin):
    """The reminder ledger: one row per stage per recipient and version."""

    list_display = ("version", "email", "kind", "stage", "status", "due_at", "sent_at", "attempts", "reason")
    list_filter = ("status", "kind", VersionListFilter)
    list_select_related = ("version__document", "recipient")
    search_fields = ("recipient__email", "version__document__title")
    list_per_page = 200

    @admin.display(description="contact", ordering="recipient__email")
    def email(self, reminder):
        return reminder.recipient.email


@admin.register(DocumentAcknowledgement)
class DocumentAcknowledgementAdmin(_ReadOnlyAdmin):
    list_display = ("version", "email", "partner_company_id", "partner", "acknowledged_at", "source", "recorded_at")
    list_filter = ("source", VersionListFilter)
    list_select_related = ("version__document", "partner")
    search_fields = ("email", "=partner_company_id")
    exclude = ("raw",)

