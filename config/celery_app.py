"""The Celery application. Workers and beat start with `celery -A config worker|beat`."""

import os

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun

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


@task_prerun.connect
@task_postrun.connect
def close_old_database_connections(sender=None, **kwargs):
    """Around each task, what Django does around each request: close a connection that is broken or older than
    CONN_MAX_AGE and re-arm CONN_HEALTH_CHECKS, and keep a good one (CELERY_DB_REUSE_MAX stops Celery's fixup
    from closing it every time)."""
    if getattr(getattr(sender, "request", None), "is_eager", False):
        return  # eager tasks run inside the caller's transaction: its connection is not ours to close
    from django.db import close_old_connections

    close_old_connections()
