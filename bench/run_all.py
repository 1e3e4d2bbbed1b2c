"""`make bench`: every benchmark in bench/, one after the other. Arguments go to each of them (each ignores the
others', e.g. `--rows` or `--events`)."""

import subprocess
import sys
from pathlib import Path

BENCHES = ["import_partners.py", "sync_audience.py", "tg_ingest.py"]

if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    failed = 0
    for bench in BENCHES:
        print(f"=== {bench}", flush=True)
        failed |= subprocess.run([sys.executable, str(here / bench), *sys.argv[1:]]).returncode
    sys.exit(failed)
