"""python manage.py import_partners FILE [--dry-run] [--manager EMAIL]"""

import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from partners.services import partner_import_file


class Command(BaseCommand):
    help = (
        "Import a partner list (CSV, one row per contact). Nothing is written when any row has an error; "
        "ends with created=N updated=N unchanged=N errors=N and exits 1 on errors."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path of the CSV file.")
        parser.add_argument("--dry-run", action="store_true", help="Check and count, then write nothing.")
        parser.add_argument(
            "--manager",
            metavar="EMAIL",
            help="Staff user who becomes partner manager of new partners (default: none).",
        )

    def handle(self, *args, **options):
        manager = None
        if options["manager"]:
            manager = get_user_model().objects.filter(email__iexact=options["manager"], is_staff=True).first()
            if manager is None:
                raise CommandError(f"--manager: no staff user has the email {options['manager']}.")
        try:
            stream = open(options["file"], "rb")
        except OSError as exc:
            raise CommandError(f"Cannot open {options['file']}: {exc.strerror}.") from None
        bar = tqdm(unit=" rows", disable=not sys.stderr.isatty(), file=sys.stderr, dynamic_ncols=True)

        def progress(phase: str, done: int, total: int) -> None:
            bar.set_description(phase)
            if total:
                bar.total = total
            bar.n = done
            bar.refresh()

        with stream, bar:
            result = partner_import_file(
                stream=stream,
                default_manager=manager,
                dry_run=options["dry_run"],
                source_label=options["file"],
                progress=progress,
            )
        for notice in result.notices:
            self.stdout.write(notice)
        for problem in result.problems:
            self.stderr.write(str(problem))
        prefix = "dry run: " if options["dry_run"] else ""
        self.stdout.write(prefix + result.summary)
        if not result.ok:
            raise CommandError(f"Nothing was written: {result.error_rows} row(s) have errors.", returncode=1)
