"""python manage.py setup_schedules — write config/schedules.py into django-celery-beat (idempotent)."""

import json

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from config.schedules import BEAT_SCHEDULE


class Command(BaseCommand):
    help = "Create or update every periodic task defined in config/schedules.py; remove ones no longer defined."

    @transaction.atomic
    def handle(self, *args, **options):
        for name, (task, schedule, description, *rest) in BEAT_SCHEDULE.items():
            kwargs = rest[0] if rest else {}
            defaults = {
                "task": task,
                "enabled": True,
                "description": description,
                "kwargs": json.dumps(kwargs),
                "interval": None,
                "crontab": None,
            }
            if isinstance(schedule, int):
                defaults["interval"], _ = IntervalSchedule.objects.get_or_create(
                    every=schedule, period=IntervalSchedule.SECONDS
                )
            else:
                minute, hour, day_of_month, month_of_year, day_of_week = schedule.split()
                defaults["crontab"], _ = CrontabSchedule.objects.get_or_create(
                    minute=minute,
                    hour=hour,
                    day_of_month=day_of_month,
                    month_of_year=month_of_year,
                    day_of_week=day_of_week,
                    timezone="UTC",
                )
            PeriodicTask.objects.update_or_create(name=name, defaults=defaults)
        # Schedules this command wrote earlier ("app: what") and no longer defined; hand-made ones stay.
        stale = PeriodicTask.objects.filter(name__regex=r"^[a-z]+: ").exclude(name__in=BEAT_SCHEDULE)
        removed = stale.count()
        stale.delete()
        self.stdout.write(f"Schedules: {len(BEAT_SCHEDULE)} defined, {removed} removed.")
