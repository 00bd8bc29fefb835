//! Links the unwinder (libgcc_eh) into the plugin instead of loading libgcc_s.so.1.
//!
//! The plugin is a fresh process on every pod start. On x86-64, libgcc_s's load-time
//! constructor (`__cpu_indicator_init`) runs a string of CPUID instructions, and under a
//! hypervisor every CPUID traps: loading libgcc_s cost about 0.1 ms per invocation on the
//! benchmark VM. Rust's std on linux-gnu links `-lgcc_s` only for the `_Unwind_*`
//! functions, which the static archive also provides; linked whole (and before std's
//! `-lgcc_s`), they leave libgcc_s unneeded, so `--as-needed` drops it. libc stays dynamic.
//!
//! Where the archive cannot be found (another toolchain or target), nothing changes.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !(target.contains("-linux-gnu")
        && std::env::var("CARGO_CFG_TARGET_FEATURE")
            .map(|f| !f.split(',').any(|x| x == "crt-static"))
            .unwrap_or(true))
    {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Not found: the compiler prints the bare name back.
    if !out.status.success() || !path.is_absolute() || !path.is_file() {
        println!("cargo:warning=libgcc_eh.a not found; the plugin loads libgcc_s.so.1");
        return;
    }
    let dir = path.parent().expect("absolute path has a parent");
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static:+whole-archive=gcc_eh");
}
