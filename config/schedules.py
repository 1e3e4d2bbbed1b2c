"""Every periodic task, defined in code. `python manage.py setup_schedules` writes them to
django-celery-beat's tables (idempotent); beat only ticks, the tasks sweep due rows.

Each entry: name -> (task, schedule, description[, kwargs]); schedule is a number of seconds or a crontab
string "minute hour day-of-month month day-of-week" (UTC)."""

BEAT_SCHEDULE = {
    "connectors: relay stuck inbound events": (
        "connectors.tasks.inbound_event_relay_stuck_task",
        60,
        "Re-enqueue stored webhook and poll events whose processing task was lost.",
    ),
    "partners: relay stuck imports": (
        "partners.tasks.partner_import_relay_stuck_task",
        300,
        "Re-enqueue background partner imports whose job was lost.",
    ),
    "partners: incremental audience sync": (
        "partners.tasks.audience_sync_due_task",
        300,
        "Send contacts and segments that changed to Mailchimp.",
        {"kind": "incremental"},
    ),
    "partners: nightly full audience sync": (
        "partners.tasks.audience_sync_due_task",
        "30 2 * * *",
        "Read every member's status back from Mailchimp, resend every contact, reconcile every segment.",
        {"kind": "full"},
    ),
    "partners: poll Trading Grid partner directory": (
        "partners.tasks.tg_partners_poll_task",
        900,
        "Apply partner profiles that changed in Trading Grid (catches missed webhooks).",
    ),
    "partners: poll Trading Grid issues": (
        "partners.tasks.tg_issues_poll_task",
        300,
        "Apply community issues changed since the stored cursor.",
    ),
    "partners: poll Lens failed transactions": (
        "partners.tasks.tg_lens_failures_poll_task",
        300,
        "Failed or rejected EDI transactions since the stored cursor become edi_transaction_failure issues.",
    ),
    "partners: relay marketing status write-back": (
        "partners.tasks.partner_marketing_status_write_back_relay_task",
        600,
        "Re-enqueue write-backs of unsubscribed/cleaned contacts to Trading Grid whose task was lost.",
    ),
    "campaigns: relay journey triggers": (
        "campaigns.tasks.journey_triggers_relay_task",
        60,
        "Re-enqueue onboarding journey triggers whose task was lost or whose worker died.",
    ),
    "campaigns: relay stuck sends": (
        "campaigns.tasks.campaign_sends_relay_stuck_task",
        60,
        "Re-enqueue approved communications, cancellations and test emails whose task was lost.",
    ),
    "campaigns: refresh delivery": (
        "campaigns.tasks.communications_refresh_delivery_task",
        300,
        "Record communications Mailchimp has finished sending (and scheduled ones it has started).",
    ),
    "campaigns: sweep sent campaigns into community posts": (
        "campaigns.tasks.community_posts_sweep_task",
        900,
        "Campaigns sent to Partnerlink's audiences recently become community post drafts (catches missed webhooks).",
    ),
    "campaigns: relay community posts": (
        "campaigns.tasks.community_posts_relay_task",
        60,
        "Re-enqueue community posts waiting to be fetched from Mailchimp or published to Trading Grid.",
    ),
    "campaigns: document reminders": (
        "campaigns.tasks.document_reminders_sweep_task",
        900,
        "Policy documents: remind contacts who have not confirmed receipt; alert partner managers after the last.",
    ),
    "campaigns: poll document acknowledgements": (
        "campaigns.tasks.document_acknowledgements_poll_task",
        600,
        "Policy documents: confirmations of receipt changed in Trading Grid since each document's cursor.",
    ),
    "campaigns: relay document ledgers": (
        "campaigns.tasks.document_ledgers_relay_task",
        60,
        "Re-enqueue document publications, reminders and alerts whose task was lost or whose worker died.",
    ),
}
