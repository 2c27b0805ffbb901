// What RocksDB's C API lacks for a full load.
//
// 1. An SstFileWriter whose `Finish` hands back the file's `PreparedFileInfo` (its key
//    bounds, size and table properties, all known to the writer). Given that info,
//    ingestion does not open the file: without it, RocksDB reads every key of a
//    PlainTable file to find the largest (the format cannot seek to its last key),
//    7.5-9 s of one core for a 10 M load's holders files (docs/benchmarks.md).
// 2. The writer's choice of `invalidate_page_cache`, for a file that is served right
//    after it is written (the C API's writer always drops its pages).
// 3. An ingestion that takes those infos (`IngestExternalFileArg::file_infos`).
//
// Everything else about a writer (open, put, destroy) goes through the C API on the
// object made here. The structs below repeat, member for member, the definitions in
// RocksDB's db/c.cc, where the C API's opaque handles are defined; that is what makes a
// pointer made here a valid handle for the C API's functions, and theirs valid here.

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_writer.h"

struct rocksdb_t {
  rocksdb::DB* rep;
};

struct rocksdb_column_family_handle_t {
  rocksdb::ColumnFamilyHandle* rep;
  bool immortal;
};

struct rocksdb_options_t {
  rocksdb::Options rep;
};

struct rocksdb_sstfilewriter_t {
  rocksdb::SstFileWriter* rep;
};

// What `Finish` learnt about a file, for its ingestion.
struct pmh_prepared_file_t {
  std::shared_ptr<const rocksdb::PreparedFileInfo> rep;
};

// As the C API reports errors: a malloc'd string the caller frees with rocksdb_free.
static bool save_error(char** err, const rocksdb::Status& s) {
  if (s.ok()) {
    return false;
  }
  if (*err == nullptr) {
    *err = strdup(s.ToString().c_str());
  }
  return true;
}

extern "C" rocksdb_sstfilewriter_t* pmh_sstfilewriter_create(
    const rocksdb_options_t* options, unsigned char keep_in_page_cache) {
  rocksdb::EnvOptions env;
  if (keep_in_page_cache) {
    // Start the write-back of every megabyte as it is written (sync_file_range), as the
    // dropping of pages does otherwise: else all of a file's dirty pages wait for the
    // fsync at its end.
    env.bytes_per_sync = 1 << 20;
  }
  auto* writer = new rocksdb_sstfilewriter_t;
  writer->rep = new rocksdb::SstFileWriter(
      env, options->rep, nullptr,
      /*invalidate_page_cache=*/keep_in_page_cache == 0);
  return writer;
}

// Finishes the file (index, footer, sync). Returns what ingestion needs to know of it,
// or null with `*err` set.
extern "C" pmh_prepared_file_t* pmh_sstfilewriter_finish(
    rocksdb_sstfilewriter_t* writer, char** err) {
  rocksdb::ExternalSstFileInfo info;
  if (save_error(err, writer->rep->Finish(&info))) {
    return nullptr;
  }
  if (info.prepared_file_info == nullptr) {
    save_error(err, rocksdb::Status::Corruption(
                        "SstFileWriter::Finish gave no prepared file info"));
    return nullptr;
  }
  return new pmh_prepared_file_t{std::move(info.prepared_file_info)};
}

extern "C" void pmh_prepared_file_destroy(pmh_prepared_file_t* file) {
  delete file;
}

// Ingests `count` files into the column family `cf`. `infos` has one entry per file,
// null where the writer's info is not at hand (the files are then opened and read, as
// RocksDB does without it). With `move_files`, the files are hard-linked into the store
// and unlinked from where they were.
extern "C" void pmh_ingest_files(rocksdb_t* db, rocksdb_column_family_handle_t* cf,
                                 const char* const* paths,
                                 const pmh_prepared_file_t* const* infos,
                                 size_t count, unsigned char move_files,
                                 char** err) {
  rocksdb::IngestExternalFileArg arg;
  arg.column_family = cf->rep;
  arg.options.move_files = move_files != 0;
  bool all_prepared = true;
  for (size_t i = 0; i < count; i++) {
    arg.external_files.emplace_back(paths[i]);
    if (infos[i] == nullptr) {
      all_prepared = false;
    } else {
      arg.file_infos.push_back(infos[i]->rep.get());
    }
  }
  // RocksDB takes either an info for every file or none.
  if (!all_prepared) {
    arg.file_infos.clear();
  }
  save_error(err, db->rep->IngestExternalFiles({arg}));
}
