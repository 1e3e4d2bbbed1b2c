"""What each group may do in the campaigns app (partners/groups.py, applied after every migrate)."""

import pytest
from django.apps import apps
from django.contrib.auth.models import Group

pytestmark = pytest.mark.django_db

# Policy documents (F5): partner managers upload and submit versions; approvers approve them.
DOCUMENT_WRITER_PERMISSIONS = {
    "add_policydocument", "change_policydocument", "view_policydocument",
    "add_documentversion", "change_documentversion", "view_documentversion",
    "view_documentpublication", "view_documentacknowledgement", "view_documentreminder",
}
DOCUMENT_APPROVER_PERMISSIONS = {
    "view_policydocument", "view_documentversion", "change_documentversion", "approve_documentversion",
    "view_documentpublication", "view_documentacknowledgement", "view_documentreminder",
}


def codenames(group_name: str) -> set[str]:
    group = Group.objects.get(name=group_name)
    return set(group.permissions.filter(content_type__app_label="campaigns").values_list("codename", flat=True))


def test_partner_managers_write_communications_but_cannot_approve():
    assert codenames("Partner managers") == {
        "add_communication", "change_communication", "view_communication",
        "view_journeymapping", "add_journeymapping", "change_journeymapping", "view_journeytrigger",
        "add_communitypost", "change_communitypost", "view_communitypost", "view_poststyleperkind",
        *DOCUMENT_WRITER_PERMISSIONS,
    }


def test_approvers_view_change_and_approve():
    assert codenames("Approvers") == {
        "view_communication", "change_communication", "approve_communication",
        "view_journeymapping", "view_journeytrigger",
        "view_communitypost", "change_communitypost", "approve_communitypost", "view_poststyleperkind",
        *DOCUMENT_APPROVER_PERMISSIONS,
    }


def test_administrators_get_everything_of_the_app():
    granted = codenames("Administrators")
    assert {"approve_communication", "delete_communication", "view_campaignsend", "approve_communitypost"} <= granted
    models = len(list(apps.get_app_config("campaigns").get_models()))
    # four default permissions per model, plus approving communications, community posts and document versions
    assert len(granted) == models * 4 + 3
