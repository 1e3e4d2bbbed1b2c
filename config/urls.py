from django.contrib import admin
from django.urls import path

from campaigns.document_views import document_link
from config.views import healthz
from connectors.views import mailchimp_webhook, tradinggrid_webhook

admin.site.site_header = "Partnerlink"
admin.site.site_title = "Partnerlink"
admin.site.index_title = "Partners, communications and syncs"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("webhooks/mailchimp/<str:secret>/", mailchimp_webhook, name="mailchimp-webhook"),
    path("webhooks/tradinggrid/", tradinggrid_webhook, name="tradinggrid-webhook"),
    path("d/<int:version_id>/", document_link, name="document-link-anonymous"),
    path("d/<int:version_id>/<str:key>", document_link, name="document-link"),
    path("", admin.site.urls),
]
