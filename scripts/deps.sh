#!/usr/bin/env bash
# Installs the Debian packages the build needs, only those missing. Idempotent.
# - libclang (+ clang's built-in headers) for bindgen, which generates the RocksDB bindings;
# - g++ for RocksDB's C++ and the engine's shim (engine/csrc/sst.cc);
# - binutils for `strip`, which drops the cached RocksDB archive's debug information
#   (scripts/rocksdb-lib.sh; g++ brings it too).
# With arguments, installs those packages instead (scripts/test-deps.sh).
set -euo pipefail
packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(libclang1-14 libclang-common-14-dev g++ binutils)
need=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "deps: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
