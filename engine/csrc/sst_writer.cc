// An SST file writer that can leave the pages it writes in the OS page cache.
//
// RocksDB's C API creates every SstFileWriter with invalidate_page_cache = true: the writer
// drops each megabyte it writes from the page cache. A full load installs its files right
// away and then serves lookups from them, so it had to read the whole store back from the
// disk (sort::prefetch) — at 10 M certificates 5 GB, competing with the merge for the disk.
// This one constructor is all the C API lacks; everything else (open, put, finish,
// destroy) goes through the C API on the object made here.
//
// The two structs below repeat, member for member, the definitions in RocksDB's db/c.cc,
// where the C API's opaque handles are defined; that is what makes a pointer made here a
// valid handle for the C API's functions.

#include "rocksdb/env.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_writer.h"

struct rocksdb_options_t {
  rocksdb::Options rep;
};

struct rocksdb_sstfilewriter_t {
  rocksdb::SstFileWriter* rep;
};

extern "C" rocksdb_sstfilewriter_t* pmh_sstfilewriter_create(
    const rocksdb_options_t* options, unsigned char keep_in_page_cache) {
  rocksdb::EnvOptions env;
  if (keep_in_page_cache) {
    // Start the write-back of every megabyte as it is written (sync_file_range), as the
    // dropping of pages did before: otherwise all of a file's dirty pages wait for the
    // fsync at its end, and a merge task stalled a second on it.
    env.bytes_per_sync = 1 << 20;
  }
  auto* writer = new rocksdb_sstfilewriter_t;
  writer->rep = new rocksdb::SstFileWriter(env, options->rep, nullptr,
                                           /*invalidate_page_cache=*/!keep_in_page_cache);
  return writer;
}
