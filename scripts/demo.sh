#!/usr/bin/env bash
# The main job in one command: create or refresh the local virtualenv, then run the
# self-contained tour (`p2ptransfer demo`): an in-process relay on a free local port,
# two throwaway identities in a temporary directory, real transfers (one rejected),
# both ledgers printed and verified, everything removed at the end.
# Usage: scripts/demo.sh [demo options, e.g. --keep DIR]    (exit code = the demo's)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv test
exec "$VENV/bin/p2ptransfer" demo "$@"
