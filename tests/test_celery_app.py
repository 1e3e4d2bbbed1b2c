"""Workers keep their database connection from one task to the next, as web workers do between requests."""

from types import SimpleNamespace

from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun

from config.celery_app import app


class _Task:
    def __init__(self, *, eager: bool):
        self.request = SimpleNamespace(is_eager=eager)


def _task(*, eager: bool) -> _Task:
    return _Task(eager=eager)


def test_celerys_fixup_no_longer_closes_the_connection_around_every_task(monkeypatch):
    fixup = DjangoWorkerFixup(app)
    closed = []
    connection = SimpleNamespace(alias="default", close=lambda: closed.append(1))
    monkeypatch.setattr(fixup._db.connections, "all", lambda **kwargs: [connection])

    for _ in range(1000):
        fixup.on_task_prerun(sender=_task(eager=False))
        fixup.on_task_postrun(sender=_task(eager=False))

    # Without CELERY_DB_REUSE_MAX every task opened a new PostgreSQL connection (2000 closes here).
    assert closed == []


def test_old_or_broken_connections_are_closed_around_each_task_as_around_each_request(monkeypatch):
    calls = []
    monkeypatch.setattr("django.db.close_old_connections", lambda: calls.append(1))

    for signal in (task_prerun, task_postrun):
        signal.send(sender=_task(eager=False), task_id="t1", task=None, args=(), kwargs={})
    assert len(calls) == 2

    for signal in (task_prerun, task_postrun):
        signal.send(sender=_task(eager=True), task_id="t2", task=None, args=(), kwargs={})
    assert len(calls) == 2  # an eager task runs in its caller's transaction: its connection stays
