"""Production refuses to start without its secrets; .env.example documents every variable."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPLETE_ENV = {
    "DJANGO_SECRET_KEY": "a-real-secret-of-more-than-thirty-two-characters-0123456789",
    "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/partnerlink",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DJANGO_ALLOWED_HOSTS": "partnerlink.example.com",
    "PARTNERLINK_PUBLIC_URL": "https://partnerlink.example.com",
    "MAILCHIMP_API_KEY": "0123456789abcdef0123456789abcdef-us21",
    "MAILCHIMP_WEBHOOK_SECRETS": "s1",
    "TRADINGGRID_CLIENT_ID": "client",
    "TRADINGGRID_CLIENT_SECRET": "secret",
    "TRADINGGRID_WEBHOOK_SECRETS": "whsec_c2VjcmV0",
}


def load_production_settings(env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in COMPLETE_ENV and not k.startswith("DJANGO_")}
    clean.update(env, DJANGO_SETTINGS_MODULE="config.settings.production")
    code = "import django; django.setup(); from django.conf import settings; print('DEBUG', settings.DEBUG)"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True)


def test_production_starts_with_every_secret():
    result = load_production_settings(COMPLETE_ENV)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "DEBUG False"


def test_production_refuses_to_start_without_its_secrets():
    env = dict(COMPLETE_ENV)
    del env["DATABASE_URL"], env["TRADINGGRID_CLIENT_SECRET"]

    result = load_production_settings(env)

    assert result.returncode != 0
    assert "Production settings need these environment variables: DATABASE_URL, TRADINGGRID_CLIENT_SECRET" in (
        result.stderr
    )


def test_production_refuses_a_fake_secret_key():
    result = load_production_settings({**COMPLETE_ENV, "DJANGO_SECRET_KEY": "INSECURE-local-dev-key"})

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be a real secret" in result.stderr


def test_env_example_documents_every_variable_the_settings_read():
    settings_text = "".join(p.read_text() for p in (ROOT / "config" / "settings").glob("*.py"))
    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z_]+)"', settings_text))
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))

    assert read - documented == set()
