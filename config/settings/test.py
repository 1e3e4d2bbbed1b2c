"""Test settings: the same stack as local, fast password hashing, and no network."""

from .base import *  # noqa: F401,F403
from .base import BASE_DIR, CELERY_BROKER_URL, env, filesystem_broker_options

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY", default="INSECURE-test-key-do-not-use-in-production")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Real files on disk, so a Celery worker process started by a test reads what the test stored.
MEDIA_ROOT = BASE_DIR / "var" / "test-media"
POLICY_DOCUMENT_ROOT = BASE_DIR / "var" / "test-private"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Messages the tests enqueue never reach a development worker's queue.
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(BASE_DIR / "var" / "test-celery-broker")

# Connectors point at loopback emulators started by fixtures; these fakes are what they accept.
MAILCHIMP_API_KEY = "0123456789abcdef0123456789abcdef-us21"
# End-to-end tests start the emulators as processes and pass their addresses to worker processes here.
MAILCHIMP_API_URL = env("TEST_MAILCHIMP_API_URL", default="")
MAILCHIMP_AUDIENCE_ID = "test0aud1e"
MAILCHIMP_WEBHOOK_SECRETS = ["test-mailchimp-secret-new", "test-mailchimp-secret-old"]
TRADINGGRID_API_URL = env("TEST_TRADINGGRID_API_URL", default="http://127.0.0.1:9")
TRADINGGRID_CLIENT_ID = "test-client"
TRADINGGRID_CLIENT_SECRET = "test-secret"
TRADINGGRID_COMPANY_ID = "GC00000001PL"
TRADINGGRID_WEBHOOK_SECRETS = ["whsec_dGVzdC10Zy1zZWNyZXQtbmV3", "whsec_dGVzdC10Zy1zZWNyZXQtb2xk"]
DEMO_DATA_ALLOWED = True
