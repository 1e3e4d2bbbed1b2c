"""Local development and `make run`: loud fake secrets, embedded SQLite and filesystem broker
unless DATABASE_URL / REDIS_URL say otherwise."""

from .base import *  # noqa: F401,F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="INSECURE-local-dev-key-do-not-use-in-production")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

# The emulators `make run` starts (ports 8301 and 8302), with fake credentials they accept.
MAILCHIMP_API_KEY = env("MAILCHIMP_API_KEY", default="0123456789abcdef0123456789abcdef-us21")
MAILCHIMP_API_URL = env("MAILCHIMP_API_URL", default="http://127.0.0.1:8301/3.0")
MAILCHIMP_AUDIENCE_ID = env("MAILCHIMP_AUDIENCE_ID", default="demo0aud1e")
MAILCHIMP_WEBHOOK_SECRETS = env.list("MAILCHIMP_WEBHOOK_SECRETS", default=["INSECURE-local-mailchimp-webhook-secret"])
TRADINGGRID_API_URL = env("TRADINGGRID_API_URL", default="http://127.0.0.1:8302")
TRADINGGRID_CLIENT_ID = env("TRADINGGRID_CLIENT_ID", default="INSECURE-local-client")
TRADINGGRID_CLIENT_SECRET = env("TRADINGGRID_CLIENT_SECRET", default="INSECURE-local-secret")
TRADINGGRID_COMPANY_ID = env("TRADINGGRID_COMPANY_ID", default="GC00000001PL")
TRADINGGRID_WEBHOOK_SECRETS = env.list(
    "TRADINGGRID_WEBHOOK_SECRETS", default=["whsec_SU5TRUNVUkUtbG9jYWwtdGctd2ViaG9vay1zZWNyZXQ="]
)
