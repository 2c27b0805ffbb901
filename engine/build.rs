//! Compiles `csrc/sst_writer.cc`, the one RocksDB constructor the C API does not offer
//! (see that file), against the headers of the RocksDB that `librocksdb-sys` links.

fn main() {
    println!("cargo:rerun-if-changed=csrc/sst_writer.cc");
    // Set by librocksdb-sys (`links = "rocksdb"`) for the crates that depend on it
    // directly, whether it compiled RocksDB or links a prebuilt archive.
    let sys = std::env::var("DEP_ROCKSDB_CARGO_MANIFEST_DIR")
        .expect("librocksdb-sys did not say where its sources are (DEP_ROCKSDB_CARGO_MANIFEST_DIR)");
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .include(format!("{sys}/rocksdb/include"))
        .define("NDEBUG", Some("1"))
        .file("csrc/sst_writer.cc")
        .compile("pmh_sst_writer");
}
