"""Settings shared by every environment. Everything configurable comes from the environment
(django-environ); `.env.example` documents each variable."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(str(BASE_DIR / ".env"))

# --- Core -------------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_celery_beat",
    "django_countries",
    "import_export",
    "connectors",
    "partners",
    "campaigns",
    "lifecycle",
    "engagement",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------
# Embedded default: SQLite under var/. DATABASE_URL switches to PostgreSQL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'partnerlink.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: WAL lets readers run beside one writer, IMMEDIATE
    # transactions take the write lock up front instead of failing halfway with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and broker -------------------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth -------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"

# --- I18N and time ----------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media -------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env("DJANGO_MEDIA_ROOT", default=str(VAR_DIR / "media")))
MEDIA_URL = "media/"  # never served publicly: uploads are read back by the app only
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- Celery -----------------------------------------------------------------------------------
# Embedded default: kombu's filesystem transport under var/, so a worker and beat really run on a
# machine with nothing but Python. REDIS_URL switches to Redis.
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_BROKER_FOLDER = Path(env("CELERY_BROKER_FOLDER", default=str(VAR_DIR / "celery-broker")))


def filesystem_broker_options(folder: Path) -> dict:
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
    }


if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(CELERY_BROKER_FOLDER)
else:
    # Longer than any task's hard limit, so Redis never hands a running task to a second worker.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# The queue tasks are sent to and workers read by default; installations sharing one Redis can differ here.
CELERY_TASK_DEFAULT_QUEUE = env("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# State lives in our own ledger and run tables, not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=600)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=660)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = False
# Celery's Django fixup closes the database connection before and after every task unless this is set, so each
# task would open a new PostgreSQL connection (a new server process) whatever CONN_MAX_AGE says. With it, the
# fixup leaves the connection alone and config/celery_app.py closes old or broken connections around each task
# the way Django does around each request.
CELERY_DB_REUSE_MAX = 1_000_000

# --- Partnerlink ------------------------------------------------------------------------------
# Files with more rows than this are imported by a Celery job instead of inside the request.
PARTNER_IMPORT_SYNC_MAX_ROWS = env.int("PARTNER_IMPORT_SYNC_MAX_ROWS", default=5000)
PARTNER_IMPORT_MAX_BYTES = env.int("PARTNER_IMPORT_MAX_BYTES", default=100 * 1024 * 1024)
# `seed_demo` runs with DEBUG on, or when this is set; production never allows it.
DEMO_DATA_ALLOWED = env.bool("DEMO_DATA_ALLOWED", default=False)

# The address Mailchimp and Trading Grid reach this site at; webhooks are registered under it.
PARTNERLINK_PUBLIC_URL = env("PARTNERLINK_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")

# Policy documents (F5): stored outside any URL (only staff download them, through the admin), and at most this big.
POLICY_DOCUMENT_ROOT = Path(env("POLICY_DOCUMENT_ROOT", default=str(VAR_DIR / "private")))
POLICY_DOCUMENT_MAX_BYTES = env.int("POLICY_DOCUMENT_MAX_BYTES", default=20 * 1024 * 1024)

# --- Email (alerts to partner managers) ------------------------------------------------------
# smtp://user:password@host:587/?tls=True in production; the default prints emails to the console.
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Partnerlink <partnerlink@localhost>")

# --- Mailchimp (connectors/mailchimp) ---------------------------------------------------------
MAILCHIMP_API_KEY = env("MAILCHIMP_API_KEY", default="")
# The data centre; taken from the API key's suffix (…-us21) when empty.
MAILCHIMP_SERVER_PREFIX = env("MAILCHIMP_SERVER_PREFIX", default="")
# Base URL override, e.g. http://127.0.0.1:8301/3.0 for the emulator. Empty: https://<dc>.api.mailchimp.com/3.0
MAILCHIMP_API_URL = env("MAILCHIMP_API_URL", default="")
MAILCHIMP_TIMEOUT = env.float("MAILCHIMP_TIMEOUT", default=10.0)
MAILCHIMP_MAX_CONNECTIONS = env.int("MAILCHIMP_MAX_CONNECTIONS", default=10)
MAILCHIMP_AUDIENCE_ID = env("MAILCHIMP_AUDIENCE_ID", default="")
MAILCHIMP_WEBHOOK_SECRETS = env.list("MAILCHIMP_WEBHOOK_SECRETS", default=[])

# --- Trading Grid (connectors/tradinggrid) ------------------------------------------------------
TRADINGGRID_API_URL = env("TRADINGGRID_API_URL", default="https://apigrid.opentext.com")
TRADINGGRID_CLIENT_ID = env("TRADINGGRID_CLIENT_ID", default="")
TRADINGGRID_CLIENT_SECRET = env("TRADINGGRID_CLIENT_SECRET", default="")
TRADINGGRID_COMPANY_ID = env("TRADINGGRID_COMPANY_ID", default="")
TRADINGGRID_WEBHOOK_SECRETS = env.list("TRADINGGRID_WEBHOOK_SECRETS", default=[])
TRADINGGRID_TIMEOUT = env.float("TRADINGGRID_TIMEOUT", default=15.0)

# --- Logging ----------------------------------------------------------------------------------
LOG_LEVEL = env("DJANGO_LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "celery": {"level": LOG_LEVEL},
    },
}
