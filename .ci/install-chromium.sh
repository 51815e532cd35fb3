#!/usr/bin/env bash
# Install Debian's headless-capable chromium for tests/memprof/test_html_browser.py.
# Idempotent and quiet: does nothing when a chromium is already on PATH; prints one line otherwise.
set -euo pipefail

for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "installed $(chromium --version 2>/dev/null || echo chromium)"
