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
        "add_communitypost", "change_communitypost", "view_communitypost", "view_poststyleperkind",
    }


def test_approvers_view_change_and_approve():
    assert codenames("Approvers") == {
        "view_communication", "change_communication", "approve_communication",
        "view_journeymapping", "view_journeytrigger",
        "view_communitypost", "change_communitypost", "approve_communitypost", "view_poststyleperkind",
    }


def test_administrators_get_everything_of_the_app():
    granted = codenames("Administrators")
    assert {"approve_communication", "delete_communication", "view_campaignsend", "approve_communitypost"} <= granted
    # nine models, four default permissions each, plus approving communications and community posts
    assert len(granted) == 9 * 4 + 2
