//! Build script: only with feature `dpdk`, probe `libdpdk` (>= 22.11) with pkg-config and
//! compile the C shim `src/port/dpdk/shim.c` that wraps DPDK's static-inline calls.
//!
//! pkg-config's non-`-I` cflags matter: DPDK's headers need `-include rte_config.h`
//! (and `-march=...`), or they do not compile.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_DPDK").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=src/port/dpdk/shim.c");
    let lib = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!("feature `dpdk` needs libdpdk >= 22.11 (apt install libdpdk-dev): {e}")
        });
    let mut build = cc::Build::new();
    build
        .file("src/port/dpdk/shim.c")
        .warnings(true)
        .extra_warnings(true)
        .opt_level(3);
    for inc in &lib.include_paths {
        build.include(inc);
    }
    // Everything that is not -I/-l/-L: `-include rte_config.h`, `-march=...`, defines.
    let cflags = std::process::Command::new("pkg-config")
        .args(["--cflags-only-other", "libdpdk"])
        .output()
        .expect("pkg-config --cflags-only-other libdpdk");
    let cflags = String::from_utf8_lossy(&cflags.stdout).into_owned();
    let mut words = cflags.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-include" {
            if let Some(h) = words.next() {
                build.flag("-include").flag(h);
            }
        } else {
            build.flag(w);
        }
    }
    build.compile("flowgate_dpdk_shim");
}
