import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_tradinggrid_setup_subscribes_once(tg_settings, tg_emulator, settings, capsys):
    settings.PARTNERLINK_PUBLIC_URL = "http://127.0.0.1:8000"

    call_command("tradinggrid_setup")
    call_command("tradinggrid_setup")

    subscriptions = list(tg_emulator.state.subscriptions.values())
    ours = [s for s in subscriptions if s["url"] == "http://127.0.0.1:8000/webhooks/tradinggrid/"]
    assert len(ours) == 1
    assert len(ours[0]["event_types"]) == 13
    out = capsys.readouterr().out
    assert "subscribed http://127.0.0.1:8000/webhooks/tradinggrid/ to every event type" in out
    assert "already sends to http://127.0.0.1:8000/webhooks/tradinggrid/" in out
