"""A stateful, thread-safe stand-in for Trading Grid / Active Community: everything in CONTRACT.md, plus a
control API to act as Trading Grid, fault injection, and Standard Webhooks sent to subscribed URLs.
For tests and the demo only; the connector's client never imports it.

In tests (credentials default to the TRADINGGRID_* settings):

    with run_in_thread() as tg:
        settings.TRADINGGRID_API_URL = tg.url
        tg.state.create_partner({...}, emit=True)     # or tg.control("POST", "/_emulator/partners", {...})
        tg.state.wait_for_deliveries()

For the demo: `python manage.py tradinggrid_emulator --port 8302 [--seed-demo] [--partners-file partners.json]
[--webhook-url http://127.0.0.1:8000/webhooks/tradinggrid/]`.

Control API (no auth, never faulted), JSON in and out:
    GET    /_emulator/health | /_emulator/state | /_emulator/requests
    GET    /_emulator/webhooks/deliveries?status=&type=     (each with its attempts)
    POST   /_emulator/reset {seed_demo?, count?, seed?}
    POST   /_emulator/seed {partners: [...], seed?} | {demo: true, count?, seed?}
    POST   /_emulator/config {page_size_cap?, token_ttl?}   POST /_emulator/tokens/expire
    GET/POST/DELETE /_emulator/faults  {kind: status|drop|latency, status, retry_after, body, seconds, method, path
                                        (glob), times (null: forever), probability} or {rules: [...]}
    POST   /_emulator/webhooks/config {delay_scale?, retry_schedule?, timeout?}
    POST   /_emulator/partners                               -> partner.created
    POST   /_emulator/partners/<buid>/status {onboarding_status}   -> partner.status_changed
    PATCH  /_emulator/partners/<buid>/profile {...}          -> partner.updated (+ status_changed)
    POST   /_emulator/partners/<buid>/contacts               -> partner.contact.created
    PATCH|DELETE /_emulator/partners/<buid>/contacts/<email> -> partner.contact.updated | .removed
    POST   /_emulator/issues                                 -> issue.created
    PATCH  /_emulator/issues/<id>; POST /_emulator/issues/<id>/status {status}  -> issue.updated / issue.status_changed
    POST   /_emulator/documents/<id>/acknowledgements        -> document.acknowledged
    POST   /_emulator/events/<id>/registrations | attendance | questions
           -> event.registration.created | event.attendance.recorded | event.question.created
    POST   /_emulator/lens/transactions {transactions: [...]} | {generate: {partner_company_id?, count?, status?,
                                                                             fastatus?, editype?}}

Environment (the demo; tests set faults per test instead): TRADINGGRID_EMULATOR_FAULT_429_RATE,
TRADINGGRID_EMULATOR_RETRY_AFTER, TRADINGGRID_EMULATOR_FAULT_500_RATE, TRADINGGRID_EMULATOR_FAULT_503_RATE,
TRADINGGRID_EMULATOR_FAULT_DROP_RATE, TRADINGGRID_EMULATOR_LATENCY_MS, TRADINGGRID_EMULATOR_TOKEN_TTL,
TRADINGGRID_EMULATOR_WEBHOOK_DELAY_SCALE, TRADINGGRID_EMULATOR_SEED.
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
