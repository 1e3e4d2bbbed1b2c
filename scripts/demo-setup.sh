#!/bin/sh
# Run by `make run` beside web, worker, beat and the emulators: once the site and the emulators answer,
# register the Mailchimp webhook and merge fields, subscribe to Trading Grid's webhooks, and sync the demo
# contacts. Then it idles, because honcho stops every process when one of them exits.
.venv/bin/python manage.py mailchimp_setup --wait 120 \
  && .venv/bin/python manage.py tradinggrid_setup --wait 60 \
  && .venv/bin/python manage.py sync_audience \
  && echo "Partnerlink demo is ready: http://127.0.0.1:8000/"
exec sleep infinity
