#!/usr/bin/env bash
# Installs headless Chromium (Debian package `chromium`) for the tests that render HTML reports
# (tests/conftest.py calls this when no chromium binary is found). Needs apt-get and root (or
# passwordless sudo). Idempotent: does nothing when chromium is already installed.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: apt-get not found; install the Debian/Ubuntu package 'chromium' (or put a chromium binary on PATH)" >&2
  exit 1
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  sudo="sudo -n"
fi
echo "install_chromium: apt-get install chromium (about 100 MB, once)" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium
