#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for the console's browser tests (issue 8), only when missing.
# playwright-core drives it through executablePath; no browser download from a CDN.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium
/usr/bin/chromium --version
