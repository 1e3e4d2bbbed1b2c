"""A stateful stand-in for the Mailchimp Marketing API, for the demo and the tests (dev/test only: it
needs openapi-core and werkzeug from requirements/local.txt).

    with run_in_thread() as emulator:          # free loopback port, audience "test0aud1e"
        settings.MAILCHIMP_API_URL = emulator.api_url
        emulator.faults.add(Fault(status=429, retry_after=2))
        emulator.unsubscribe_member(list_id="test0aud1e", email="a@example.com")

From the shell: `python manage.py mailchimp_emulator --port 8301 --seed-demo`.
"""

from .app import MailchimpEmulator
from .demo import seed_demo
from .faults import Fault, faults_from_env
from .problems import Problem
from .server import DEFAULT_API_KEY, EmulatorServer, run_in_thread

__all__ = [
    "DEFAULT_API_KEY",
    "EmulatorServer",
    "Fault",
    "MailchimpEmulator",
    "Problem",
    "faults_from_env",
    "run_in_thread",
    "seed_demo",
]
