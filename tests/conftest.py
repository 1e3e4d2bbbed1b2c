"""Fixtures every test gets: no network beyond loopback."""

import ipaddress
import socket

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_create_connection = socket.create_connection


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkAccessForbidden(AssertionError):
    pass


def _guard(address):
    if not _is_loopback(address):
        raise NetworkAccessForbidden(f"Tests may only connect to loopback, not to {address!r}.")


@pytest.fixture(autouse=True)
def _forbid_network(monkeypatch):
    """Any outbound connection that is not to loopback fails the test."""

    def connect(self, address):
        _guard(address)
        return _real_connect(self, address)

    def connect_ex(self, address):
        _guard(address)
        return _real_connect_ex(self, address)

    def create_connection(address, *args, **kwargs):
        _guard(address)
        return _real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)


def pytest_collection_modifyitems(config, items):
    """Tests marked `broker` need a real Redis broker and a database other processes can open."""
    from django.conf import settings

    reasons = []
    if not settings.REDIS_URL:
        reasons.append("REDIS_URL is not set (no real broker)")
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        reasons.append("DATABASE_URL is not set (SQLite test databases live in memory, out of a worker's reach)")
    if not reasons:
        return
    skip = pytest.mark.skip(reason="needs Redis and PostgreSQL: " + "; ".join(reasons))
    for item in items:
        if "broker" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def eager_tasks():
    """Run tasks in the calling process as they are enqueued (unit tests only: the broker tests and
    `make run` use real workers). Combine with django_capture_on_commit_callbacks(execute=True)."""
    from config.celery_app import app

    previous = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager, app.conf.task_eager_propagates = True, True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = previous


# --- Mailchimp emulator -------------------------------------------------------------------------------
MAILCHIMP_TEST_AUDIENCE = "test0aud1e"  # config/settings/test.py's MAILCHIMP_AUDIENCE_ID


@pytest.fixture(scope="session")
def mailchimp_emulator_session():
    from django.conf import settings

    from connectors.mailchimp.emulator import run_in_thread

    with run_in_thread(api_key=settings.MAILCHIMP_API_KEY, list_ids=(MAILCHIMP_TEST_AUDIENCE,)) as emulator:
        yield emulator


@pytest.fixture
def mailchimp_emulator(mailchimp_emulator_session, settings):
    """The session's Mailchimp emulator, empty again, with MAILCHIMP_API_URL pointing at it."""
    emulator = mailchimp_emulator_session
    emulator.reset()
    settings.MAILCHIMP_API_URL = emulator.api_url
    yield emulator
    emulator.release()


@pytest.fixture
def mailchimp_contract():
    """Every request the Mailchimp client sends is checked against the OpenAPI spec; a violation fails
    the test that caused it."""
    from connectors.mailchimp.contract import contract_check

    with contract_check() as recorder:
        yield recorder
    recorder.assert_clean()
