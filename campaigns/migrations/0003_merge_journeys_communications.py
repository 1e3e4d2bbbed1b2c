from django.db import migrations


class Migration(migrations.Migration):
    """Journey mappings and communications were built side by side; this joins the two branches."""

    dependencies = [
        ("campaigns", "0001_journeys"),
        ("campaigns", "0002_group_permissions"),
    ]

    operations = []
