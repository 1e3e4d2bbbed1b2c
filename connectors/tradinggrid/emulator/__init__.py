"""A stateful, thread-safe stand-in for Trading Grid / Active Community: everything in CONTRACT.md, plus a
control API under /_emulator/ to act as Trading Grid (create partners, raise issues, acknowledge documents…),
fault injection, and Standard Webhooks sent to subscribed URLs. For tests and the demo only.

    with run_in_thread(client_id="c", client_secret="s", company_id="GC00000001PL") as tg:
        settings.TRADINGGRID_API_URL = tg.url
        tg.state.create_partner({...}, emit=True)
"""

from .app import EmulatorApp, create_app
from .seed import demo_partners, failed_transactions_for, seed, seed_demo
from .server import RunningEmulator, build_state, faults_from_env, run_in_thread, serve_forever
from .state import EmulatorError, EmulatorState, FaultRule

__all__ = [
    "EmulatorApp",
    "EmulatorError",
    "EmulatorState",
    "FaultRule",
    "RunningEmulator",
    "build_state",
    "create_app",
    "demo_partners",
    "failed_transactions_for",
    "faults_from_env",
    "run_in_thread",
    "seed",
    "seed_demo",
    "serve_forever",
]
