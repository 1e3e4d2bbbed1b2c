"""Fixtures for communications: people in each group, an audience with segments, and communications in
each state, built through the services."""

import pytest
from django.contrib.auth.models import Group

from campaigns import services
from campaigns.models import CommunicationKind
from partners import services as partner_services
from partners.models import Segment
from partners.selectors import ADMINISTRATORS_GROUP, APPROVERS_GROUP, PARTNER_MANAGERS_GROUP
from tests.connectors.tradinggrid.conftest import (  # noqa: F401 - fixtures reused for journeys
    tg_emulator,
    tg_emulator_server,
    tg_settings,
    webhook_receiver,
)
from tests.partners.conftest import tg  # noqa: F401
from tests.partners.factories import ContactFactory, TradingPartnerFactory, UserFactory


def make_user(*groups: str, **kwargs):
    user = UserFactory(**kwargs)
    user.groups.add(*Group.objects.filter(name__in=groups))
    return type(user).objects.get(pk=user.pk)  # fresh: no stale permission cache


@pytest.fixture
def author(db):
    return make_user(PARTNER_MANAGERS_GROUP, username="maria", email="maria@partnerlink.example")


@pytest.fixture
def approver(db):
    return make_user(PARTNER_MANAGERS_GROUP, APPROVERS_GROUP, username="olivia", email="olivia@partnerlink.example")


@pytest.fixture
def second_approver(db):
    return make_user(APPROVERS_GROUP, username="james", email="james@partnerlink.example")


@pytest.fixture
def administrator(db):
    return make_user(ADMINISTRATORS_GROUP, username="admin2", email="admin2@partnerlink.example")


@pytest.fixture
def audience(db):
    return partner_services.audience_default_ensure()


@pytest.fixture
def suppliers(audience):
    return Segment.objects.create(name="Suppliers", audience=audience, partner_types=["supplier"])


@pytest.fixture
def carriers(audience):
    return Segment.objects.create(name="Carriers", audience=audience, partner_types=["carrier"])


@pytest.fixture
def partners(db):
    """Two suppliers and a carrier; one supplier contact unsubscribed (never sent)."""
    acme = TradingPartnerFactory(name="Acme Foods", partner_type="supplier")
    ContactFactory(partner=acme, email="anna@acme.example")
    ContactFactory(partner=acme, email="gone@acme.example", marketing_status="unsubscribed")
    dairy = TradingPartnerFactory(name="Dairy Co", partner_type="supplier")
    ContactFactory(partner=dairy, email="ops@dairy.example")
    swift = TradingPartnerFactory(name="Swift", partner_type="carrier")
    ContactFactory(partner=swift, email="dispatch@swift.example")
    ContactFactory(partner=swift, email="anna@acme.example")  # the same person at two partners: one email
    return acme, dairy, swift


def sync_audience(audience):
    """Contacts and segments into the emulator (what beat does every five minutes)."""
    run = partner_services.audience_sync_start(audience=audience, triggered_by="test", enqueue=False)
    return partner_services.audience_sync_execute(run_id=run.pk, poll_interval=0, sleep=lambda seconds: None)


def new_communication(author, audience, segments, **overrides):
    fields = {
        "kind": CommunicationKind.POLICY_UPDATE,
        "subject": "New trading terms",
        "from_name": "Partner team",
        "reply_to": "partners@example.com",
        "preview_text": "What changes on 1 January",
        "html_body": '<h1>New terms</h1><p><a href="https://community.example/docs/terms">Read them</a></p>',
        **overrides,
    }
    return services.communication_create(author=author, audience=audience, segments=segments, **fields)


@pytest.fixture
def draft(author, audience, suppliers):
    return new_communication(author, audience, [suppliers])


@pytest.fixture
def submitted(draft, author):
    return services.communication_submit(communication_id=draft.pk, actor=author)


@pytest.fixture
def approved(submitted, approver):
    return services.communication_approve(communication_id=submitted.pk, actor=approver)
