"""Run the Trading Grid emulator in the foreground: `python manage.py tradinggrid_emulator --port 8302 --seed-demo`.

Credentials and company default to the TRADINGGRID_* settings, so the app's client is accepted as is. Random
faults for the demo come from TRADINGGRID_EMULATOR_* variables (see connectors/tradinggrid/emulator/server.py)."""

import json
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from connectors.tradinggrid.emulator import build_state, seed, seed_demo, serve_forever
from connectors.tradinggrid.emulator.state import EmulatorError


class Command(BaseCommand):
    help = "Serve the Trading Grid / Active Community emulator (contract API + /_emulator/ control API)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8302, help="0 picks a free port.")
        parser.add_argument("--client-id", default=settings.TRADINGGRID_CLIENT_ID)
        parser.add_argument("--client-secret", default=settings.TRADINGGRID_CLIENT_SECRET)
        parser.add_argument("--company-id", default=settings.TRADINGGRID_COMPANY_ID)
        parser.add_argument("--seed-demo", action="store_true", help="Generate a small deterministic community.")
        parser.add_argument("--demo-count", type=int, default=12)
        parser.add_argument("--partners-file", type=Path,
                            help="JSON list of partner profiles (CONTRACT.md shape) to seed a community around.")
        parser.add_argument("--random-seed", type=int, default=42)
        parser.add_argument("--token-ttl", type=float, default=None, help="Seconds a token lives (default 10 h).")
        parser.add_argument("--webhook-url", action="append", default=[],
                            help="Subscribe this URL to every event type at start (repeatable).")
        parser.add_argument("--webhook-secret", default=(settings.TRADINGGRID_WEBHOOK_SECRETS or [None])[0],
                            help="whsec_ secret for --webhook-url (default: the first TRADINGGRID_WEBHOOK_SECRETS).")
        parser.add_argument("--webhook-delay-scale", type=float, default=None,
                            help="Multiply webhook retry delays (0.01 turns a day into ~15 minutes).")

    def handle(self, *args, **options):
        for name in ("client_id", "client_secret", "company_id"):
            if not options[name]:
                raise CommandError(f"--{name.replace('_', '-')} is required (or set TRADINGGRID_{name.upper()}).")
        state = build_state(
            client_id=options["client_id"],
            client_secret=options["client_secret"],
            company_id=options["company_id"],
            token_ttl=options["token_ttl"],
            webhook_delay_scale=options["webhook_delay_scale"],
            random_seed=options["random_seed"],
            environ=os.environ,
        )
        try:
            if options["partners_file"]:
                partners = json.loads(options["partners_file"].read_text())
                added = seed(state, partners, random_seed=options["random_seed"])
                self.stdout.write(f"Seeded {len(added)} partners from {options['partners_file']}.")
            if options["seed_demo"]:
                added = seed_demo(state, count=options["demo_count"], random_seed=options["random_seed"])
                self.stdout.write(f"Seeded {len(added)} demo partners.")
            for url in options["webhook_url"]:
                subscription = state.create_subscription(
                    {"url": url, "event_types": [], "secret": options["webhook_secret"]}
                )
                self.stdout.write(f"Webhooks for every event type go to {url} ({subscription['id']}).")
        except (OSError, ValueError, EmulatorError) as exc:
            raise CommandError(f"Could not prepare the emulator: {exc}")
        if state.env_faults:
            kinds = ", ".join(f"{f.kind}{'/' + str(f.status) if f.kind == 'status' else ''}" for f in state.env_faults)
            self.stdout.write(f"Random faults from the environment: {kinds}.")

        def ready(url: str) -> None:
            self.stdout.write(f"Trading Grid emulator listening on {url} (company {state.company_id})")
            self.stdout.flush()

        serve_forever(state=state, host=options["host"], port=options["port"], on_ready=ready)
