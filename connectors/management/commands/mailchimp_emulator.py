"""Serve the Mailchimp emulator: `python manage.py mailchimp_emulator --port 8301 [--seed-demo]`.

It accepts MAILCHIMP_API_KEY (Basic auth, any user; or as a Bearer token) and holds the audience
MAILCHIMP_AUDIENCE_ID. Standing faults come from MAILCHIMP_EMULATOR_* variables (see faults_from_env)."""

import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run the in-memory Mailchimp Marketing API emulator (demo and development only)."
    requires_system_checks = []  # a stand-in server: the project's checks say nothing about it

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8301)
        parser.add_argument("--seed-demo", action="store_true", help="create the demo audience, journeys, campaigns")

    def handle(self, *args, host: str, port: int, seed_demo: bool, **options):
        try:
            from connectors.mailchimp.emulator import EmulatorServer, MailchimpEmulator, faults_from_env
            from connectors.mailchimp.emulator import seed_demo as seed
        except ImportError as exc:  # openapi-core and werkzeug come with requirements/local.txt
            raise CommandError(f"The emulator needs the development requirements: {exc}") from exc
        if not settings.MAILCHIMP_API_KEY:
            raise CommandError("Set MAILCHIMP_API_KEY: the emulator accepts that key and no other.")
        if "server" in host:
            raise CommandError("The host name must not contain 'server' (the Mailchimp SDK rewrites that text).")

        faults = tuple(faults_from_env())
        emulator = MailchimpEmulator(
            api_key=settings.MAILCHIMP_API_KEY,
            list_ids=(settings.MAILCHIMP_AUDIENCE_ID,) if settings.MAILCHIMP_AUDIENCE_ID else (),
            max_connections=int(os.environ.get("MAILCHIMP_EMULATOR_MAX_CONNECTIONS") or 10),
            faults=faults,
            fault_seed=int(os.environ.get("MAILCHIMP_EMULATOR_FAULT_SEED") or 0),
        )
        server = EmulatorServer(emulator, host=host, port=port)
        self.stdout.write(f"Mailchimp emulator on {server.api_url} (control API: {server.base_url}/_emulator/state)")
        if faults:
            self.stdout.write(f"Standing faults: {json.dumps(emulator.faults.describe())}")
        if seed_demo:
            demo = seed(emulator)
            self.stdout.write(f"Demo audience {demo['list_id']}")
            for journey in demo["journeys"]:
                steps = ", ".join(f"{step['id']} {step['name']}" for step in journey["steps"])
                self.stdout.write(f"  journey {journey['id']} {journey['name']}: steps {steps}")
            automation = demo["automation"]
            self.stdout.write(f"  automation {automation['id']} {automation['title']}: emails {automation['emails']}")
            for campaign in demo["campaigns"]:
                self.stdout.write(f"  sent campaign {campaign['id']} {campaign['title']}")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("Stopped.")
