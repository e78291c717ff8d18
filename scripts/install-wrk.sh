#!/bin/sh
# Installs wrk (the load generator `npm run bench` uses) from Debian when it is missing.
set -eu
if command -v wrk >/dev/null 2>&1; then
  echo "wrk present: $(command -v wrk)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq wrk
command -v wrk >/dev/null 2>&1 || { echo "wrk could not be installed" >&2; exit 1; }
echo "wrk installed: $(command -v wrk)"
