#!/usr/bin/env bash
# Installs the Debian packages the tests need beyond the build's (scripts/deps.sh), only
# those missing. Idempotent.
# - chromium + chromium-driver: the upload screen's browser test drives headless Chromium
#   through ChromeDriver (server/tests/ui_browser.rs).
set -euo pipefail
need=()
for p in chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "test-deps: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
