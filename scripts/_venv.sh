# Sourced by scripts/*.sh: make .venv exist and hold this project with the given extra.
# Re-installs only when pyproject.toml changed since the last install.
VENV="${P2PTRANSFER_VENV:-.venv}"
ensure_venv() {
  local extra="$1"
  local py="${PYTHON:-python3}"
  if ! command -v "$py" >/dev/null 2>&1; then
    echo "error: $py not found; install Python 3.11 or newer" >&2
    exit 127
  fi
  if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "error: Python 3.11 or newer is required ($("$py" --version 2>&1) found)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    "$py" -m venv "$VENV"
  fi
  local stamp="$VENV/.installed-$extra"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[$extra]"
    touch "$stamp"
  fi
}
