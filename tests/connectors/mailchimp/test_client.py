"""The client against the in-process emulator, one operation at a time."""

import datetime as dt
import json

import pytest

from connectors.mailchimp.client import MailchimpClient, get_client
from connectors.mailchimp.errors import MailchimpAPIError
from connectors.mailchimp.payloads import BatchOperation, MemberUpsert, MergeFieldSpec, subscriber_hash

from .conftest import AUDIENCE_ID

UTC = dt.UTC
PARTNER_FIELDS = [
    MergeFieldSpec(tag="BUID", name="Business unit ID"),
    MergeFieldSpec(tag="PTYPE", name="Partner type"),
    MergeFieldSpec(tag="OPENISSUES", name="Open issues", type="number"),
    MergeFieldSpec(tag="TIER", name="Tier", type="dropdown", choices=("strategic", "preferred", "standard")),
]


def _bodies(sent_requests, method, path_part):
    return [json.loads(r.body) for r in sent_requests if r.method == method and path_part in r.path]


def _ready_campaign(client: MailchimpClient, *, html='<a href="https://community.example/posts/1">Read</a>') -> str:
    campaign = client.create_campaign(
        list_id=AUDIENCE_ID,
        subject_line="Policy update",
        from_name="Partnerlink",
        reply_to="partners@example.com",
        title="Policy update 2025",
    )
    client.set_campaign_content(campaign_id=campaign["id"], html=html)
    return campaign["id"]


def test_ping(mailchimp_client):
    assert mailchimp_client.ping() == "Everything's Chimpy!"


def test_ensure_merge_fields_creates_missing_tags_once(mailchimp_client, mailchimp_emulator):
    assert mailchimp_client.ensure_merge_fields(list_id=AUDIENCE_ID, fields=PARTNER_FIELDS) == [
        "BUID",
        "PTYPE",
        "OPENISSUES",
        "TIER",
    ]
    assert mailchimp_client.ensure_merge_fields(list_id=AUDIENCE_ID, fields=PARTNER_FIELDS) == []
    fields = {f["tag"]: f for f in mailchimp_client.get_merge_fields(list_id=AUDIENCE_ID)}
    assert fields["OPENISSUES"]["type"] == "number"
    assert fields["TIER"]["options"]["choices"] == ["strategic", "preferred", "standard"]


def test_upsert_member_puts_by_hash_with_status_if_new_only(mailchimp_client, sent_requests):
    mailchimp_client.ensure_merge_fields(list_id=AUDIENCE_ID, fields=PARTNER_FIELDS)
    member = mailchimp_client.upsert_member(
        list_id=AUDIENCE_ID,
        member=MemberUpsert(email="Ops@Server-Farm.example", merge_fields={"BUID": "BU0001", "OPENISSUES": 2}),
    )
    assert member["status"] == "subscribed"
    assert member["merge_fields"]["OPENISSUES"] == 2
    put = [r for r in sent_requests if r.method == "PUT"][-1]
    # The hash, never the address: the SDK would turn "server" in the address into "us21".
    assert put.path == f"/3.0/lists/{AUDIENCE_ID}/members/{subscriber_hash('ops@server-farm.example')}"
    assert json.loads(put.body) == {
        "email_address": "Ops@Server-Farm.example",
        "status_if_new": "subscribed",
        "merge_fields": {"BUID": "BU0001", "OPENISSUES": 2},
    }
    assert mailchimp_client.get_member(list_id=AUDIENCE_ID, email="ops@server-farm.example")["id"] == member["id"]
    assert mailchimp_client.get_member(list_id=AUDIENCE_ID, email="nobody@example.com") is None


def test_an_unsubscribed_member_upserted_again_stays_unsubscribed(mailchimp_client, mailchimp_emulator):
    mailchimp_client.upsert_member(list_id=AUDIENCE_ID, member=MemberUpsert(email="gone@example.com"))
    mailchimp_emulator.unsubscribe_member(list_id=AUDIENCE_ID, email="gone@example.com")
    member = mailchimp_client.upsert_member(
        list_id=AUDIENCE_ID, member=MemberUpsert(email="gone@example.com", merge_fields={"FNAME": "Gone"})
    )
    assert member["status"] == "unsubscribed"
    assert member["merge_fields"]["FNAME"] == "Gone"


@pytest.mark.parametrize("action", ["unsubscribe_member", "clean_member"])
def test_emulator_refuses_status_subscribed_for_unsubscribed_or_cleaned(mailchimp_client, mailchimp_emulator, action):
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="left@example.com")
    getattr(mailchimp_emulator, action)(list_id=AUDIENCE_ID, email="left@example.com")
    # What our client never sends, sent by hand to prove the emulator answers like Mailchimp.
    with pytest.raises(MailchimpAPIError) as caught:
        mailchimp_client._call(
            mailchimp_client._sdk.lists.set_list_member,
            AUDIENCE_ID,
            subscriber_hash("left@example.com"),
            {"email_address": "left@example.com", "status_if_new": "subscribed", "status": "subscribed"},
        )
    assert caught.value.status == 400
    assert caught.value.title == "Member In Compliance State"
    assert caught.value.is_compliance_refusal


def test_a_permanently_deleted_address_cannot_come_back(mailchimp_client, mailchimp_emulator):
    mailchimp_client.upsert_member(list_id=AUDIENCE_ID, member=MemberUpsert(email="erased@example.com"))
    mailchimp_emulator.forget_member(list_id=AUDIENCE_ID, email="erased@example.com")
    with pytest.raises(MailchimpAPIError) as caught:
        mailchimp_client.upsert_member(list_id=AUDIENCE_ID, member=MemberUpsert(email="erased@example.com"))
    assert caught.value.title == "Forgotten Email Not Subscribed"
    result = mailchimp_client.bulk_upsert_members(
        list_id=AUDIENCE_ID, members=[MemberUpsert(email="erased@example.com")]
    )
    assert [e.email for e in result.errors] == ["erased@example.com"]


def test_bulk_upsert_sends_at_most_500_per_call_and_never_status(mailchimp_client, mailchimp_emulator, sent_requests):
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="p0001@example.com", status="unsubscribed")
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="p0002@example.com", status="cleaned")
    members = [MemberUpsert(email=f"p{i:04d}@example.com", merge_fields={"FNAME": f"P{i}"}) for i in range(1, 1201)]

    result = mailchimp_client.bulk_upsert_members(list_id=AUDIENCE_ID, members=members)

    bodies = _bodies(sent_requests, "POST", f"/lists/{AUDIENCE_ID}")
    assert [len(body["members"]) for body in bodies] == [500, 500, 200]
    assert all(body["update_existing"] is True for body in bodies)
    assert not any("status" in entry for body in bodies for entry in body["members"])
    assert [len(call.new_emails) + len(call.updated_emails) for call in result.calls] == [500, 500, 200]
    assert sorted(result.updated_emails) == ["p0001@example.com", "p0002@example.com"]
    assert len(result.new_emails) == 1198 and result.errors == []
    state = mailchimp_emulator.members(list_id=AUDIENCE_ID)
    assert state["p0001@example.com"]["status"] == "unsubscribed"
    assert state["p0002@example.com"]["status"] == "cleaned"
    assert state["p0001@example.com"]["merge_fields"]["FNAME"] == "P1"


def test_bulk_upsert_status_would_resubscribe_which_is_why_the_client_never_sends_it(
    mailchimp_client, mailchimp_emulator
):
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="left@example.com", status="unsubscribed")
    body = {"members": [{"email_address": "left@example.com", "status": "subscribed"}], "update_existing": True}
    mailchimp_client._call(mailchimp_client._sdk.lists.batch_list_members, AUDIENCE_ID, body)
    assert mailchimp_emulator.members(list_id=AUDIENCE_ID)["left@example.com"]["status"] == "subscribed"


def test_bulk_upsert_reports_per_member_errors_and_refuses_duplicates_up_front(mailchimp_client, sent_requests):
    mailchimp_client.ensure_merge_fields(list_id=AUDIENCE_ID, fields=PARTNER_FIELDS)
    result = mailchimp_client.bulk_upsert_members(
        list_id=AUDIENCE_ID,
        members=[
            MemberUpsert(email="ok@example.com", merge_fields={"OPENISSUES": 1}),
            MemberUpsert(email="bad@example.com", merge_fields={"OPENISSUES": "many"}),
            MemberUpsert(email="odd@example.com", merge_fields={"NOSUCHTAG": "x"}),
        ],
    )
    assert result.new_emails == ["ok@example.com"]
    assert {(e.email, e.field) for e in result.errors} == {
        ("bad@example.com", "OPENISSUES"),
        ("odd@example.com", "NOSUCHTAG"),
    }
    calls_before = len(sent_requests)
    with pytest.raises(ValueError, match="more than once"):
        mailchimp_client.bulk_upsert_members(
            list_id=AUDIENCE_ID, members=[MemberUpsert(email="a@example.com"), MemberUpsert(email="A@example.com")]
        )
    assert len(sent_requests) == calls_before


def test_member_tags(mailchimp_client, mailchimp_emulator, sent_requests):
    mailchimp_client.upsert_member(list_id=AUDIENCE_ID, member=MemberUpsert(email="t@example.com"))
    mailchimp_client.update_member_tags(list_id=AUDIENCE_ID, email="t@example.com", active=["carrier", "emea"])
    mailchimp_client.update_member_tags(
        list_id=AUDIENCE_ID, email="t@example.com", inactive=["emea"], active=["tier-1"]
    )
    member = mailchimp_emulator.members(list_id=AUDIENCE_ID)["t@example.com"]
    assert [tag["name"] for tag in member["tags"]] == ["carrier", "tier-1"]
    assert _bodies(sent_requests, "POST", "/tags")[0]["is_syncing"] is True


def test_static_segment_create_and_diffs_of_at_most_500(mailchimp_client, mailchimp_emulator, sent_requests):
    emails = [f"s{i:04d}@example.com" for i in range(1300)]
    mailchimp_client.bulk_upsert_members(list_id=AUDIENCE_ID, members=[MemberUpsert(email=e) for e in emails])

    segment = mailchimp_client.create_static_segment(list_id=AUDIENCE_ID, name="Carriers EMEA", emails=emails[:700])
    assert segment.member_count == 700
    result = mailchimp_client.update_static_segment(
        list_id=AUDIENCE_ID, segment_id=segment.id, add=emails[700:1300] + ["stranger@example.com"], remove=emails[:550]
    )
    assert (result.added, result.removed, result.calls) == (600, 550, 2)
    assert result.errors  # the stranger isn't on the list
    changes = _bodies(sent_requests, "POST", f"/segments/{segment.id}")
    assert all(len(b.get("members_to_add", [])) <= 500 and len(b.get("members_to_remove", [])) <= 500 for b in changes)
    assert mailchimp_client.get_static_segment(list_id=AUDIENCE_ID, segment_id=segment.id).member_count == 750
    assert (
        sorted(mailchimp_client.get_static_segment_emails(list_id=AUDIENCE_ID, segment_id=segment.id)) == emails[550:]
    )
    mailchimp_emulator.unsubscribe_member(list_id=AUDIENCE_ID, email=emails[600])
    assert mailchimp_client.get_static_segment(list_id=AUDIENCE_ID, segment_id=segment.id).member_count == 749
    assert len(mailchimp_client.get_static_segment_emails(list_id=AUDIENCE_ID, segment_id=segment.id)) == 750
    assert dict(sent_requests[-1].query)["include_unsubscribed"] == "True"  # the SDK's spelling; Mailchimp takes it


def test_batch_operations_run_and_their_results_are_read_from_the_tar(mailchimp_client, mailchimp_emulator):
    new_member = {"email_address": "batch@example.com", "status_if_new": "subscribed"}
    operations = [
        BatchOperation(
            method="PUT",
            path=f"/lists/{AUDIENCE_ID}/members/{subscriber_hash('batch@example.com')}",
            operation_id="upsert-1",
            body=new_member,
        ),
        BatchOperation(method="GET", path="/lists/no-such-list", operation_id="missing-1"),
        BatchOperation(
            method="GET", path=f"/lists/{AUDIENCE_ID}/merge-fields", operation_id="fields-1", params={"count": 1000}
        ),
    ]
    batch = mailchimp_client.start_batch(operations=operations)
    assert batch.status == "pending" and batch.total_operations == 3

    finished = mailchimp_client.wait_for_batch(batch_id=batch.id, timeout=10, poll_interval=0)
    assert finished.is_finished and finished.errored_operations == 1

    results = {
        r.operation_id: r for r in mailchimp_client.fetch_batch_results(response_body_url=finished.response_body_url)
    }
    assert results["upsert-1"].ok and results["upsert-1"].response["email_address"] == "batch@example.com"
    assert results["missing-1"].status_code == 404
    assert results["fields-1"].response["total_items"] == 5
    assert "batch@example.com" in mailchimp_emulator.members(list_id=AUDIENCE_ID)


def test_member_events_and_activity_feed(mailchimp_client, mailchimp_emulator):
    mailchimp_client.upsert_member(list_id=AUDIENCE_ID, member=MemberUpsert(email="e@example.com"))
    mailchimp_client.create_member_event(
        list_id=AUDIENCE_ID,
        email="e@example.com",
        name="webinar_attended",
        properties={"webinar": "EDI basics", "minutes": 45},
        occurred_at=dt.datetime(2025, 5, 1, 10, 0, tzinfo=UTC),
    )
    events = mailchimp_emulator.state.snapshot()["lists"][AUDIENCE_ID]["events"]["e@example.com"]
    assert events == [
        {
            "name": "webinar_attended",
            "properties": {"webinar": "EDI basics", "minutes": "45"},
            "occurred_at": "2025-05-01T10:00:00+00:00",
            "is_syncing": False,
        }
    ]
    feed = mailchimp_client.get_member_activity(list_id=AUDIENCE_ID, email="e@example.com")
    assert feed[0]["activity_type"] == "event"
    with pytest.raises(ValueError, match="event name"):
        mailchimp_client.create_member_event(list_id=AUDIENCE_ID, email="e@example.com", name="has spaces")


def test_journey_trigger_only_for_subscribed_members_of_the_journey_audience(mailchimp_client, mailchimp_emulator):
    journey = mailchimp_emulator.add_journey(list_id=AUDIENCE_ID, name="Onboarding", steps={11: "Welcome"})
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="new@partner.example")
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="left@partner.example", status="unsubscribed")

    mailchimp_client.trigger_journey_step(journey_id=journey["id"], step_id=11, email="new@partner.example")
    assert [(t["journey_id"], t["step_id"], t["email_address"]) for t in mailchimp_emulator.journey_triggers()] == [
        (journey["id"], 11, "new@partner.example")
    ]
    for email in ("left@partner.example", "stranger@partner.example"):
        with pytest.raises(MailchimpAPIError) as caught:
            mailchimp_client.trigger_journey_step(journey_id=journey["id"], step_id=11, email=email)
        assert caught.value.status == 400
    with pytest.raises(MailchimpAPIError) as caught:
        mailchimp_client.trigger_journey_step(journey_id=999999, step_id=1, email="new@partner.example")
    assert caught.value.is_not_found


def test_classic_automation_queue(mailchimp_client, mailchimp_emulator):
    automation = mailchimp_emulator.add_automation(list_id=AUDIENCE_ID, title="Webinar", emails={"e1": "Thanks"})
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="a@partner.example")
    queued = mailchimp_client.queue_automation_email(
        workflow_id=automation["id"], workflow_email_id="e1", email="a@partner.example"
    )
    assert queued["email_address"] == "a@partner.example"
    with pytest.raises(MailchimpAPIError):
        mailchimp_client.queue_automation_email(
            workflow_id=automation["id"], workflow_email_id="e1", email="a@partner.example"
        )


def test_campaign_create_content_checklist_send(mailchimp_client, mailchimp_emulator):
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="r@partner.example")
    campaign = mailchimp_client.create_campaign(
        list_id=AUDIENCE_ID, subject_line="Trading terms", from_name="Partnerlink", reply_to="partners@example.com"
    )
    assert campaign["status"] == "save"
    assert mailchimp_client.get_send_checklist(campaign_id=campaign["id"])["is_ready"] is False

    html = '<p>New terms: <a href="https://community.example/docs/terms">read</a></p>'
    mailchimp_client.set_campaign_content(campaign_id=campaign["id"], html=html, plain_text="New terms")
    assert mailchimp_client.get_campaign_content(campaign_id=campaign["id"])["html"] == html
    assert mailchimp_client.get_send_checklist(campaign_id=campaign["id"])["is_ready"] is True

    assert mailchimp_client.send_campaign(campaign_id=campaign["id"]) is None
    assert mailchimp_emulator.state.campaigns[campaign["id"]].status == "sending"
    assert mailchimp_client.get_campaign(campaign_id=campaign["id"])["status"] == "sent"
    with pytest.raises(MailchimpAPIError):
        mailchimp_client.send_campaign(campaign_id=campaign["id"])


def test_schedule_uses_the_next_quarter_hour_and_returns_it(mailchimp_client, mailchimp_emulator, sent_requests):
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="r@partner.example")
    campaign_id = _ready_campaign(mailchimp_client)
    wanted = (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(hour=9, minute=7, second=30)

    slot = mailchimp_client.schedule_campaign(campaign_id=campaign_id, send_at=wanted)

    assert slot == wanted.replace(minute=15, second=0, microsecond=0)
    assert _bodies(sent_requests, "POST", "/actions/schedule") == [{"schedule_time": slot.isoformat()}]
    campaign = mailchimp_emulator.state.campaigns[campaign_id]
    assert (campaign.status, campaign.schedule_time) == ("schedule", slot)


def test_emulator_refuses_a_schedule_off_the_quarter_hour(mailchimp_client, mailchimp_emulator):
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="r@partner.example")
    campaign_id = _ready_campaign(mailchimp_client)
    off = (dt.datetime.now(UTC) + dt.timedelta(days=1)).replace(minute=7, second=0, microsecond=0)
    with pytest.raises(MailchimpAPIError, match="quarter-hour"):
        mailchimp_client._call(
            mailchimp_client._sdk.campaigns.schedule, campaign_id, {"schedule_time": off.isoformat()}
        )


def test_settings_of_a_draft_campaign_change_until_it_is_scheduled(mailchimp_client, mailchimp_emulator, sent_requests):
    mailchimp_emulator.add_member(list_id=AUDIENCE_ID, email="r@partner.example")
    campaign_id = _ready_campaign(mailchimp_client)

    mailchimp_client.update_campaign_settings(
        campaign_id=campaign_id, subject_line="New terms", from_name="Ops", reply_to="ops@example.com"
    )

    remote = mailchimp_client.get_campaign(campaign_id=campaign_id)["settings"]
    assert (remote["subject_line"], remote["from_name"], remote["reply_to"], remote["preview_text"]) == (
        "New terms",
        "Ops",
        "ops@example.com",
        "",
    )
    with pytest.raises(MailchimpAPIError) as refused:
        mailchimp_client.update_campaign_settings(
            campaign_id=campaign_id, subject_line="x", from_name="Ops", reply_to="not an address"
        )
    assert [(e.field, e.message) for e in refused.value.errors] == [
        ("settings.reply_to", "This value should be a valid email.")
    ]
    mailchimp_client.schedule_campaign(campaign_id=campaign_id, send_at=dt.datetime.now(UTC) + dt.timedelta(days=1))
    with pytest.raises(MailchimpAPIError, match="sent or scheduled"):
        mailchimp_client.update_campaign_settings(
            campaign_id=campaign_id, subject_line="Late", from_name="Ops", reply_to="ops@example.com"
        )
    mailchimp_client.unschedule_campaign(campaign_id=campaign_id)
    assert mailchimp_client.get_campaign(campaign_id=campaign_id)["status"] == "save"
    with pytest.raises(MailchimpAPIError, match="not scheduled"):
        mailchimp_client.unschedule_campaign(campaign_id=campaign_id)


def test_template_content_fills_the_editable_sections(mailchimp_client, mailchimp_emulator, sent_requests):
    template = mailchimp_emulator.add_template(
        name="Partner news", html='<h1 mc:edit="title">Title</h1><div mc:edit="body">Body</div><p>Footer</p>'
    )
    campaign = mailchimp_client.create_campaign(
        list_id=AUDIENCE_ID, subject_line="News", from_name="Partnerlink", reply_to="partners@example.com"
    )

    mailchimp_client.set_campaign_content(
        campaign_id=campaign["id"], template_id=template["id"], sections={"title": "Q3", "body": "<p>Hello</p>"}
    )

    assert _bodies(sent_requests, "PUT", "/content")[-1] == {
        "template": {"id": template["id"], "sections": {"title": "Q3", "body": "<p>Hello</p>"}}
    }
    html = mailchimp_client.get_campaign_content(campaign_id=campaign["id"])["html"]
    assert html == '<h1 mc:edit="title">Q3</h1><div mc:edit="body"><p>Hello</p></div><p>Footer</p>'
    assert mailchimp_client.get_campaign(campaign_id=campaign["id"])["content_type"] == "template"
    with pytest.raises(MailchimpAPIError, match="template"):
        mailchimp_client.set_campaign_content(campaign_id=campaign["id"], template_id=999999)
    with pytest.raises(ValueError, match="exactly one"):
        mailchimp_client.set_campaign_content(campaign_id=campaign["id"], html="<p>x</p>", template_id=template["id"])


def test_test_email_goes_to_the_given_addresses(mailchimp_client, mailchimp_emulator, sent_requests):
    campaign = mailchimp_client.create_campaign(
        list_id=AUDIENCE_ID, subject_line="News", from_name="Partnerlink", reply_to="partners@example.com"
    )
    with pytest.raises(MailchimpAPIError, match="no content"):
        mailchimp_client.send_test_email(campaign_id=campaign["id"], emails=["me@example.com"])
    mailchimp_client.set_campaign_content(campaign_id=campaign["id"], html="<p>Hi</p>")

    assert mailchimp_client.send_test_email(campaign_id=campaign["id"], emails=[" me@example.com "]) is None

    assert _bodies(sent_requests, "POST", "/actions/test")[-1] == {"test_emails": ["me@example.com"], "send_type": "html"}
    sends = mailchimp_emulator.test_sends(campaign_id=campaign["id"])
    assert [(s["emails"], s["send_type"]) for s in sends] == [(["me@example.com"], "html")]
    assert mailchimp_client.get_campaign(campaign_id=campaign["id"])["status"] == "save"
    with pytest.raises(ValueError):
        mailchimp_client.send_test_email(campaign_id=campaign["id"], emails=[])


def test_reports_are_deterministic_and_move_members(mailchimp_client, mailchimp_emulator):
    emails = [f"r{i:03d}@partner.example" for i in range(300)]
    mailchimp_client.bulk_upsert_members(list_id=AUDIENCE_ID, members=[MemberUpsert(email=e) for e in emails])
    campaign_id = _ready_campaign(mailchimp_client)
    mailchimp_client.send_campaign(campaign_id=campaign_id)

    report = mailchimp_client.get_campaign_report(campaign_id=campaign_id)
    assert report["emails_sent"] == 300
    assert 0 < report["opens"]["unique_opens"] < 300 and report["clicks"]["unique_subscriber_clicks"] > 0
    statuses = {m["status"] for m in mailchimp_emulator.members(list_id=AUDIENCE_ID).values()}
    assert "cleaned" in statuses or "unsubscribed" in statuses
    assert report["bounces"]["hard_bounces"] == sum(
        1 for m in mailchimp_emulator.members(list_id=AUDIENCE_ID).values() if m["status"] == "cleaned"
    )
    clicks = mailchimp_client.get_click_details(campaign_id=campaign_id)
    assert [c["url"] for c in clicks] == ["https://community.example/posts/1"]
    assert clicks[0]["unique_clicks"] == report["clicks"]["unique_subscriber_clicks"]

    # Same account history, same numbers (times move with the clock, counts don't).
    def counts(data):
        return {key: value for key, value in data.items() if key not in ("send_time", "opens", "clicks")} | {
            "opens": data["opens"]["opens_total"],
            "clicks": data["clicks"]["clicks_total"],
        }

    mailchimp_emulator.reset()
    mailchimp_client.bulk_upsert_members(list_id=AUDIENCE_ID, members=[MemberUpsert(email=e) for e in emails])
    again = _ready_campaign(mailchimp_client)
    mailchimp_client.send_campaign(campaign_id=again)
    assert again == campaign_id
    assert counts(mailchimp_client.get_campaign_report(campaign_id=again)) == counts(report)


def test_email_activity_follows_every_page_of_1000(mailchimp_client, mailchimp_emulator, sent_requests):
    emails = [f"a{i:04d}@partner.example" for i in range(1150)]
    mailchimp_client.bulk_upsert_members(list_id=AUDIENCE_ID, members=[MemberUpsert(email=e) for e in emails])
    campaign_id = _ready_campaign(mailchimp_client)
    mailchimp_client.send_campaign(campaign_id=campaign_id)

    rows = mailchimp_client.get_email_activity(campaign_id=campaign_id)

    assert sorted(row["email_address"] for row in rows) == emails
    pages = [dict(r.query) for r in sent_requests if r.path.endswith("/email-activity")]
    assert [(p["count"], p["offset"]) for p in pages] == [("1000", "0"), ("1000", "1000")]
    actions = {event["action"] for row in rows for event in row["activity"]}
    assert {"open", "click", "bounce"} <= actions
    assert all(event["url"] for row in rows for event in row["activity"] if event["action"] == "click")


def test_email_activity_since_returns_only_later_activity(mailchimp_client, mailchimp_emulator, sent_requests):
    emails = [f"a{i:03d}@partner.example" for i in range(200)]
    mailchimp_client.bulk_upsert_members(list_id=AUDIENCE_ID, members=[MemberUpsert(email=e) for e in emails])
    campaign_id = _ready_campaign(mailchimp_client)
    mailchimp_client.send_campaign(campaign_id=campaign_id)
    every = mailchimp_client.get_email_activity(campaign_id=campaign_id)
    stamps = sorted(e["timestamp"] for row in every for e in row["activity"])
    since = dt.datetime.fromisoformat(stamps[len(stamps) // 2])

    later = mailchimp_client.get_email_activity(campaign_id=campaign_id, since=since)

    assert 0 < len(later) < len(every)
    assert all(dt.datetime.fromisoformat(e["timestamp"]) > since for row in later for e in row["activity"])
    assert dict(sent_requests[-1].query)["since"] == since.isoformat()


def test_list_webhook_is_verified_with_a_get_then_listed(mailchimp_client, webhook_receiver, sent_requests):
    webhook = mailchimp_client.create_list_webhook(
        list_id=AUDIENCE_ID, url=webhook_receiver.url, events=["subscribe", "unsubscribe", "cleaned"]
    )
    assert [r.method for r in webhook_receiver.requests] == ["GET"]
    assert webhook["events"]["subscribe"] is True and webhook["events"]["profile"] is False
    assert webhook["sources"] == {"user": True, "admin": True, "api": False}
    assert [w["id"] for w in mailchimp_client.list_webhooks(list_id=AUDIENCE_ID)] == [webhook["id"]]
    mailchimp_client.delete_list_webhook(list_id=AUDIENCE_ID, webhook_id=webhook["id"])
    assert mailchimp_client.list_webhooks(list_id=AUDIENCE_ID) == []
    with pytest.raises(ValueError, match="unknown webhook"):
        mailchimp_client.create_list_webhook(list_id=AUDIENCE_ID, url=webhook_receiver.url, events=["opened"])


def test_list_webhook_creation_fails_when_the_url_does_not_answer_2xx(mailchimp_client, webhook_receiver):
    webhook_receiver.get_status = 404
    with pytest.raises(MailchimpAPIError) as caught:
        mailchimp_client.create_list_webhook(list_id=AUDIENCE_ID, url=webhook_receiver.url, events=["subscribe"])
    assert caught.value.status == 400
    assert [e.field for e in caught.value.errors] == ["url"]


def test_get_client_is_built_from_settings_once_per_configuration(mailchimp_emulator, settings):
    client = get_client()
    assert client is get_client()
    assert client.base_url == mailchimp_emulator.api_url and client.timeout == settings.MAILCHIMP_TIMEOUT
    assert client.ping() == "Everything's Chimpy!"
    settings.MAILCHIMP_TIMEOUT = 3.0
    assert get_client() is not client and get_client().timeout == 3.0
