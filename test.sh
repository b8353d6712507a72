#!/usr/bin/env bash
# Run capsa's tests (unit tests, and as root the integration tests with real containers).
set -euo pipefail
cd "$(dirname "$0")"
exec .venv/bin/python -m pytest -q "$@" tests
