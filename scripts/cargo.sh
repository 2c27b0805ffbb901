#!/usr/bin/env bash
# cargo, with what this workspace needs around it: the Debian packages for bindgen, the
# cached static RocksDB (see rocksdb-lib.sh), and the target directory outside the clone
# so that CI runs on fresh clones stay incremental.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/deps.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pmh/target}
# Every clone path is a new package path to cargo, so each fresh-clone CI run links its own
# test and program executables (~4.5 GB with debug info) beside the old ones, and the cache
# grew until the disk was full. Executables untouched for two days are dropped; libraries
# stay, so at worst a test crate is compiled again.
find "$CARGO_TARGET_DIR"/*/deps -maxdepth 1 -type f ! -name '*.*' -mtime +1 -delete 2>/dev/null || true
ROCKSDB_LIB_DIR=$("$here/rocksdb-lib.sh")
export ROCKSDB_LIB_DIR ROCKSDB_STATIC=1
exec cargo "$@"
