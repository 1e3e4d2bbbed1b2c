"""What each group may do in the campaigns app (partners/groups.py, applied after every migrate)."""

import pytest
from django.contrib.auth.models import Group

pytestmark = pytest.mark.django_db


def codenames(group_name: str) -> set[str]:
    group = Group.objects.get(name=group_name)
    return set(group.permissions.filter(content_type__app_label="campaigns").values_list("codename", flat=True))


def test_partner_managers_write_communications_but_cannot_approve():
    assert codenames("Partner managers") == {
        "add_communication", "change_communication", "view_communication",
        "view_journeymapping", "add_journeymapping", "change_journeymapping", "view_journeytrigger",
    }


def test_approvers_view_change_and_approve():
    assert codenames("Approvers") == {
        "view_communication", "change_communication", "approve_communication",
        "view_journeymapping", "view_journeytrigger",
    }


def test_administrators_get_everything_of_the_app():
    granted = codenames("Administrators")
    assert {"approve_communication", "delete_communication", "view_campaignsend"} <= granted
    assert len(granted) == 6 * 4 + 1  # six models, four default permissions each, plus approve
