import pytest
from celery import Celery
from django.db import connection

from config import views
from config.celery_app import app as celery_app

pytestmark = pytest.mark.django_db


def test_healthz_answers_200_when_database_and_broker_answer(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == {"ok": True, "vendor": connection.vendor}
    assert body["broker"]["ok"] is True
    assert body["broker"]["transport"] == celery_app.conf.broker_url.split("://")[0]


def test_healthz_answers_503_when_the_broker_is_down(client, monkeypatch):
    # Nothing listens on loopback port 9, so this broker does not answer.
    unreachable = Celery("unreachable", broker="redis://127.0.0.1:9/0", set_as_current=False)
    monkeypatch.setattr(views, "celery_app", unreachable)

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["broker"]["ok"] is False and body["broker"]["transport"] == "redis"
    assert body["database"]["ok"] is True


def test_healthz_answers_503_when_the_database_is_down(client, monkeypatch):
    def broken_cursor(*args, **kwargs):
        raise connection.Database.OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", broken_cursor)

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["database"]["ok"] is False
    assert "connection refused" in response.json()["database"]["error"]
