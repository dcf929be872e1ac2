#!/usr/bin/env bash
# Create or refresh the local virtualenv, install the project with its test extra, run the suite.
# Usage: scripts/test.sh [pytest args...]     (exit code = pytest's)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv test
exec "$VENV/bin/python" -m pytest "$@"
