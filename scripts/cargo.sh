#!/usr/bin/env bash
# cargo, with what this workspace needs around it: the Debian packages for bindgen, the
# cached static RocksDB (see rocksdb-lib.sh), and the target directory outside the clone
# so that CI runs on fresh clones stay incremental.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/deps.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/pmh/target}
# Every change of features or flags links a new set of test and program executables
# (1 GB; 9 GB while RocksDB's archive kept its debug information) beside the old ones: the
# cache grew until the disk was full (twice, once by 15 GB within an hour). Of the
# executables of one name (cargo's `name-hash`), the four newest are kept, and none
# untouched for two days; libraries stay, so at worst a test crate is compiled again.
for deps in "$CARGO_TARGET_DIR"/*/deps; do
  [ -d "$deps" ] || continue
  find "$deps" -maxdepth 1 -type f ! -name '*.*' -mtime +1 -delete 2>/dev/null || true
  find "$deps" -maxdepth 1 -type f ! -name '*.*' -printf '%T@ %f\n' 2>/dev/null | sort -rn |
    awk -v d="$deps" '{ n = $2; sub(/-[0-9a-f]+$/, "", n); if (++seen[n] > 4) print d "/" $2 }' |
    xargs -r rm -f || true
done
# Cargo decides whether a workspace crate is fresh from its sources' modification times;
# it does not compare the path it was built from, and a fresh clone of the same commit (CI's,
# sharing this cache) gets the same artifact names. After such a build, this checkout ran
# the clone's executables, which find `data/` through `env!("CARGO_MANIFEST_DIR")` (11
# loader tests failed once the clone was gone), and an edit older than that build would not
# have been compiled at all. So when the checkout changes, the workspace crates'
# fingerprints go (they are all `pmh-*`) and cargo builds them again; dependencies stay.
root=$(cd "$here/.." && pwd)
mark="$CARGO_TARGET_DIR/.checkout"
mkdir -p "$CARGO_TARGET_DIR"
if [ "$(cat "$mark" 2>/dev/null || true)" != "$root" ]; then
  rm -rf "$CARGO_TARGET_DIR"/*/.fingerprint/pmh-* "$CARGO_TARGET_DIR"/*/*/.fingerprint/pmh-*
  printf '%s\n' "$root" > "$mark"
fi
ROCKSDB_LIB_DIR=$("$here/rocksdb-lib.sh")
export ROCKSDB_LIB_DIR ROCKSDB_STATIC=1
exec cargo "$@"
