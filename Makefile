# Partnerlink: `make run` starts the whole product; `make test` runs the suite.
# With DATABASE_URL / REDIS_URL set, both use PostgreSQL and Redis instead of the embedded default.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-local

.PHONY: venv run test test-fast bench lint migrate seed clean

venv: $(STAMP)

$(STAMP): requirements/base.txt requirements/local.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/local.txt
	@touch $(STAMP)

migrate: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_schedules

seed: migrate
	$(PY) manage.py seed_demo --export var/demo-partners.json

run: seed
	@echo "Starting web (http://127.0.0.1:8000), worker, beat and the Mailchimp (:8301) and Trading Grid (:8302) emulators. Ctrl-C stops them all."
	exec $(VENV)/bin/honcho -f Procfile.dev start

test: venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/run_all.py $(BENCH_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf var/celery-broker staticfiles .pytest_cache
