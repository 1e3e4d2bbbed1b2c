from django.apps import AppConfig


class PartnersConfig(AppConfig):
    name = "partners"
    verbose_name = "Trading partners"

    def ready(self):
        from partners import handlers  # noqa: F401 - registers the inbound event handlers
