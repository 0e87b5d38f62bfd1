#!/usr/bin/env bash
# Find a Python >= 3.13 (PATH first, then pyenv), create .venv and install fhirpm with
# its test extras. Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

is_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)' 2>/dev/null; }

find_python() {
  for cand in python3.14 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && is_ok "$(command -v "$cand")"; then
      # pyenv shims answer for versions that are not selected; check that it really runs
      command -v "$cand"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[3-9])(\.|$)' | sort -V -r); do
      p="$(pyenv root)/versions/$v/bin/python3"
      if [ -x "$p" ] && is_ok "$p"; then echo "$p"; return 0; fi
    done
  fi
  return 1
}

if [ ! -x .venv/bin/python ] || ! is_ok .venv/bin/python; then
  PY="${FHIRPM_PYTHON:-$(find_python || true)}"
  if [ -z "$PY" ]; then
    echo "fhirpm needs Python >= 3.13 (none found on PATH or under pyenv)." >&2
    echo "Install one (e.g. 'pyenv install 3.13') or set FHIRPM_PYTHON=/path/to/python3.13." >&2
    exit 1
  fi
  echo "Using $PY ($("$PY" --version))" >&2
  rm -rf .venv
  "$PY" -m venv .venv
fi

stamp=.venv/.fhirpm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip >&2
  .venv/bin/python -m pip install --quiet -e ".[test]" >&2
  touch "$stamp"
fi
