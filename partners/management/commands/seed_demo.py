"""python manage.py seed_demo — demo users and a few hundred realistic partners; safe to run again."""

import json
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from partners import services
from partners.demo import DEMO_PARTNER_COUNT, demo_partner_records
from partners.selectors import ADMINISTRATORS_GROUP, APPROVERS_GROUP, PARTNER_MANAGERS_GROUP
from partners.services import partners_seed_demo

DEMO_PASSWORD = "partnerlink-demo"
DEMO_USERS = (
    # username, email, first, last, groups, superuser
    ("admin", "admin@partnerlink.example", "Ada", "Admin", (ADMINISTRATORS_GROUP,), True),
    ("maria", "maria.chen@partnerlink.example", "Maria", "Chen", (PARTNER_MANAGERS_GROUP,), False),
    ("james", "james.okafor@partnerlink.example", "James", "Okafor", (PARTNER_MANAGERS_GROUP,), False),
    ("olivia", "olivia.berg@partnerlink.example", "Olivia", "Berg", (PARTNER_MANAGERS_GROUP, APPROVERS_GROUP), False),
)


class Command(BaseCommand):
    help = "Load demo users and partners once (idempotent). Refused in production."

    def add_arguments(self, parser):
        parser.add_argument("--partners", type=int, default=DEMO_PARTNER_COUNT)
        parser.add_argument(
            "--export",
            metavar="PATH",
            help="Also write the demo partners as Trading Grid profiles (JSON), for the TG emulator's --partners-file.",
        )

    def handle(self, *args, **options):
        if not settings.DEBUG and not getattr(settings, "DEMO_DATA_ALLOWED", False):
            raise CommandError("seed_demo only runs with DEBUG on or DEMO_DATA_ALLOWED set (never in production).")
        with transaction.atomic():
            users = self._users()
        managers = [users["maria"], users["james"], users["olivia"]]
        self._journey_mapping()
        records = demo_partner_records(options["partners"])
        created = partners_seed_demo(records=records, managers=managers)
        if options["export"]:
            profiles = [{key: value for key, value in record.items() if key != "issues"} for record in records]
            Path(options["export"]).parent.mkdir(parents=True, exist_ok=True)
            Path(options["export"]).write_text(json.dumps(profiles, indent=1))
        self.stdout.write(f"Demo partners created: {created} (already present ones are left as they are).")
        self.stdout.write(f"Sign in at http://127.0.0.1:8000/ with one of these (password for all: {DEMO_PASSWORD}):")
        for username, email, _, _, groups, superuser in DEMO_USERS:
            role = "superuser" if superuser else ", ".join(groups)
            self.stdout.write(f"  {username:<8} {email:<36} {role}")

    def _journey_mapping(self) -> None:
        """The emulator's demo journey 4101 welcomes the contacts of every partner approved in Trading Grid."""
        from campaigns.models import JourneyMapping

        audience = services.audience_default_ensure()
        if audience is None or JourneyMapping.objects.exists():
            return
        JourneyMapping.objects.create(
            name="Welcome newly approved partners",
            trigger="partner_approved",
            audience=audience,
            journey_id=4101,
            step_id=41011,
            tags=["onboarding"],
            member_event="partner_approved",
        )

    def _users(self) -> dict:
        user_model = get_user_model()
        users = {}
        for username, email, first, last, groups, superuser in DEMO_USERS:
            user, created = user_model.objects.get_or_create(
                username=username,
                defaults={
                    "email": email,
                    "first_name": first,
                    "last_name": last,
                    "is_staff": True,
                    "is_superuser": superuser,
                },
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save(update_fields=["password"])
                user.groups.set(Group.objects.filter(name__in=groups))
            users[username] = user
        return users
