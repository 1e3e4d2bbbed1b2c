from django.contrib import admin
from django.urls import path

from config.views import healthz
from connectors.views import mailchimp_webhook, tradinggrid_webhook

admin.site.site_header = "Partnerlink"
admin.site.site_title = "Partnerlink"
admin.site.index_title = "Partners, communications and syncs"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("webhooks/mailchimp/<str:secret>/", mailchimp_webhook, name="mailchimp-webhook"),
    path("webhooks/tradinggrid/", tradinggrid_webhook, name="tradinggrid-webhook"),
    path("", admin.site.urls),
]
