#!/usr/bin/env bash
# Prints the directory of a prebuilt static librocksdb.a for this workspace, building it
# once if it is not cached yet.
#
# Why: RocksDB's C++ takes ~15 minutes to compile on 2 cores, and cargo recompiles it for
# every profile (dev for clippy/tests, release for benches) and whenever the package
# selection changes its build-script features. Linking one cached archive
# (ROCKSDB_LIB_DIR + ROCKSDB_STATIC) makes every later build take seconds for RocksDB.
#
# The cache key is the librocksdb-sys version (from Cargo.lock), the compiled-in codecs,
# the target CPU and the C++ compiler, so a change to any of them builds a new archive.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${PMH_CACHE_DIR:-$HOME/.cache/pmh}
ver=$(awk '/^name = "librocksdb-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' "$root/Cargo.lock")
[ -n "$ver" ] || { echo "rocksdb-lib: librocksdb-sys not found in Cargo.lock" >&2; exit 2; }
codecs=lz4    # keep in sync with the rocksdb features in Cargo.toml
cpu=haswell   # keep in sync with .cargo/config.toml
cxx=$(c++ --version 2>/dev/null | head -n 1 | sha256sum | cut -c1-12)
# The archive is cached without its debug information (`strip --strip-debug`, which keeps
# the symbols profilers name functions by): 45 MB instead of 1.5 GB. librocksdb-sys bundles
# the archive into its rlib, and every test and program executable carried RocksDB's DWARF
# (440 MB each; 27 GB in a warm target directory), written out again at every link.
# Nothing here reads RocksDB's source lines. The directory's name says so, so that a cache
# made before the stripping is stripped once instead of compiled again, and so that cargo,
# seeing ROCKSDB_LIB_DIR change, bundles the stripped archive.
plain="$cache/rocksdb/$ver-$codecs-$cpu-$cxx"
dir="$plain-nodebug"
if [ ! -f "$dir/librocksdb.a" ]; then
  if [ -f "$plain/librocksdb.a" ]; then
    lib="$plain/librocksdb.a"
  else
    echo "rocksdb-lib: compiling RocksDB $ver once (15-35 minutes on 2 cores), cached in $dir" >&2
    (cd "$root" && env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC \
       cargo build --locked --release -p librocksdb-sys --target-dir "$cache/rocksdb-build" >&2)
    lib=$(ls -t "$cache"/rocksdb-build/release/build/librocksdb-sys-*/out/librocksdb.a | head -n 1)
  fi
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  strip --strip-debug -o "$dir.tmp/librocksdb.a" "$lib"
  mv "$dir.tmp" "$dir"   # appears whole or not at all
  rm -rf "$plain"        # the archive with debug information, if cached before
fi
echo "$dir"
