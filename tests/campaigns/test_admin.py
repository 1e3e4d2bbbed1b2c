"""The communications admin: list and filters at a constant query count, "waiting for my approval", the
change page an approver decides on (recipients per segment, Mailchimp's checklist, the rendered HTML),
the transition buttons with their refusals, test emails, and editing through the services."""

import datetime as dt
import re

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from campaigns import services
from campaigns.models import CampaignSend, Communication, CommunicationState, SendStatus
from tests.conftest import MAILCHIMP_TEST_AUDIENCE

from .conftest import make_user, new_communication, sync_audience

pytestmark = pytest.mark.django_db
S = CommunicationState
LIST_URL = "admin:campaigns_communication_changelist"


def change_url(communication) -> str:
    return reverse("admin:campaigns_communication_change", args=[communication.pk])


def action_url(communication, action: str) -> str:
    return reverse("admin:campaigns_communication_action", args=[communication.pk, action])


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def reload(communication) -> Communication:
    return Communication.objects.get(pk=communication.pk)


def form_data(communication, **overrides) -> dict:
    data = {
        "kind": communication.kind,
        "audience": communication.audience_id,
        "segments": [s.pk for s in communication.segments.all()],
        "subject": communication.subject,
        "preview_text": communication.preview_text,
        "from_name": communication.from_name,
        "reply_to": communication.reply_to,
        "html_body": communication.html_body,
        "template_id": communication.template_id or "",
        "template_sections": "{}",
        "schedule_time_0": "",
        "schedule_time_1": "",
    }
    data.update(overrides)
    return data


# --- the list ----------------------------------------------------------------------------------------------


def _many(count, author, approver, audience, segments):
    for index in range(count):
        communication = new_communication(author, audience, segments, subject=f"Bulletin {index}")
        if index % 2:
            services.communication_submit(communication_id=communication.pk, actor=author)
        if index % 4 == 1:
            services.communication_approve(communication_id=communication.pk, actor=approver)


@pytest.mark.parametrize("query", ["", "?waiting_for=me", "?state=submitted&kind=policy_update", "?q=Bulletin"])
def test_the_list_keeps_a_constant_query_count(
    client, author, approver, audience, suppliers, carriers, query, django_assert_max_num_queries
):
    client.force_login(approver)
    _many(3, author, approver, audience, [suppliers, carriers])
    with django_assert_max_num_queries(30) as few:
        assert client.get(reverse(LIST_URL) + query).status_code == 200

    _many(60, author, approver, audience, [suppliers, carriers])
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(reverse(LIST_URL) + query)
    assert response.status_code == 200


def test_the_ledger_list_keeps_a_constant_query_count(
    client, administrator, author, approver, audience, suppliers, django_assert_max_num_queries
):
    client.force_login(administrator)
    _many(4, author, approver, audience, [suppliers])
    with django_assert_max_num_queries(30) as few:
        assert client.get(reverse("admin:campaigns_campaignsend_changelist")).status_code == 200
    _many(40, author, approver, audience, [suppliers])
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(reverse("admin:campaigns_campaignsend_changelist")).status_code == 200


def test_the_list_filters_by_kind_state_author_approver_and_date(client, author, approver, audience, suppliers):
    client.force_login(approver)
    _many(4, author, approver, audience, [suppliers])
    response = client.get(reverse(LIST_URL))
    html = response.content.decode()
    for title in ("By approval", "By kind", "By state", "By created by", "By approved by", "By created at"):
        assert title in html
    approved = client.get(reverse(LIST_URL), {"approved_by__id__exact": approver.pk})
    assert approved.context["cl"].result_count == 1
    assert client.get(reverse(LIST_URL), {"state": "submitted"}).context["cl"].result_count == 1


def test_waiting_for_my_approval_lists_submitted_ones_others_submitted(
    client, author, approver, second_approver, audience, suppliers
):
    mine = new_communication(approver, audience, [suppliers], subject="Mine")
    services.communication_submit(communication_id=mine.pk, actor=approver)
    theirs = new_communication(author, audience, [suppliers], subject="Theirs")
    services.communication_submit(communication_id=theirs.pk, actor=author)
    new_communication(author, audience, [suppliers], subject="Still a draft")
    client.force_login(approver)

    response = client.get(reverse("admin:campaigns_communication_waiting"), follow=True)

    assert [c.subject for c in response.context["cl"].result_list] == ["Theirs"]
    assert "Waiting for my approval (1)" in response.content.decode()
    client.force_login(second_approver)
    response = client.get(reverse(LIST_URL), {"waiting_for": "me"})
    assert sorted(c.subject for c in response.context["cl"].result_list) == ["Mine", "Theirs"]


def test_partner_managers_see_no_approval_link(client, author, audience, suppliers):
    client.force_login(author)
    response = client.get(reverse(LIST_URL))
    assert response.status_code == 200
    assert "Waiting for my approval" not in response.content.decode()


# --- add and edit through the services ------------------------------------------------------------------


def test_adding_creates_a_draft_by_the_author_with_a_live_preview(client, author, audience, suppliers):
    client.force_login(author)
    page = client.get(reverse("admin:campaigns_communication_add"))
    html = page.content.decode()
    assert 'data-live-preview="1"' in html
    assert '<iframe sandbox="" title="Live preview of the HTML body"' in html
    assert "campaigns/live-preview.js" in html

    response = client.post(
        reverse("admin:campaigns_communication_add"),
        {
            "kind": "newsletter",
            "audience": audience.pk,
            "segments": [suppliers.pk],
            "subject": "Q3 partner news",
            "preview_text": "",
            "from_name": "Partner team",
            "reply_to": "partners@example.com",
            "html_body": "<p>Hello</p>",
            "template_id": "",
            "template_sections": "",
            "schedule_time_0": "2031-03-02",
            "schedule_time_1": "09:07:00",
        },
        follow=True,
    )

    communication = Communication.objects.get()
    assert (communication.state, communication.created_by, communication.template_sections) == (S.DRAFT, author, {})
    assert list(communication.segments.all()) == [suppliers]
    assert any("becomes 2031-03-02 09:15 UTC" in m for m in messages_of(response))


def test_the_form_refuses_html_and_template_together(client, author, audience, suppliers):
    client.force_login(author)
    draft = new_communication(author, audience, [suppliers])
    response = client.post(change_url(draft), form_data(draft, template_id="7001"))
    assert response.status_code == 200
    assert "not both" in response.content.decode()
    assert reload(draft).template_id is None


def test_editing_an_approved_one_in_the_admin_sends_it_back_to_draft(client, author, approver, audience, suppliers):
    draft = new_communication(author, audience, [suppliers])
    services.communication_submit(communication_id=draft.pk, actor=author)
    services.communication_approve(communication_id=draft.pk, actor=approver)
    client.force_login(author)

    client.post(change_url(draft), form_data(draft, subject="New trading terms (v2)"))

    edited = reload(draft)
    assert (edited.state, edited.subject) == (S.DRAFT, "New trading terms (v2)")
    assert CampaignSend.objects.get(communication=draft).status == SendStatus.IDLE


def test_a_communication_in_mailchimps_hands_is_read_only_and_never_deleted(
    client, administrator, author, approver, audience, suppliers
):
    draft = new_communication(author, audience, [suppliers])
    Communication.objects.filter(pk=draft.pk).update(state=S.SENT)
    client.force_login(administrator)

    page = client.get(change_url(draft))
    assert 'name="subject"' not in page.content.decode()
    client.post(change_url(draft), form_data(draft, subject="Changed"))
    assert reload(draft).subject == "New trading terms"
    assert client.get(reverse("admin:campaigns_communication_delete", args=[draft.pk])).status_code == 403


# --- the change page: what an approver decides on ---------------------------------------------------------


@pytest.fixture
def ready_to_approve(
    mailchimp_emulator, mailchimp_contract, eager_tasks, author, audience, suppliers, carriers, partners,
    django_capture_on_commit_callbacks
):
    sync_audience(audience)
    communication = new_communication(author, audience, [suppliers, carriers])
    with django_capture_on_commit_callbacks(execute=True):
        services.communication_submit(communication_id=communication.pk, actor=author)
    return communication


def test_the_change_page_shows_recipients_checklist_and_rendering(
    client, approver, ready_to_approve, mailchimp_emulator, partners
):
    acme, dairy, swift = partners
    # A contact added since the last sync: Partnerlink counts it, Mailchimp doesn't yet.
    acme.contacts.create(email="new@acme.example")
    client.force_login(approver)

    html = client.get(change_url(ready_to_approve)).content.decode()

    rows = re.findall(r"<tr class=\"(mismatch)?\">\s*<td>(\w+)</td>\s*<td>(\d+)</td>\s*<td>(\S+)</td>", html)
    assert rows == [("", "Carriers", "2", "2"), ("mismatch", "Suppliers", "3", "2")]
    assert "mismatch: sync the segment before approving" in html
    assert "<strong>3</strong> subscribed recipients" in html
    assert "Ready to send." in html
    assert "<strong>Reply-to address</strong>" in html
    assert "As Mailchimp renders it" in html
    assert '<iframe sandbox="" title="Rendered email" srcdoc="&lt;h1&gt;New terms&lt;/h1&gt;' in html
    assert 'value="Approve"' in html
    assert 'value="Request changes"' in html


def test_a_segment_never_synced_is_flagged(client, approver, author, audience, suppliers):
    communication = new_communication(author, audience, [suppliers])
    client.force_login(approver)
    html = client.get(change_url(communication)).content.decode()
    assert "never synced: the send starts a sync and waits for it" in html
    assert "its checklist appears here then" in html


def test_the_submitter_sees_no_approve_button_and_is_refused_by_the_action(client, approver, audience, suppliers):
    communication = new_communication(approver, audience, [suppliers])
    services.communication_submit(communication_id=communication.pk, actor=approver)
    client.force_login(approver)

    html = client.get(change_url(communication)).content.decode()
    assert 'value="Approve"' not in html
    assert "another approver has to approve it (four-eyes rule)" in html

    response = client.post(action_url(communication, "approve"), follow=True)
    assert any("four-eyes" in m for m in messages_of(response))
    assert reload(communication).state == S.SUBMITTED


def test_a_partner_manager_cannot_approve_through_the_action(client, author, submitted):
    client.force_login(make_user("Partner managers"))
    response = client.post(action_url(submitted, "approve"), follow=True)
    assert any("Only members of “Approvers”" in m for m in messages_of(response))
    assert reload(submitted).state == S.SUBMITTED


def test_request_changes_without_a_comment_is_refused(client, approver, submitted):
    client.force_login(approver)
    response = client.post(action_url(submitted, "request_changes"), {"comment": ""}, follow=True)
    assert any("a comment is required" in m for m in messages_of(response))
    client.post(action_url(submitted, "request_changes"), {"comment": "Add the PDF link"})
    assert reload(submitted).state == S.CHANGES_REQUESTED


def test_actions_only_answer_post(client, approver, submitted):
    client.force_login(approver)
    assert client.get(action_url(submitted, "approve")).status_code == 405


def test_approving_in_the_admin_sends_it_and_shows_the_history(
    client, approver, ready_to_approve, mailchimp_emulator, django_capture_on_commit_callbacks
):
    client.force_login(approver)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(action_url(ready_to_approve, "approve"), {"comment": "Looks right"}, follow=True)

    assert any(m.startswith("Approved. Mailchimp sends it as soon as") for m in messages_of(response))
    assert reload(ready_to_approve).state == S.SENT
    assert len(mailchimp_emulator.state.campaigns) == 1
    html = client.get(change_url(ready_to_approve)).content.decode()  # the task ran when the request committed
    assert re.search(r"<td>Submitted for approval</td><td>Approved</td><td>olivia</td><td>Looks right</td>", html)
    assert re.search(r"<td>Approved</td><td>Sent</td><td>Partnerlink</td><td>Mailchimp campaign \w+ sent.</td>", html)


def test_approving_a_scheduled_one_says_which_quarter_hour_slot_it_got(
    client, author, approver, ready_to_approve, mailchimp_emulator, django_capture_on_commit_callbacks
):
    asked = (timezone.now() + dt.timedelta(days=3)).replace(hour=14, minute=7, second=0, microsecond=0)
    Communication.objects.filter(pk=ready_to_approve.pk).update(schedule_time=asked)
    client.force_login(approver)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(action_url(ready_to_approve, "approve"), follow=True)

    slot = asked.replace(minute=15)
    day = slot.strftime("%Y-%m-%d")
    assert f"Approved. Mailchimp will send it at {day} 14:15 UTC: the schedule time {day} 14:07 UTC rounded up" in (
        " ".join(messages_of(response))
    )
    communication = reload(ready_to_approve)
    assert (communication.state, communication.scheduled_for) == (S.SCHEDULED, slot)
    assert f"Scheduled in Mailchimp for {day} 14:15 UTC" in client.get(change_url(ready_to_approve)).content.decode()
    [campaign] = mailchimp_emulator.state.campaigns.values()
    assert campaign.schedule_time == slot


def test_send_test_to_me_goes_through_mailchimps_test_endpoint(
    client, approver, ready_to_approve, mailchimp_emulator, django_capture_on_commit_callbacks
):
    client.force_login(approver)
    assert 'value="Send test to me (olivia@partnerlink.example)"' in client.get(change_url(ready_to_approve)).content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(action_url(ready_to_approve, "test_email"), follow=True)

    assert any("A test email to olivia@partnerlink.example is on its way" in m for m in messages_of(response))
    campaign_id = reload(ready_to_approve).mailchimp_campaign_id
    assert [s["emails"] for s in mailchimp_emulator.test_sends(campaign_id=campaign_id)] == [
        ["olivia@partnerlink.example"]
    ]
    page = client.get(change_url(ready_to_approve)).content.decode()
    assert re.search(r"<td>olivia@partnerlink.example</td><td>Sent</td>", page)
    assert reload(ready_to_approve).state == S.SUBMITTED  # a test changes nothing


def test_a_failed_send_shows_mailchimps_reason_and_offers_a_retry(
    client, author, approver, second_approver, ready_to_approve, django_capture_on_commit_callbacks
):
    Communication.objects.filter(pk=ready_to_approve.pk).update(reply_to="partners at example")
    with django_capture_on_commit_callbacks(execute=True):
        services.communication_approve(communication_id=ready_to_approve.pk, actor=approver)
    Communication.objects.filter(pk=ready_to_approve.pk).update(submitted_by=author)
    client.force_login(second_approver)

    html = client.get(change_url(ready_to_approve)).content.decode()

    assert 'id="failure-reason"' in html
    assert "settings.reply_to: This value should be a valid email." in html
    assert 'value="Retry the send"' in html


def test_cancel_from_the_admin(client, author, submitted):
    client.force_login(author)
    response = client.post(action_url(submitted, "cancel"), {"comment": "Duplicate"}, follow=True)
    assert "Cancelled." in messages_of(response)
    assert reload(submitted).state == S.CANCELLED


def test_refresh_pushes_the_draft_again(
    client, author, ready_to_approve, mailchimp_emulator, django_capture_on_commit_callbacks
):
    Communication.objects.filter(pk=ready_to_approve.pk).update(html_body="<p>v2</p>")
    client.force_login(author)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(action_url(ready_to_approve, "refresh"))
    [campaign] = mailchimp_emulator.state.campaigns.values()
    assert campaign.html == "<p>v2</p>"
    assert MAILCHIMP_TEST_AUDIENCE == campaign.list_id
