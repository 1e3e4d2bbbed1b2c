"""Every periodic task, defined in code. `python manage.py setup_schedules` writes them to
django-celery-beat's tables (idempotent); beat only ticks, the tasks sweep due rows."""

BEAT_SCHEDULE = {
    "connectors: relay stuck inbound events": (
        "connectors.tasks.inbound_event_relay_stuck_task",
        60,
        "Re-enqueue stored webhook and poll events whose processing task was lost.",
    ),
    # name: (task, every N seconds, description)
    "partners: relay stuck imports": (
        "partners.tasks.partner_import_relay_stuck_task",
        300,
        "Re-enqueue background partner imports whose job was lost.",
    ),
}
