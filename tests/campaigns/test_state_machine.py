"""The communication state machine: every transition, who may take it, and the refusals."""

import datetime as dt
import itertools

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaigns import services
from campaigns.models import (
    CampaignSend,
    Communication,
    CommunicationState,
    CommunicationTransition,
    SendStatus,
)
from partners.models import MailchimpAudience, Segment

from .conftest import make_user, new_communication

pytestmark = pytest.mark.django_db
S = CommunicationState


def states(communication) -> list[tuple[str, str]]:
    return list(communication.transitions.values_list("from_state", "to_state"))


def put_in_state(communication, state) -> Communication:
    """A communication in any state, for the transition table (the services' own paths are tested below)."""
    Communication.objects.filter(pk=communication.pk).update(state=state)
    return Communication.objects.get(pk=communication.pk)


# --- the table ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("from_state,to_state", list(itertools.product(S.values, S.values)))
def test_the_transition_table_allows_exactly_the_listed_steps(draft, from_state, to_state):
    communication = put_in_state(draft, from_state)
    if to_state in services.ALLOWED_TRANSITIONS[from_state]:
        step = services._transition(communication, to_state, actor=None, comment="table")
        assert (step.from_state, step.to_state) == (from_state, to_state)
        assert Communication.objects.get(pk=draft.pk).state == to_state
    else:
        with pytest.raises(services.TransitionError) as refused:
            services._transition(communication, to_state, actor=None)
        assert draft.subject in str(refused.value)
        assert Communication.objects.get(pk=draft.pk).state == from_state


def test_the_table_has_the_documented_shape():
    allowed = {(a, b) for a, targets in services.ALLOWED_TRANSITIONS.items() for b in targets}
    assert {
        (S.DRAFT, S.SUBMITTED),
        (S.SUBMITTED, S.APPROVED),
        (S.SUBMITTED, S.CHANGES_REQUESTED),
        (S.CHANGES_REQUESTED, S.DRAFT),
        (S.APPROVED, S.SCHEDULED),
        (S.APPROVED, S.SENDING),
        (S.SCHEDULED, S.SENDING),
        (S.SENDING, S.SENT),
        (S.SENDING, S.FAILED),
        (S.FAILED, S.APPROVED),
    } <= allowed
    non_terminal = set(S.values) - {S.SENT, S.CANCELLED, S.SENDING}
    assert {(state, S.CANCELLED) for state in non_terminal} <= allowed
    assert not services.ALLOWED_TRANSITIONS[S.SENT] and not services.ALLOWED_TRANSITIONS[S.CANCELLED]
    assert (S.SENDING, S.CANCELLED) not in allowed  # Mailchimp can't stop a send in progress


# --- create, submit --------------------------------------------------------------------------------------


def test_create_records_the_author_and_a_first_history_line(draft, author):
    assert (draft.state, draft.created_by) == (S.DRAFT, author)
    step = draft.transitions.get()
    assert (step.from_state, step.to_state, step.actor, step.comment) == ("", S.DRAFT, author, "Created.")


def test_create_refuses_segments_of_another_audience_and_both_html_and_template(author, audience, suppliers):
    other = MailchimpAudience.objects.create(name="Internal", list_id="int0aud1e")
    foreign = Segment.objects.create(name="Staff", audience=other)
    with pytest.raises(ValidationError, match="Not segments of"):
        new_communication(author, audience, [suppliers, foreign])
    with pytest.raises(ValidationError, match="not both"):
        new_communication(author, audience, [suppliers], template_id=42)
    assert not Communication.objects.exists()


def test_someone_without_the_change_permission_cannot_create(audience, suppliers):
    outsider = make_user()
    with pytest.raises(services.PermissionRefused):
        new_communication(outsider, audience, [suppliers])


def test_submit_names_everything_missing(author, audience):
    empty = new_communication(author, audience, [], html_body="", from_name=" ")

    with pytest.raises(services.TransitionError) as refused:
        services.communication_submit(communication_id=empty.pk, actor=author)

    message = str(refused.value)
    assert "from name is empty" in message
    assert "there is no content" in message
    assert "no segment is chosen" in message
    assert Communication.objects.get(pk=empty.pk).state == S.DRAFT


def test_submit_moves_a_draft_to_submitted_and_prepares_the_ledger_row(draft, author):
    submitted = services.communication_submit(communication_id=draft.pk, actor=author, comment="Please check")

    assert (submitted.state, submitted.submitted_by) == (S.SUBMITTED, author)
    assert states(submitted)[-1] == (S.DRAFT, S.SUBMITTED)
    assert submitted.transitions.last().comment == "Please check"
    assert CampaignSend.objects.get(communication=submitted).status == SendStatus.IDLE


def test_submit_twice_is_refused(submitted, author):
    with pytest.raises(services.TransitionError, match="can't be submitted"):
        services.communication_submit(communication_id=submitted.pk, actor=author)


# --- approve: four eyes and permission ------------------------------------------------------------------


def test_the_submitter_cannot_approve_even_as_an_approver(draft, approver):
    services.communication_submit(communication_id=draft.pk, actor=approver)

    with pytest.raises(services.PermissionRefused, match="four-eyes"):
        services.communication_approve(communication_id=draft.pk, actor=approver)
    assert Communication.objects.get(pk=draft.pk).state == S.SUBMITTED


def test_approval_needs_the_approvers_permission(submitted, author):
    other_manager = make_user("Partner managers")
    for person in (other_manager, author):
        with pytest.raises(services.PermissionRefused):
            services.communication_approve(communication_id=submitted.pk, actor=person)
    assert Communication.objects.get(pk=submitted.pk).state == S.SUBMITTED


def test_a_draft_cannot_be_approved_before_it_is_submitted(draft, approver):
    with pytest.raises(services.TransitionError, match="can't be approved before it is submitted"):
        services.communication_approve(communication_id=draft.pk, actor=approver)


def test_approval_by_another_approver_approves_and_queues_the_send(submitted, approver):
    approved = services.communication_approve(communication_id=submitted.pk, actor=approver, comment="Fine")

    assert (approved.state, approved.approved_by) == (S.APPROVED, approver)
    assert approved.approved_at is not None
    assert states(approved)[-1] == (S.SUBMITTED, S.APPROVED)
    send = CampaignSend.objects.get(communication=approved)
    assert send.status == SendStatus.PENDING
    assert send.queued_at is not None


def test_administrators_may_approve_too(submitted, administrator):
    assert services.communication_approve(communication_id=submitted.pk, actor=administrator).state == S.APPROVED


def test_nothing_is_sent_without_approval(submitted, draft):
    # The send task finds no pending send: it does nothing (and makes no Mailchimp call: no client needed).
    send = CampaignSend.objects.get(communication=submitted)
    result = services.communication_send_execute(send_id=send.pk, client=object())
    assert result.status == SendStatus.IDLE
    assert Communication.objects.get(pk=submitted.pk).state == S.SUBMITTED
    # And the machine itself refuses to move an unapproved communication to sending.
    with pytest.raises(services.TransitionError, match="before an approver approves it"):
        services._transition(Communication.objects.get(pk=submitted.pk), S.SENDING, actor=None)


def test_a_pending_send_whose_communication_is_no_longer_approved_does_nothing(approved, author):
    services.communication_cancel(communication_id=approved.pk, actor=author)
    send = CampaignSend.objects.get(communication=approved)
    CampaignSend.objects.filter(pk=send.pk).update(status=SendStatus.PENDING)  # a stale message, say

    assert services.communication_send_execute(send_id=send.pk, client=object()).status == SendStatus.PENDING
    assert Communication.objects.get(pk=approved.pk).state == S.CANCELLED


# --- request changes, edit ---------------------------------------------------------------------------------


def test_request_changes_needs_a_comment_and_another_approver(submitted, approver, author):
    with pytest.raises(services.TransitionError, match="comment is required"):
        services.communication_request_changes(communication_id=submitted.pk, actor=approver, comment=" ")
    with pytest.raises(services.PermissionRefused):
        services.communication_request_changes(communication_id=submitted.pk, actor=author, comment="Shorter")

    back = services.communication_request_changes(
        communication_id=submitted.pk, actor=approver, comment="Link the PDF"
    )

    assert back.state == S.CHANGES_REQUESTED
    assert back.transitions.last().comment == "Link the PDF"


def test_the_submitter_cannot_request_changes_either(draft, approver):
    services.communication_submit(communication_id=draft.pk, actor=approver)
    with pytest.raises(services.PermissionRefused, match="four-eyes"):
        services.communication_request_changes(communication_id=draft.pk, actor=approver, comment="x")


def test_changes_requested_goes_back_to_draft_by_editing_then_is_submitted_again(submitted, approver, author):
    services.communication_request_changes(communication_id=submitted.pk, actor=approver, comment="Shorter subject")
    with pytest.raises(services.TransitionError, match="edit it first"):
        services.communication_submit(communication_id=submitted.pk, actor=author)

    edited = services.communication_update(
        communication_id=submitted.pk, actor=author, changes={"subject": "New terms"}
    )
    assert edited.state == S.DRAFT
    again = services.communication_submit(communication_id=submitted.pk, actor=author)

    assert again.state == S.SUBMITTED
    assert states(again) == [
        ("", S.DRAFT),
        (S.DRAFT, S.SUBMITTED),
        (S.SUBMITTED, S.CHANGES_REQUESTED),
        (S.CHANGES_REQUESTED, S.DRAFT),
        (S.DRAFT, S.SUBMITTED),
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Changed"},
        {"preview_text": "Changed"},
        {"html_body": "<p>Changed</p>"},
        {"from_name": "Someone else"},
        {"reply_to": "other@example.com"},
        {"html_body": "", "template_id": 7001, "template_sections": {"body": "x"}},
        {"schedule_time": dt.datetime(2031, 1, 1, 9, 0, tzinfo=dt.UTC)},
    ],
)
def test_editing_content_after_approval_sends_it_back_to_draft(approved, author, changes):
    edited = services.communication_update(communication_id=approved.pk, actor=author, changes=changes)

    assert edited.state == S.DRAFT
    assert edited.approved_by is None
    step = edited.transitions.last()
    assert (step.from_state, step.to_state, step.actor) == (S.APPROVED, S.DRAFT, author)
    assert "approval withdrawn" in step.comment
    assert CampaignSend.objects.get(communication=approved).status == SendStatus.IDLE


def test_changing_the_segments_or_audience_also_withdraws_it(approved, author, carriers, audience):
    edited = services.communication_update(
        communication_id=approved.pk, actor=author, changes={}, segments=[carriers]
    )
    assert edited.state == S.DRAFT
    assert "segments" in edited.transitions.last().comment
    assert list(edited.segments.all()) == [carriers]


def test_editing_while_submitted_withdraws_the_submission(submitted, author):
    edited = services.communication_update(communication_id=submitted.pk, actor=author, changes={"subject": "x"})
    assert edited.state == S.DRAFT
    assert "submission withdrawn" in edited.transitions.last().comment


def test_saving_without_changes_or_changing_only_the_kind_keeps_the_state(submitted, author):
    same = services.communication_update(
        communication_id=submitted.pk, actor=author, changes={"subject": submitted.subject}
    )
    assert same.state == S.SUBMITTED
    kind = services.communication_update(communication_id=submitted.pk, actor=author, changes={"kind": "newsletter"})
    assert (kind.state, kind.kind) == (S.SUBMITTED, "newsletter")


@pytest.mark.parametrize("state", [S.SCHEDULED, S.SENDING, S.SENT, S.CANCELLED])
def test_nothing_can_be_edited_once_mailchimp_has_it_or_it_is_cancelled(approved, author, state):
    put_in_state(approved, state)
    with pytest.raises(services.TransitionError):
        services.communication_update(communication_id=approved.pk, actor=author, changes={"subject": "Late"})
    assert Communication.objects.get(pk=approved.pk).subject == "New trading terms"


def test_the_audience_cannot_change_once_its_mailchimp_campaign_exists(submitted, author):
    CampaignSend.objects.filter(communication=submitted).update(mailchimp_campaign_id="abc123")
    other = MailchimpAudience.objects.create(name="Other", list_id="oth0aud1e")
    with pytest.raises(services.TransitionError, match="belongs to the audience"):
        services.communication_update(
            communication_id=submitted.pk, actor=author, changes={"audience": other}, segments=[]
        )


def test_edit_and_cancel_wait_while_a_worker_talks_to_mailchimp(approved, author):
    send = CampaignSend.objects.get(communication=approved)
    CampaignSend.objects.filter(pk=send.pk).update(
        lease_owner="worker-1", lease_expires_at=timezone.now() + dt.timedelta(minutes=5)
    )
    with pytest.raises(services.TransitionError, match="right now"):
        services.communication_update(communication_id=approved.pk, actor=author, changes={"subject": "x"})
    with pytest.raises(services.TransitionError, match="right now"):
        services.communication_cancel(communication_id=approved.pk, actor=author)
    with pytest.raises(services.CommunicationBusy):
        services.communication_send_execute(send_id=send.pk, client=object())


# --- cancel, fail, retry -------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.DRAFT, S.SUBMITTED, S.CHANGES_REQUESTED, S.APPROVED, S.FAILED])
def test_cancel_from_every_state_before_mailchimp_has_it(approved, author, state):
    put_in_state(approved, state)
    cancelled = services.communication_cancel(communication_id=approved.pk, actor=author, comment="Not needed")

    assert cancelled.state == S.CANCELLED
    assert cancelled.transitions.last().comment == "Not needed"
    assert CampaignSend.objects.get(communication=approved).status == SendStatus.CANCELLED


def test_cancelling_a_scheduled_one_asks_mailchimp_first(approved, author):
    put_in_state(approved, S.SCHEDULED)
    still = services.communication_cancel(communication_id=approved.pk, actor=author, comment="Wrong date")

    assert still.state == S.SCHEDULED  # until Mailchimp has unscheduled it (tests/campaigns/test_sending.py)
    send = CampaignSend.objects.get(communication=approved)
    assert (send.status, send.cancel_requested_by, send.cancel_comment) == (SendStatus.CANCELLING, author, "Wrong date")


@pytest.mark.parametrize("state", [S.SENDING, S.SENT, S.CANCELLED])
def test_cancel_is_refused_while_sending_and_after(approved, author, state):
    put_in_state(approved, state)
    with pytest.raises(services.TransitionError):
        services.communication_cancel(communication_id=approved.pk, actor=author)


def test_a_failed_send_is_retried_by_an_approver_who_did_not_submit(approved, approver, second_approver, author):
    put_in_state(approved, S.FAILED)
    Communication.objects.filter(pk=approved.pk).update(failure_reason="Mailchimp refused", submitted_by=approver)
    CampaignSend.objects.filter(communication=approved).update(status=SendStatus.FAILED)
    with pytest.raises(services.PermissionRefused):
        services.communication_retry(communication_id=approved.pk, actor=author)
    with pytest.raises(services.PermissionRefused, match="four-eyes"):
        services.communication_retry(communication_id=approved.pk, actor=approver)

    retried = services.communication_retry(communication_id=approved.pk, actor=second_approver)

    assert (retried.state, retried.approved_by, retried.failure_reason) == (S.APPROVED, second_approver, "")
    assert CampaignSend.objects.get(communication=approved).status == SendStatus.PENDING
    assert states(retried)[-1] == (S.FAILED, S.APPROVED)


def test_a_failed_send_is_retried_not_approved_again(approved, second_approver):
    put_in_state(approved, S.FAILED)
    with pytest.raises(services.TransitionError, match="Retry the send"):
        services.communication_approve(communication_id=approved.pk, actor=second_approver)


def test_test_emails_need_an_address_and_someone_who_may_see_communications(draft, author):
    with pytest.raises(services.PermissionRefused):
        services.communication_test_email_request(communication_id=draft.pk, actor=make_user(email="x@example.com"))
    author.email = ""
    author.save()
    with pytest.raises(services.TransitionError, match="no email address"):
        services.communication_test_email_request(communication_id=draft.pk, actor=author)


def test_only_a_failed_send_can_be_retried(submitted, approver):
    with pytest.raises(services.TransitionError, match="only a failed send"):
        services.communication_retry(communication_id=submitted.pk, actor=approver)


def test_a_failed_communication_can_be_edited_back_to_draft(approved, author):
    put_in_state(approved, S.FAILED)
    edited = services.communication_update(communication_id=approved.pk, actor=author, changes={"subject": "Fixed"})
    assert edited.state == S.DRAFT


def test_every_step_is_recorded_with_who_and_when(approved, author, approver):
    rows = list(CommunicationTransition.objects.filter(communication=approved).order_by("pk"))
    assert [(r.from_state, r.to_state, r.actor) for r in rows] == [
        ("", S.DRAFT, author),
        (S.DRAFT, S.SUBMITTED, author),
        (S.SUBMITTED, S.APPROVED, approver),
    ]
    assert all(r.created_at is not None for r in rows)
