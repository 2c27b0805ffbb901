//! Compiles `csrc/sst.cc` (the parts of RocksDB's C++ API that its C API does not offer:
//! see that file) against the headers of the RocksDB that `librocksdb-sys` links.

fn main() {
    println!("cargo:rerun-if-changed=csrc/sst.cc");
    // Set by librocksdb-sys (`links = "rocksdb"`) for the crates that depend on it
    // directly, whether it compiled RocksDB or links a prebuilt archive.
    let sys = std::env::var("DEP_ROCKSDB_CARGO_MANIFEST_DIR")
        .expect("librocksdb-sys did not say where its sources are (DEP_ROCKSDB_CARGO_MANIFEST_DIR)");
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .include(format!("{sys}/rocksdb/include"))
        // As librocksdb-sys compiles RocksDB, so that the shared structs agree.
        .define("NDEBUG", Some("1"))
        .define("ROCKSDB_PLATFORM_POSIX", None)
        .define("ROCKSDB_LIB_IO_POSIX", None)
        .warnings(true)
        .file("csrc/sst.cc")
        .compile("pmh_sst");
}
