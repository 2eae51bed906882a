//! Builds the kernel programs (the same code path as `cargo xtask build-ebpf`) and hands their
//! path to `include_bytes!` through SWARMTRACE_EBPF_OBJ.

#[path = "../xtask/src/ebpf_build.rs"]
mod ebpf_build;

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("swarmtrace/ has a parent")
        .to_owned();
    for dir in ["swarmtrace-ebpf/src", "swarmtrace-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for file in [
        "swarmtrace-ebpf/Cargo.toml",
        "swarmtrace-ebpf/Cargo.lock",
        "xtask/src/ebpf_build.rs",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=SWARMTRACE_EBPF_OBJ");
    // A prebuilt object (for example from CI's `cargo xtask build-ebpf` on another machine).
    let obj = match std::env::var("SWARMTRACE_EBPF_OBJ") {
        Ok(path) => PathBuf::from(path),
        Err(_) => match ebpf_build::build(&root) {
            Ok(obj) => obj,
            Err(e) => {
                println!("cargo:warning={e}");
                std::process::exit(1);
            }
        },
    };
    println!("cargo:rustc-env=SWARMTRACE_EBPF_OBJ={}", obj.display());
}
