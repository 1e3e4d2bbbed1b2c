"""python manage.py sync_audience [--full] [--audience LIST_ID] — sync contacts and segments to Mailchimp now."""

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from partners import services
from partners.models import MailchimpAudience, SyncKind, SyncStatus


class Command(BaseCommand):
    help = (
        "Sync partner contacts and segments to Mailchimp in this process, with a progress bar; ends with "
        "calls=N created=N updated=N unchanged=N failed=N seconds=S."
    )

    def add_arguments(self, parser):
        parser.add_argument("--full", action="store_true", help="Read statuses back, resend every contact.")
        parser.add_argument("--audience", metavar="LIST_ID", help="Only this audience (default: every partner one).")

    def handle(self, *args, **options):
        services.audience_default_ensure()
        audiences = MailchimpAudience.objects.filter(purpose="partners")
        if options["audience"]:
            audiences = MailchimpAudience.objects.filter(list_id=options["audience"])
            if not audiences:
                raise CommandError(f"--audience: no audience has the list id {options['audience']}.")
        if not audiences:
            raise CommandError("No Mailchimp audience: set MAILCHIMP_AUDIENCE_ID or add one in the admin.")
        kind = SyncKind.FULL if options["full"] else SyncKind.INCREMENTAL
        failed = False
        for audience in audiences:
            run = services.audience_sync_start(audience=audience, kind=kind, triggered_by="command", enqueue=False)
            if run.status != SyncStatus.QUEUED:
                raise CommandError(f"{audience}: sync #{run.pk} is already {run.status}; try again when it ends.")
            bar = tqdm(
                total=None, unit=" contacts", disable=not sys.stderr.isatty(), file=sys.stderr, desc=audience.name
            )

            def progress(current, bar=bar):
                bar.total = current.contacts_total or None
                bar.n = current.contacts_done
                bar.set_postfix(calls=current.calls)
                bar.refresh()

            with bar:
                run = services.audience_sync_execute(run_id=run.pk, progress=progress)
            for error in run.errors[:20]:
                self.stderr.write(error)
            self.stdout.write(run.summary)
            failed = failed or run.status != SyncStatus.SUCCEEDED
        if failed:
            raise CommandError("The sync did not finish; see the errors above and the sync run in the admin.")
