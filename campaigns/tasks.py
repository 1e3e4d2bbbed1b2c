"""Celery tasks for communications: thin, ids only; transient failures retry with backoff and jitter."""

import random

from celery import shared_task

from campaigns import journeys, services
from connectors.mailchimp.errors import MailchimpTransientError

# Another worker holds the communication's lease: it is usually done within seconds.
BUSY_RETRY_SECONDS = 10
# A segment never synced: an audience sync was started; look again after it has had time to run.
SEGMENTS_RETRY_SECONDS = 60


def _backoff(retries: int, retry_after: float | None = None) -> float:
    backoff = min(900, 15 * 2**retries)
    return max(retry_after or 0, backoff * (0.5 + random.random() / 2))


@shared_task(bind=True, max_retries=8, acks_late=True)
def communication_send_task(self, send_id: int) -> None:
    """Hand an approved communication to Mailchimp (exactly once; see services.communication_send_execute)."""
    try:
        services.communication_send_execute(send_id=send_id)
    except (MailchimpTransientError, services.SegmentsNotReady, services.CommunicationBusy) as exc:
        if self.request.retries >= self.max_retries:
            services.communication_send_give_up(
                send_id=send_id, reason=f"Gave up after {self.max_retries} retries: {exc}"
            )
            return
        if isinstance(exc, services.CommunicationBusy):
            countdown = BUSY_RETRY_SECONDS * (1 + random.random())
        elif isinstance(exc, services.SegmentsNotReady):
            countdown = SEGMENTS_RETRY_SECONDS * (1 + random.random() / 2)
        else:
            countdown = _backoff(self.request.retries, exc.retry_after)
        busy = isinstance(exc, services.CommunicationBusy)  # not an error: another run is at it
        services.campaign_send_note_retry(send_id=send_id, countdown=countdown, error="" if busy else str(exc))
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(bind=True, max_retries=5, acks_late=True)
def communication_prepare_task(self, send_id: int) -> None:
    """Create or refresh the Mailchimp draft for the approver's checklist and preview."""
    try:
        services.communication_prepare_execute(send_id=send_id)
    except (MailchimpTransientError, services.CommunicationBusy) as exc:
        if self.request.retries >= self.max_retries:
            return  # a preview only: the page offers to refresh it
        retry_after = getattr(exc, "retry_after", None)
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries, retry_after)) from exc


@shared_task(bind=True, max_retries=8, acks_late=True)
def communication_cancel_task(self, send_id: int) -> None:
    """Unschedule a scheduled communication in Mailchimp and record the outcome."""
    try:
        services.communication_cancel_execute(send_id=send_id)
    except (MailchimpTransientError, services.CommunicationBusy) as exc:
        if self.request.retries >= self.max_retries:
            return  # still `cancelling`: the relay tries again
        retry_after = getattr(exc, "retry_after", None)
        countdown = _backoff(self.request.retries, retry_after)
        busy = isinstance(exc, services.CommunicationBusy)
        services.campaign_send_note_retry(send_id=send_id, countdown=countdown, error="" if busy else str(exc))
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(bind=True, max_retries=4, acks_late=True)
def communication_test_email_task(self, test_email_id: int) -> None:
    """Send one test email through Mailchimp's test endpoint."""
    try:
        services.communication_test_email_execute(test_email_id=test_email_id)
    except (MailchimpTransientError, services.CommunicationBusy) as exc:
        if self.request.retries >= self.max_retries:
            services.communication_test_email_give_up(
                test_email_id=test_email_id, reason=f"Gave up after {self.max_retries} retries: {exc}"
            )
            return
        retry_after = getattr(exc, "retry_after", None)
        raise self.retry(exc=exc, countdown=min(120, _backoff(self.request.retries, retry_after))) from exc


@shared_task
def campaign_sends_relay_stuck_task() -> int:
    """Beat: re-enqueue sends, cancellations and test emails whose task message was lost."""
    return services.campaign_sends_relay_stuck()


@shared_task
def communications_refresh_delivery_task() -> int:
    """Beat: record sends Mailchimp has finished (and scheduled ones it has started)."""
    return services.communications_refresh_delivery()


@shared_task(bind=True, max_retries=8, acks_late=True)
def journey_trigger_dispatch_task(self, trigger_id: int) -> None:
    try:
        journeys.journey_trigger_dispatch(trigger_id=trigger_id)
    except MailchimpTransientError as exc:
        if self.request.retries >= self.max_retries:
            return  # the row stays pending; the beat relay keeps trying it
        backoff = min(600, 5 * 2**self.request.retries)
        raise self.retry(exc=exc, countdown=max(exc.retry_after or 0, backoff * (0.5 + random.random() / 2))) from exc


@shared_task
def journey_triggers_relay_task() -> int:
    """Beat: re-enqueue journey triggers whose task was lost or whose worker died."""
    return journeys.journey_triggers_relay()


# --- Community posts (flow F1) ------------------------------------------------------------------------


@shared_task(bind=True, max_retries=8, acks_late=True)
def community_post_import_task(self, post_id: int) -> None:
    """Fetch a sent campaign's content from Mailchimp and make the community post draft."""
    from campaigns import posts

    try:
        posts.community_post_import_execute(post_id=post_id)
    except (MailchimpTransientError, posts.CampaignNotSentYet) as exc:
        if self.request.retries >= self.max_retries:
            reason = f"Gave up after {self.max_retries} retries: {exc}"
            posts.community_post_import_give_up(post_id=post_id, reason=reason)
            return
        countdown = _backoff(self.request.retries, getattr(exc, "retry_after", None))
        posts.community_post_note_retry(post_id=post_id, countdown=countdown, error=str(exc))
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(bind=True, max_retries=8, acks_late=True)
def community_post_publish_task(self, post_id: int) -> None:
    """Publish an approved community post to Trading Grid (one post per campaign; see posts.py)."""
    from campaigns import posts
    from connectors.tradinggrid.errors import TradingGridTransientError

    try:
        posts.community_post_publish_execute(post_id=post_id)
    except (TradingGridTransientError, posts.PostBusy) as exc:
        if self.request.retries >= self.max_retries:
            reason = f"Gave up after {self.max_retries} retries: {exc}"
            posts.community_post_publish_give_up(post_id=post_id, reason=reason)
            return
        busy = isinstance(exc, posts.PostBusy)
        if busy:
            countdown = BUSY_RETRY_SECONDS * (1 + random.random())
        else:
            countdown = _backoff(self.request.retries, exc.retry_after)
        posts.community_post_note_retry(post_id=post_id, countdown=countdown, error="" if busy else str(exc))
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task
def community_posts_sweep_task() -> int:
    """Beat: recently sent campaigns without a community post get one (catches missed webhooks)."""
    from campaigns import posts

    return posts.community_posts_sweep_sent().created


@shared_task
def community_posts_relay_task() -> int:
    """Beat: re-enqueue community posts waiting to be fetched or published whose task was lost."""
    from campaigns import posts

    return posts.community_posts_relay_stuck()


# --- Policy documents (flow F5; campaigns/documents.py) ---------------------------------------------------


def _documents():
    from campaigns import documents

    return documents


@shared_task(bind=True, max_retries=8, acks_late=True)
def document_publication_task(self, publication_id: int) -> None:
    """Publish an approved document version to the Trading Grid community (exactly once)."""
    from connectors.tradinggrid.errors import TradingGridTransientError

    documents = _documents()
    try:
        documents.document_publication_execute(publication_id=publication_id)
    except (TradingGridTransientError, documents.DocumentBusy) as exc:
        if self.request.retries >= self.max_retries:
            documents.document_publication_give_up(
                publication_id=publication_id, reason=f"Gave up after {self.max_retries} retries: {exc}"
            )
            return
        busy = isinstance(exc, documents.DocumentBusy)
        countdown = BUSY_RETRY_SECONDS * (1 + random.random()) if busy else _backoff(
            self.request.retries, getattr(exc, "retry_after", None)
        )
        documents.document_publication_note_retry(
            publication_id=publication_id, countdown=countdown, error="" if busy else str(exc)
        )
        raise self.retry(exc=exc, countdown=countdown) from exc


@shared_task(bind=True, max_retries=8, acks_late=True)
def document_reminder_dispatch_task(self, reminder_id: int) -> None:
    """One reminder through Mailchimp (tag and/or journey step)."""
    try:
        _documents().document_reminder_dispatch(reminder_id=reminder_id)
    except MailchimpTransientError as exc:
        if self.request.retries >= self.max_retries:
            return  # the row stays pending; the beat relay keeps trying it
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries, exc.retry_after)) from exc


@shared_task(bind=True, max_retries=8, acks_late=True)
def document_alert_dispatch_task(self, version_id: int, partner_id: int | None) -> None:
    """The alert to a partner manager about contacts who did not confirm after the last reminder."""
    documents = _documents()
    try:
        documents.document_alert_dispatch(version_id=version_id, partner_id=partner_id)
    except documents.ALERT_ERRORS as exc:
        if self.request.retries >= self.max_retries:
            return  # the rows stay pending; the beat relay keeps trying them
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task
def document_reminders_sweep_task() -> str:
    """Beat: due reminder stages of document distributions become ledger rows, enqueued once."""
    return str(_documents().document_reminders_sweep())


@shared_task
def document_ledgers_relay_task() -> int:
    """Beat: re-enqueue document publications, reminders and alerts whose task was lost."""
    return _documents().document_reminders_relay()


@shared_task(bind=True, max_retries=3)
def document_acknowledgements_poll_task(self) -> str:
    """Beat: acknowledgements changed in Trading Grid since each document's cursor."""
    from connectors.tradinggrid.errors import TradingGridTransientError

    try:
        return str(_documents().document_acknowledgements_poll_from_tg())
    except TradingGridTransientError as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries, exc.retry_after)) from exc
