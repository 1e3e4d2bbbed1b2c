"""The three groups partner managers are put in. Later migrations give "Approvers" their rights."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_PERMISSIONS = {
    "Partner managers": [
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
        "add_partnerimport",
        "view_partnerimport",
    ],
    "Approvers": [
        "view_tradingpartner",
        "view_contact",
        "view_tradingaddress",
        "view_communityissue",
        "view_productline",
    ],
    "Administrators": "__all__",
}


def create_groups(apps, schema_editor):
    # Permissions are normally created after all migrations; make sure this app's exist now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    partner_permissions = Permission.objects.filter(content_type__app_label="partners")
    for name, codenames in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=name)
        if codenames == "__all__":
            group.permissions.add(*partner_permissions)
        else:
            group.permissions.add(*partner_permissions.filter(codename__in=codenames))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUP_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("partners", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
