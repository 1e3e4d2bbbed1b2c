"""The Celery application. Workers and beat start with `celery -A config worker|beat`."""

import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("partnerlink")
# Every CELERY_* setting in Django's settings configures the app (serializers, time limits, broker).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def create_filesystem_broker_folders(sender, **kwargs):
    """kombu's filesystem transport (the embedded default) needs its folders to exist."""
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            os.makedirs(options[key], exist_ok=True)


@setup_logging.connect
def configure_logging_from_django(**kwargs):
    """Celery logs through Django's LOGGING instead of installing its own handlers."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
