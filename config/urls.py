from django.contrib import admin
from django.urls import path

from config.views import healthz

admin.site.site_header = "Partnerlink"
admin.site.site_title = "Partnerlink"
admin.site.index_title = "Partners, communications and syncs"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("", admin.site.urls),
]
