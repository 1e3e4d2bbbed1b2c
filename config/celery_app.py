"""The Celery application. Workers and beat start with `celery -A config worker|beat`."""

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("partnerlink")
# Every CELERY_* setting in Django's settings configures the app (serializers, time limits, broker).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def configure_logging_from_django(**kwargs):
    """Celery logs through Django's LOGGING instead of installing its own handlers."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
