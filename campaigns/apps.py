from django.apps import AppConfig


class CampaignsConfig(AppConfig):
    name = "campaigns"
    verbose_name = "Communications"

    def ready(self):
        from campaigns import post_handlers  # noqa: F401 - registers the Mailchimp `campaign` webhook handler
        from campaigns.journeys import journey_triggers_record
        from partners.tg_sync import partner_change_listeners

        if journey_triggers_record not in partner_change_listeners:
            partner_change_listeners.append(journey_triggers_record)
