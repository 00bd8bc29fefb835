//! `edgeway`: a chained CNI meta-plugin. It reads `prevResult`, installs
//! `from <pod ip> lookup <edgeway table>` rules in the host namespace, records the
//! attachment, registers it with the local agent, and passes `prevResult` on.

mod agent_client;
mod cmd;
mod config;
mod env;

use std::io::{Read, Write};
use std::process::ExitCode;

use edgeway_common::cni::{CniError, CniVersion, ErrorCode};

/// Network configs are a few KiB; anything near this is not one.
const MAX_STDIN: u64 = 1 << 20;

fn main() -> ExitCode {
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
    match outcome {
        Ok(text) => {
            if !text.is_empty() {
                let _ = writeln!(out, "{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Errors go to stdout, in the caller's version when it is one we speak.
            let version = config::peek_version(&stdin).unwrap_or(CniVersion::LATEST);
            let _ = writeln!(out, "{}", e.to_json(version.as_str()));
            ExitCode::FAILURE
        }
    }
}
