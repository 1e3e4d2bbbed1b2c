# ruff: noqa: F811 - fixtures imported from documents_support are redefined as test arguments
"""The day of a partner manager, end to end, with both emulators: partners arrive from Trading Grid; a
communication is drafted, submitted, approved by a second person and sent in Mailchimp; Mailchimp's campaign
webhook arrives and the community post draft is created from the cleaned email; its approval publishes it in
Trading Grid once. Then a policy document version is approved (published in Trading Grid), distributed, confirmed
by some contacts in Trading Grid, and the reminder goes only to the others."""

import datetime as dt
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from campaigns import documents, posts, services
from campaigns.models import (
    CommunicationState,
    CommunityPost,
    DocumentRecipient,
    DocumentReminder,
    PostState,
)
from campaigns.tasks import community_post_publish_task
from partners.models import Segment, TradingPartner
from tests.campaigns.conftest import new_communication, sync_audience
from tests.campaigns.documents_support import approve_version, new_version, private_documents  # noqa: F401
from tests.campaigns.posts_support import campaign_webhook_form
from tests.conftest import MAILCHIMP_TEST_AUDIENCE
from tests.partners.conftest import acme

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("mailchimp_contract", "eager_tasks")]

ACME, DAIRY = "GC00804444LX", "GC00800002DE"
EMAIL = """<html><body>
<div class="preheader" style="display:none">Hidden preview text</div>
<p><a href="*|ARCHIVE|*">View this email in your browser</a></p>
<h1>New trading terms</h1>
<p>Dear *|FNAME|*, from 1 January our payment terms move to 45 days and late ASNs are charged back.</p>
<p>Read the new terms in the community and confirm that you received them.</p>
<p><a href="/community/documents/terms">Read the terms</a></p>
<img src="https://acme.us1.list-manage.com/track/open.php?u=1&id=2" width="1" height="1">
<div class="footer"><p>You are receiving this email because you trade with us.</p>
<p><a href="*|UNSUB|*">unsubscribe from this list</a> <a href="*|UPDATE_PROFILE|*">update preferences</a></p></div>
</body></html>"""


@pytest.fixture
def community(tg, mailchimp_emulator, audience, author, second_approver):
    """Two suppliers created in Trading Grid reach Partnerlink by webhook; their contacts are in Mailchimp."""
    tg.state.create_partner(
        acme(
            company_id=ACME,
            contacts=[
                {"email": "anna@acme.de", "first_name": "Anna", "role": "primary"},
                {"email": "omar@acme.de", "first_name": "Omar", "role": "logistics"},
            ],
        ),
        emit=True,
    )
    tg.state.create_partner(
        acme(
            company_id=DAIRY,
            name="Dairy Co",
            trading_addresses=["ZZ:DAIRYCO"],
            contacts=[{"email": "ops@dairy.de", "first_name": "Ola", "role": "primary"}],
        ),
        emit=True,
    )
    tg.deliver()
    TradingPartner.objects.filter(tg_company_id=ACME).update(partner_manager=author)
    TradingPartner.objects.filter(tg_company_id=DAIRY).update(partner_manager=second_approver)
    suppliers = Segment.objects.create(name="Suppliers", audience=audience, partner_types=["supplier"])
    assert sync_audience(audience).status == "succeeded"
    return suppliers


def test_communication_to_community_post_to_confirmed_document(
    tg, community, mailchimp_emulator, audience, author, approver, django_capture_on_commit_callbacks, client
):
    capture = django_capture_on_commit_callbacks
    suppliers = community

    # --- A communication: drafted, submitted, approved by a second person, sent in Mailchimp -----------------
    draft = new_communication(author, audience, [suppliers], subject="New trading terms", html_body=EMAIL)
    with capture(execute=True):
        services.communication_submit(communication_id=draft.pk, actor=author)
    with capture(execute=True):
        services.communication_approve(communication_id=draft.pk, actor=approver)
    draft.refresh_from_db()
    assert draft.state == CommunicationState.SENT, draft.failure_reason
    assert mailchimp_emulator.state.campaigns[draft.mailchimp_campaign_id].status == "sent"

    # --- Mailchimp's campaign webhook arrives; the post draft is made from the cleaned email ----------------
    with capture(execute=True):
        response = client.post(
            reverse("mailchimp-webhook", args=["test-mailchimp-secret-new"]),
            urlencode(campaign_webhook_form(draft.mailchimp_campaign_id, subject="New trading terms")),
            content_type="application/x-www-form-urlencoded",
        )
    assert response.status_code == 200
    post = CommunityPost.objects.get()  # the send and the webhook found the same campaign: one post
    assert post.state == PostState.DRAFT
    assert post.title == "New trading terms"
    assert "payment terms move to 45 days" in post.summary
    for gone in ("*|", "View this email", "unsubscribe", "update preferences", "track/open", "Hidden preview"):
        assert gone not in post.summary and gone not in post.body_html, gone
    assert 'href="https://' in post.body_html  # the relative link was made absolute

    # --- Four eyes on the post; approval publishes it in Trading Grid, once -----------------------------------
    posts.community_post_submit(post_id=post.pk, actor=author)
    with capture(execute=True):
        posts.community_post_approve(post_id=post.pk, actor=approver)
    community_post_publish_task(post.pk)  # the task delivered twice
    post.refresh_from_db()
    assert post.state == PostState.PUBLISHED
    tg_posts = list(tg.state.posts.values())
    assert len(tg_posts) == 1
    assert tg_posts[0]["title"] == "New trading terms"
    assert tg_posts[0]["source"]["campaign_id"] == draft.mailchimp_campaign_id
    assert tg_posts[0]["audience"]["partner_types"] == ["supplier"]

    # --- A policy document: version approved and published, distributed, confirmed by some ------------------
    document = documents.document_create(
        actor=author,
        kind="trading_terms",
        title="Trading terms",
        remind_after_days=7,
        max_reminders=2,
        reminder_tag="policy-reminder",
    )
    version = approve_version(new_version(document, author), author, approver, capture)
    document.refresh_from_db()
    tg_document = tg.state.render_document(document.tg_document_id)
    assert tg_document["latest"]["version"] == "2026.1"

    distribution = documents.document_distribution_create(
        version_id=version.pk,
        actor=author,
        audience=audience,
        segments=[suppliers],
        subject="Please confirm the new trading terms",
        from_name="Partner team",
        reply_to="partners@example.com",
    )
    with capture(execute=True):
        services.communication_submit(communication_id=distribution.communication_id, actor=author)
    with capture(execute=True):
        services.communication_approve(communication_id=distribution.communication_id, actor=approver)
    sent = distribution.communication
    sent.refresh_from_db()
    assert sent.state == CommunicationState.SENT, sent.failure_reason
    assert sorted(DocumentRecipient.objects.filter(version=version).values_list("email", flat=True)) == [
        "anna@acme.de",
        "omar@acme.de",
        "ops@dairy.de",
    ]

    # Anna confirms receipt in the community; Trading Grid's webhook brings it here.
    tg.state.acknowledge_document(
        document.tg_document_id, {"partner_company_id": ACME, "contact_email": "anna@acme.de"}, emit=True
    )
    tg.deliver()
    assert DocumentRecipient.objects.get(version=version, email="anna@acme.de").acknowledged_at is not None

    # Eight days later, the reminder goes to the two who did not confirm, and only once.
    with capture(execute=True):
        documents.document_reminders_sweep(now=sent.sent_at + dt.timedelta(days=8))
    with capture(execute=True):
        documents.document_reminders_sweep(now=sent.sent_at + dt.timedelta(days=8, hours=1))
    reminded = sorted(
        DocumentReminder.objects.filter(version=version, status="sent").values_list("recipient__email", flat=True)
    )
    assert reminded == ["omar@acme.de", "ops@dairy.de"]
    members = mailchimp_emulator.members(list_id=MAILCHIMP_TEST_AUDIENCE)
    tags = {email: {tag["name"] for tag in members[email]["tags"]} for email in members}
    assert "policy-reminder" in tags["omar@acme.de"] and "policy-reminder" in tags["ops@dairy.de"]
    assert "policy-reminder" not in tags["anna@acme.de"]
