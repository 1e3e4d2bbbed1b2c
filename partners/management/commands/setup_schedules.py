"""python manage.py setup_schedules — write config/schedules.py into django-celery-beat (idempotent)."""

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.schedules import BEAT_SCHEDULE


class Command(BaseCommand):
    help = "Create or update every periodic task defined in config/schedules.py; remove ones no longer defined."

    @transaction.atomic
    def handle(self, *args, **options):
        for name, (task, seconds, description) in BEAT_SCHEDULE.items():
            interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
            PeriodicTask.objects.update_or_create(
                name=name,
                defaults={"task": task, "interval": interval, "enabled": True, "description": description},
            )
        stale = PeriodicTask.objects.filter(name__regex=r"^[a-z]+: ").exclude(name__in=BEAT_SCHEDULE)
        removed = stale.count()
        stale.delete()
        self.stdout.write(f"Schedules: {len(BEAT_SCHEDULE)} defined, {removed} removed.")
