"""python manage.py mailchimp_setup [--wait SECONDS] — merge fields and webhooks on every audience (idempotent)."""

import time
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from connectors.mailchimp.client import get_client
from connectors.mailchimp.errors import MailchimpError
from partners import services
from partners.models import MailchimpAudience


class Command(BaseCommand):
    help = (
        "Create the merge fields Partnerlink writes and register this site's webhook (sources user and admin, "
        "not api) on each Mailchimp audience. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            metavar="SECONDS",
            help="First wait this long for Mailchimp and for this site to answer (Mailchimp checks the URL).",
        )

    def handle(self, *args, **options):
        if options["wait"]:
            self._wait(options["wait"])
        services.audience_default_ensure()
        audiences = list(MailchimpAudience.objects.all())
        if not audiences:
            raise CommandError("No Mailchimp audience: set MAILCHIMP_AUDIENCE_ID or add one in the admin.")
        for audience in audiences:
            try:
                done = services.audience_mailchimp_setup(audience=audience)
            except MailchimpError as exc:
                raise CommandError(f"{audience}: {exc}") from exc
            for line in done or [f"{audience.list_id}: already set up"]:
                self.stdout.write(line)

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        health = f"{settings.PARTNERLINK_PUBLIC_URL}/healthz"
        while True:
            try:
                get_client().ping()
                with urllib.request.urlopen(health, timeout=2):  # noqa: S310 - our own configured URL
                    return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise CommandError(f"Mailchimp or {health} did not answer within {seconds:.0f}s: {exc}") from exc
                time.sleep(1)
