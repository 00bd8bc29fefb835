//! `edgeway`: a chained CNI meta-plugin. It reads `prevResult`, installs
//! `from <pod ip> lookup <edgeway table>` rules in the host namespace, records the
//! attachment, registers it with the local agent, and passes `prevResult` on.
//!
//! The plugin runs once per pod start, so its start-up time counts: see
//! docs/benchmarks.md. It uses C `main` directly (`no_main`) and skips std's runtime
//! set-up, which on Linux reads `/proc/self/maps` to find the main thread's stack and maps
//! an alternate signal stack for the stack-overflow message: about 0.08 ms per invocation
//! on the benchmark VM. What that set-up also did and the plugin relies on is done here:
//! SIGPIPE is ignored (a closed pipe is a write error, not a kill) and stdout is flushed
//! before returning. A stack overflow still ends the process, just as a plain SIGSEGV.

#![cfg_attr(not(test), no_main)]

use std::io::{Read, Write};

use edgeway_common::cni::{CniError, CniVersion, ErrorCode};
use edgeway_plugin::{cmd, config};

/// Network configs are a few KiB; anything near this is not one.
#[cfg_attr(test, allow(dead_code))]
const MAX_STDIN: u64 = 1 << 20;

/// The C entry point; see the crate docs for why it is not Rust's `fn main`.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    // SAFETY: sets a signal disposition at start-up, before any other thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    match run() {
        Ok(()) => 0,
        Err(()) => 1,
    }
}

/// Reads the request, runs it, and writes the answer; `Err` means exit code 1.
#[cfg_attr(test, allow(dead_code))]
fn run() -> Result<(), ()> {
    let get = |k: &str| std::env::var(k).ok();
    let mut stdin = Vec::new();
    let read = std::io::stdin().take(MAX_STDIN + 1).read_to_end(&mut stdin);

    let outcome = match read {
        Err(e) => Err(CniError::new(
            ErrorCode::Io,
            format!("cannot read stdin: {e}"),
        )),
        Ok(_) if stdin.len() as u64 > MAX_STDIN => Err(CniError::new(
            ErrorCode::Decode,
            format!("network config on stdin is larger than {MAX_STDIN} bytes"),
        )),
        Ok(_) => cmd::run(&get, &stdin),
    };
    let mut out = std::io::stdout().lock();
    let result = match outcome {
        Ok(text) => {
            if !text.is_empty() {
                let _ = writeln!(out, "{text}");
            }
            Ok(())
        }
        Err(e) => {
            // Errors go to stdout, in the caller's version when it is one we speak.
            let version = config::peek_version(&stdin).unwrap_or(CniVersion::LATEST);
            let _ = writeln!(out, "{}", e.to_json(version.as_str()));
            Err(())
        }
    };
    // Without std's runtime nothing flushes stdout at exit.
    let _ = out.flush();
    result
}
