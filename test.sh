#!/usr/bin/env bash
# Run capsa's tests (unit tests, and as root the integration tests with real containers).
set -euo pipefail
cd "$(dirname "$0")"
# The integration tests call the installed `capsa` launcher, as managers do: install this tree first.
./setup.sh --no-demo
exec .venv/bin/python -m pytest -q "$@" tests
