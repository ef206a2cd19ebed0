#!/usr/bin/env bash
# Creates .venv with Python 3.10 in the repo root and installs SICoT with pinned dependencies.
# Idempotent: a second run only re-checks the install (seconds).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

find_python310() {
  local c
  for c in "${PYTHON310:-}" python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python3.10 \
           /usr/local/bin/python3.10 /usr/bin/python3.10; do
    [[ -n "$c" ]] || continue
    if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      echo "$c"; return 0
    fi
  done
  return 1
}

if [[ ! -x .venv/bin/python ]]; then
  py=$(find_python310) || {
    echo "bootstrap: Python 3.10 not found (TFX 1.16 needs Python < 3.11). Install it, or set PYTHON310=/path/to/python3.10." >&2
    exit 1
  }
  echo "bootstrap: creating .venv with $py"
  "$py" -m venv .venv
fi

stamp=.venv/.sicot-installed
want=$(cat setup.py pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)
if [[ -f $stamp && $(cat $stamp) == "$want" ]]; then
  echo "bootstrap: .venv is up to date"
  exit 0
fi
echo "bootstrap: installing SICoT and pinned dependencies (about 2-3 minutes on a fresh machine)"
.venv/bin/python -m pip install -q --upgrade "pip==24.3.1" "setuptools==75.6.0" "wheel==0.45.1" \
  2> >(grep -v "^WARNING: Location 'file:" >&2)
# --no-build-isolation: setuptools/wheel are pinned above; the editable install maps the
# top-level folders to sicot.* subpackages (PEP 660). Pip's notes about missing local
# find-links folders of this machine's pip.conf are filtered out.
PIP_CONSTRAINT="$root/requirements/constraints.txt" \
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]" \
  2> >(grep -v "^WARNING: Location 'file:" >&2)
echo "$want" > $stamp
echo "bootstrap: done"
