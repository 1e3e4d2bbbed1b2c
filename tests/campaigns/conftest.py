from tests.connectors.tradinggrid.conftest import (  # noqa: F401
    tg_emulator,
    tg_emulator_server,
    tg_settings,
    webhook_receiver,
)
from tests.partners.conftest import tg  # noqa: F401 - fixtures reused for journeys
