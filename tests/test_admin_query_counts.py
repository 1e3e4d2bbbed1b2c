"""Every admin list page runs a constant number of queries, whatever the number of rows it shows."""

import pytest
from django.urls import reverse

from connectors.models import InboundEvent
from partners.models import MailchimpAudience, PartnerImport, ProductLine, Segment, SyncRun
from tests.partners.factories import (
    AdministratorFactory,
    CommunityIssueFactory,
    ContactFactory,
    TradingPartnerFactory,
)

pytestmark = pytest.mark.django_db


def _audience():
    return MailchimpAudience.objects.get_or_create(list_id="aud1", defaults={"name": "Partners"})[0]


def _make(model_name: str, count: int, user) -> None:
    if model_name == "contact":
        for _ in range(count):
            ContactFactory(partner=TradingPartnerFactory(partner_manager=user))
    elif model_name == "communityissue":
        for _ in range(count):
            CommunityIssueFactory(partner=TradingPartnerFactory(partner_manager=user))
    elif model_name == "segment":
        line = ProductLine.objects.get_or_create(name="Dairy")[0]
        for index in range(count):
            segment = Segment.objects.create(name=f"Segment {Segment.objects.count()}-{index}", audience=_audience())
            segment.product_lines.add(line)
    elif model_name == "syncrun":
        SyncRun.objects.bulk_create([SyncRun(audience=_audience()) for _ in range(count)])
    elif model_name == "partnerimport":
        PartnerImport.objects.bulk_create(
            [PartnerImport(file="x.csv", original_name="x.csv", uploaded_by=user) for _ in range(count)]
        )
    elif model_name == "inboundevent":
        InboundEvent.objects.bulk_create(
            [
                InboundEvent(
                    source="mailchimp", dedupe_key=f"k{InboundEvent.objects.count()}-{i}", event_type="x", payload={}
                )
                for i in range(count)
            ]
        )


@pytest.mark.parametrize(
    "url_name",
    [
        "admin:partners_contact_changelist",
        "admin:partners_communityissue_changelist",
        "admin:partners_segment_changelist",
        "admin:partners_syncrun_changelist",
        "admin:partners_partnerimport_changelist",
        "admin:connectors_inboundevent_changelist",
    ],
)
def test_list_pages_have_a_constant_query_count(client, url_name, django_assert_max_num_queries):
    user = AdministratorFactory(is_superuser=True)
    client.force_login(user)
    model_name = url_name.split("_")[-2]
    _make(model_name, 3, user)
    with django_assert_max_num_queries(20) as few:
        assert client.get(reverse(url_name)).status_code == 200

    _make(model_name, 60, user)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get(reverse(url_name))
    assert response.status_code == 200
    assert response.context["cl"].result_count == 63
