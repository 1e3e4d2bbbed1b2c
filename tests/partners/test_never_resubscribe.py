"""Whatever the order of imports, syncs and Mailchimp's webhook events, a contact who unsubscribed or was
cleaned is never sent with `status: subscribed` and never subscribed again by Partnerlink."""

import io
import json
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from connectors.mailchimp.client import request_observers
from connectors.mailchimp.webhooks import encode_bracketed_form
from connectors.models import InboundEvent
from partners import services
from partners.models import (
    Contact,
    ContactSyncState,
    MailchimpAudience,
    MemberBatch,
    PartnerImport,
    SyncRun,
    TradingPartner,
)
from tests.conftest import MAILCHIMP_TEST_AUDIENCE

pytestmark = pytest.mark.django_db

EMAILS = [f"person{i}@partner{i % 2}.example" for i in range(3)]
PARTNERS = ["GC00000001AA", "GC00000002AA", "GC00000003AA"]
HEADER = "tg_company_id,partner_name,partner_type,country_code,tier,contact_email,first_name"


class NeverResubscribe(RuleBasedStateMachine):
    """One example: an empty database and audience; then imports, syncs and Mailchimp changes in any order,
    with webhooks delivered late, out of order, twice, or never."""

    emulator = None
    client = None

    def __init__(self):
        super().__init__()
        for model in (InboundEvent, MemberBatch, ContactSyncState, SyncRun, Contact, TradingPartner, PartnerImport):
            model.objects.all().delete()
        MailchimpAudience.objects.all().delete()
        self.emulator.reset()
        self.audience = services.audience_default_ensure()
        self.pending_webhooks: list[dict] = []
        self.opted_out: set[str] = set()  # addresses that unsubscribed or were cleaned in Mailchimp
        self.sent_status: list[str] = []
        self.sent_emails: list[str] = []
        self.opted_out_here: dict[str, int] = {}  # address -> how many sends had gone out when we learnt it
        self.clock = 0

    # -- what partner managers and beat do --------------------------------------------------------------
    @rule(
        email=st.sampled_from(EMAILS), tier=st.sampled_from(["standard", "preferred"]), name=st.text("ab", max_size=2)
    )
    def import_contact(self, email, tier, name):
        partner = PARTNERS[EMAILS.index(email) % 2]
        row = f"{partner},Partner {partner[-3:]},supplier,DE,{tier},{email},N{name}"
        result = services.partner_import_file(stream=io.BytesIO(f"{HEADER}\n{row}\n".encode()))
        assert result.ok, result.problems

    @rule(full=st.booleans())
    def sync(self, full):
        run = services.audience_sync_start(
            audience=self.audience, kind="full" if full else "incremental", enqueue=False
        )
        run = services.audience_sync_execute(run_id=run.pk, poll_interval=0, sleep=lambda s: None)
        assert run.status == "succeeded", run.errors

    # -- what people do in Mailchimp --------------------------------------------------------------------
    @precondition(lambda self: self._members())
    @rule(data=st.data(), action=st.sampled_from(["unsubscribe", "cleaned", "profile"]))
    def change_in_mailchimp(self, data, action):
        email = data.draw(st.sampled_from(sorted(self._members())))
        if action == "unsubscribe":
            self.emulator.unsubscribe_member(list_id=MAILCHIMP_TEST_AUDIENCE, email=email)
            self.opted_out.add(email)
            payload = {"email": email, "reason": "manual", "action": "unsub", "list_id": MAILCHIMP_TEST_AUDIENCE}
        elif action == "cleaned":
            self.emulator.clean_member(list_id=MAILCHIMP_TEST_AUDIENCE, email=email)
            self.opted_out.add(email)
            payload = {"email": email, "reason": "hard", "list_id": MAILCHIMP_TEST_AUDIENCE}
        else:
            payload = {"email": email, "merges": {"FNAME": "Changed"}, "list_id": MAILCHIMP_TEST_AUDIENCE}
        self.clock += 1
        fired_at = f"2026-11-28 10:{self.clock:02d}:00"
        self.pending_webhooks.append({"type": action, "fired_at": fired_at, "data": payload})

    @precondition(lambda self: self.pending_webhooks)
    @rule(data=st.data(), keep=st.booleans())
    def deliver_webhook(self, data, keep):
        """Mailchimp delivers one pending webhook, in any order; `keep` delivers it again later."""
        index = data.draw(st.integers(0, len(self.pending_webhooks) - 1))
        webhook = self.pending_webhooks[index] if keep else self.pending_webhooks.pop(index)
        form = dict(encode_bracketed_form(webhook))
        response = self.http.post(
            "/webhooks/mailchimp/test-mailchimp-secret-new/",
            urlencode(form),
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code == 200
        event = InboundEvent.objects.get(pk=response.json()["event"])
        from connectors.services import inbound_event_process

        inbound_event_process(event_id=event.pk)
        for contact in Contact.objects.filter(marketing_status__in=["unsubscribed", "cleaned"]):
            self.opted_out_here.setdefault(contact.email, len(self.sent_emails))

    # -- what must always hold ----------------------------------------------------------------------------
    @invariant()
    def nobody_who_opted_out_is_subscribed_again(self):
        members = self.emulator.members(list_id=MAILCHIMP_TEST_AUDIENCE)
        for email in self.opted_out:
            assert members[email]["status"] in ("unsubscribed", "cleaned"), (email, members[email]["status"])

    @invariant()
    def status_is_never_sent(self):
        assert self.sent_status == []

    @invariant()
    def contacts_who_opted_out_here_are_never_sent(self):
        for email, since in self.opted_out_here.items():
            assert email not in self.sent_emails[since:], email

    def _members(self):
        return {email for email, m in self.emulator.members(list_id=MAILCHIMP_TEST_AUDIENCE).items()}

    def record_request(self, request):
        """Sees every request the client sends, before it is sent (from the sync's sending thread: no database
        access here, only list appends)."""
        bodies = []
        if request.body and '"operations"' in request.body:
            bodies = [json.loads(op.get("body") or "{}") for op in json.loads(request.body)["operations"]]
        elif request.body:
            bodies = [json.loads(request.body)]
        for body in bodies:
            if "status" in body:
                self.sent_status.append(request.path)
            if body.get("email_address"):
                self.sent_emails.append(body["email_address"])

def test_never_resubscribe_whatever_the_order_of_events(mailchimp_emulator, client, mailchimp_contract, eager_tasks):
    NeverResubscribe.emulator = mailchimp_emulator
    NeverResubscribe.http = client
    machines = []

    class Machine(NeverResubscribe):
        def __init__(self):
            super().__init__()
            machines.append(self)
            request_observers.append(self.record_request)

        def teardown(self):
            request_observers.remove(self.record_request)

    run = Machine.TestCase
    run.settings = settings(
        max_examples=40,
        stateful_step_count=14,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    run().runTest()
    assert machines, "hypothesis ran no example"
