#!/usr/bin/env bash
# cargo, with what this workspace needs around it: the Debian packages for bindgen, the
# cached static RocksDB (see rocksdb-lib.sh), and the target directory outside the clone
# so that CI runs on fresh clones stay incremental.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/deps.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pmh/target}
ROCKSDB_LIB_DIR=$("$here/rocksdb-lib.sh")
export ROCKSDB_LIB_DIR ROCKSDB_STATIC=1
exec cargo "$@"
