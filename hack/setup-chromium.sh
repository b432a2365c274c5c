#!/usr/bin/env bash
# Installs (once) Debian's Chromium and its matching chromedriver, which the console's browser
# tests drive through Selenium (tests/e2e/test_console.py). Needs root or sudo and the Debian
# mirror; does nothing when both are already there.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "installing chromium and chromium-driver from Debian (the console's browser tests)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2 || true
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
