#!/usr/bin/env bash
# Find a Python >= 3.13 (FHIRPM_PYTHON, then PATH, then pyenv's versions), create .venv and
# install fhirpm with its test extras. Quiet when all is well (pip -qq prints errors only,
# on stderr). Installs again only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

is_ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)' 2>/dev/null; }

find_python() {
  local cand p root
  for cand in python3.14 python3.13 python3; do
    # a pyenv shim for a version that is not selected fails is_ok, so it is skipped here
    if p="$(command -v "$cand" 2>/dev/null)" && is_ok "$p"; then echo "$p"; return 0; fi
  done
  # pyenv's versions, newest first, even when pyenv is not on PATH (non-login shells, CI)
  root="$( (pyenv root 2>/dev/null) || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
  for v in $(ls "$root/versions" 2>/dev/null | grep -E '^3\.[0-9]+(\.[0-9]+)?$' | sort -V -r); do
    p="$root/versions/$v/bin/python3"
    if [ -x "$p" ] && is_ok "$p"; then echo "$p"; return 0; fi
  done
  return 1
}

if [ ! -x .venv/bin/python ] || ! is_ok .venv/bin/python; then
  PY="${FHIRPM_PYTHON:-$(find_python || true)}"
  if [ -z "$PY" ] || ! is_ok "$PY"; then
    echo "fhirpm needs Python >= 3.13; none found (FHIRPM_PYTHON, PATH, pyenv versions)." >&2
    echo "Install one (e.g. 'pyenv install 3.13') or set FHIRPM_PYTHON=/path/to/python3.13." >&2
    exit 1
  fi
  echo "bootstrap: creating .venv with $PY ($("$PY" --version 2>&1))" >&2
  rm -rf .venv
  "$PY" -m venv .venv
fi

stamp=.venv/.fhirpm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ ! -x .venv/bin/fhirpm ]; then
  echo "bootstrap: installing fhirpm and its test dependencies into .venv" >&2
  if ! .venv/bin/python -m pip install -qq --disable-pip-version-check -e ".[test]"; then
    echo "bootstrap: pip install failed (see above); nothing was marked installed" >&2
    exit 1
  fi
  touch "$stamp"
fi
