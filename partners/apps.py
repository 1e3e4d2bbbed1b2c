from django.apps import AppConfig


class PartnersConfig(AppConfig):
    name = "partners"
    verbose_name = "Trading partners"

    def ready(self):
        from partners import handlers, tg_handlers  # noqa: F401 - register the inbound event handlers
