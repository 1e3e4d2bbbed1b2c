"""python manage.py tradinggrid_setup [--wait SECONDS] — subscribe this site to Trading Grid's webhooks (idempotent)."""

import time

from django.core.management.base import BaseCommand, CommandError

from connectors.tradinggrid.client import get_client
from connectors.tradinggrid.errors import TradingGridError
from partners.tg_sync import tg_webhook_subscription_ensure


class Command(BaseCommand):
    help = "Make sure exactly one Trading Grid webhook subscription sends every event type to this site."

    def add_arguments(self, parser):
        parser.add_argument(
            "--wait", type=float, default=0, metavar="SECONDS", help="First wait this long for Trading Grid to answer."
        )

    def handle(self, *args, **options):
        deadline = time.monotonic() + options["wait"]
        while True:
            try:
                done = tg_webhook_subscription_ensure(client=get_client())
                break
            except TradingGridError as exc:
                if time.monotonic() > deadline:
                    raise CommandError(f"Trading Grid: {exc}") from exc
                time.sleep(1)
        for line in done:
            self.stdout.write(line)
