from django.apps import AppConfig
from django.db.models.signals import post_migrate


class PartnersConfig(AppConfig):
    name = "partners"
    verbose_name = "Trading partners"

    def ready(self):
        from partners import handlers, tg_handlers  # noqa: F401 - register the inbound event handlers
        from partners.groups import groups_sync

        post_migrate.connect(groups_sync, dispatch_uid="partners.groups_sync")
