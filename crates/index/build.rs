//! Compiles hnswlib (vendored, header-only) with pinnersage's C shim.

fn main() {
    println!("cargo:rerun-if-changed=hnswlib");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("hnswlib/shim.cpp")
        .include("hnswlib")
        // The distance kernels and the graph walk are the whole cost: optimise even in debug.
        .opt_level(3)
        .debug(false)
        .warnings(false)
        .compile("pinnersage_hnswlib");
}
