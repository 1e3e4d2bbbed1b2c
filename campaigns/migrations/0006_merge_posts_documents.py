from django.db import migrations


class Migration(migrations.Migration):
    """Community posts and policy documents were built side by side; this joins the two branches."""

    dependencies = [
        ("campaigns", "0004_community_posts"),
        ("campaigns", "0005_policy_documents"),
    ]

    operations = []
