"""The one public page of policy documents: the distribution link. It records the click and sends the reader on
to the document's page in the Trading Grid community (campaigns/documents.py: document_link_follow)."""

from django.http import Http404, HttpResponseRedirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from campaigns import documents


@never_cache
@require_GET
def document_link(request, version_id: int, key: str = ""):
    target = documents.document_link_follow(version_id=version_id, key=key)
    if target is None:
        raise Http404("This document is not available.")
    response = HttpResponseRedirect(target)
    response["Referrer-Policy"] = "no-referrer"  # the reader's key stays here
    return response
