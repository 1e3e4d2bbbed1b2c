"""Production: refuses to start without its secrets and real services."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import env

REQUIRED = (
    "DJANGO_SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "PARTNERLINK_PUBLIC_URL",
    "MAILCHIMP_API_KEY",
    "MAILCHIMP_WEBHOOK_SECRETS",
    "TRADINGGRID_CLIENT_ID",
    "TRADINGGRID_CLIENT_SECRET",
    "TRADINGGRID_WEBHOOK_SECRETS",
)
_missing = [name for name in REQUIRED if not env.str(name, default="").strip()]
if _missing:
    raise ImproperlyConfigured("Production settings need these environment variables: " + ", ".join(_missing))

DEBUG = False
DEMO_DATA_ALLOWED = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
if SECRET_KEY.startswith("INSECURE") or len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be a real secret of at least 32 characters.")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 30)
SECURE_CONTENT_TYPE_NOSNIFF = True
