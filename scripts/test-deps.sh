#!/usr/bin/env bash
# Installs the Debian packages the tests need beyond the build's, only those missing
# (through scripts/deps.sh). Idempotent.
# - chromium + chromium-driver: the upload screen's browser test drives headless Chromium
#   through ChromeDriver (server/tests/ui_browser.rs).
set -euo pipefail
exec "$(dirname "$0")/deps.sh" chromium chromium-driver
