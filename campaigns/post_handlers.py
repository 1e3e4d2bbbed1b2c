"""Mailchimp's `campaign` webhook (flow F1), registered with the connectors' inbox (CampaignsConfig.ready)."""

from campaigns import posts
from campaigns.models import PostOrigin
from connectors import inbox
from connectors.models import EventSource, EventStatus, InboundEvent


@inbox.register(EventSource.MAILCHIMP, "campaign")
def mailchimp_campaign_event(event: InboundEvent) -> inbox.Outcome:
    """A campaign sent becomes a community post draft, once per campaign; other statuses are kept and ignored."""
    payload = event.payload
    campaign_id, status = payload.get("campaign_id", ""), payload.get("status", "")
    if status != "sent":
        return inbox.Outcome(EventStatus.IGNORED, f"Campaign {campaign_id} is {status or 'of no status'}: only sent "
                                                  "campaigns become community posts.")
    post, created = posts.community_post_capture(
        campaign_id=campaign_id, origin=PostOrigin.WEBHOOK, subject=payload.get("subject", "")
    )
    if created:
        return inbox.Outcome(EventStatus.PROCESSED, f"Community post #{post.pk} recorded; fetching its content.")
    return inbox.Outcome(EventStatus.PROCESSED, f"Campaign {campaign_id} already has community post #{post.pk}.")
