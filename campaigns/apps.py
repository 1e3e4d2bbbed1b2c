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

        # Policy documents (F5): the document.acknowledged webhook, and per-recipient links before each send.
        import campaigns.document_handlers  # noqa: F401 - registers with the inbox
        from campaigns import services
        from campaigns.documents import distribution_send_preflight

        if distribution_send_preflight not in services.send_preflight_hooks:
            services.send_preflight_hooks.append(distribution_send_preflight)
