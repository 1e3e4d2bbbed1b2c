import pytest
from django.contrib.auth.models import Group

from partners.groups import GROUP_PERMISSIONS

pytestmark = pytest.mark.django_db


def test_each_group_holds_its_permissions_across_the_apps():
    for name, by_app in GROUP_PERMISSIONS.items():
        held = {
            f"{app}.{codename}"
            for app, codename in Group.objects.get(name=name).permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        for app, codenames in by_app.items():
            if isinstance(codenames, list):
                assert {f"{app}.{c}" for c in codenames} <= held, name
            else:
                assert any(p.startswith(f"{app}.") for p in held) or app in ("lifecycle", "engagement"), (name, app)


def test_approving_is_a_right_of_approvers_only():
    assert (
        Group.objects.filter(permissions__codename="approve_communication")
        .filter(name__in=["Approvers", "Administrators"])
        .count()
        == 2
    )
    assert not Group.objects.get(name="Partner managers").permissions.filter(codename="approve_communication").exists()
