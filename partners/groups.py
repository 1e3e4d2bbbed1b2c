"""The three groups partner managers are put in, and what each may do, across the apps.

The data migrations created the groups; this keeps their permissions complete as models are added: it runs after
every `migrate` (and after a test database is flushed). It only adds permissions, so rights an administrator
granted by hand stay."""

from django.contrib.auth.models import Group, Permission
from django.db.models import Q

from partners.selectors import ADMINISTRATORS_GROUP, APPROVERS_GROUP, PARTNER_MANAGERS_GROUP

EVERYTHING = "__all__"
GROUP_PERMISSIONS: dict[str, dict[str, list[str] | str]] = {
    PARTNER_MANAGERS_GROUP: {
        "partners": [
            "view_tradingpartner",
            "change_tradingpartner",
            "add_contact",
            "view_contact",
            "change_contact",
            "add_tradingaddress",
            "view_tradingaddress",
            "change_tradingaddress",
            "delete_tradingaddress",
            "view_communityissue",
            "view_productline",
            "view_certification",
            "add_partnerimport",
            "view_partnerimport",
            "view_mailchimpaudience",
            "view_segment",
            "add_segment",
            "change_segment",
            "view_syncrun",
        ],
        "campaigns": [
            "add_communication",
            "change_communication",
            "view_communication",
            "view_journeymapping",
            "add_journeymapping",
            "change_journeymapping",
            "view_journeytrigger",
            "add_communitypost",
            "change_communitypost",
            "view_communitypost",
            "view_poststyleperkind",
            # Policy documents (F5)
            "add_policydocument",
            "change_policydocument",
            "view_policydocument",
            "add_documentversion",
            "change_documentversion",
            "view_documentversion",
            "view_documentpublication",
            "view_documentacknowledgement",
            "view_documentreminder",
        ],
    },
    APPROVERS_GROUP: {
        "partners": [
            "view_tradingpartner",
            "view_contact",
            "view_tradingaddress",
            "view_communityissue",
            "view_productline",
            "view_certification",
            "view_mailchimpaudience",
            "view_segment",
        ],
        "campaigns": [
            "view_communication",
            "change_communication",
            "approve_communication",
            "view_journeymapping",
            "view_journeytrigger",
            "view_communitypost",
            "change_communitypost",
            "approve_communitypost",
            "view_poststyleperkind",
            # Policy documents (F5)
            "view_policydocument",
            "view_documentversion",
            "change_documentversion",
            "approve_documentversion",
            "view_documentpublication",
            "view_documentacknowledgement",
            "view_documentreminder",
        ],
    },
    ADMINISTRATORS_GROUP: {
        app: EVERYTHING
        for app in ("partners", "campaigns", "connectors", "lifecycle", "engagement", "django_celery_beat")
    },
}


def groups_sync(**kwargs) -> None:
    """post_migrate: every group exists and holds at least the permissions above."""
    for name, by_app in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = Q(pk__in=[])
        for app_label, codenames in by_app.items():
            if codenames == EVERYTHING:
                wanted |= Q(content_type__app_label=app_label)
            else:
                wanted |= Q(content_type__app_label=app_label, codename__in=codenames)
        group.permissions.add(*Permission.objects.filter(wanted))
