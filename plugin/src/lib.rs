//! The plugin's modules, as a library so that fuzz targets can drive the parsers directly.
//! The binary is `src/main.rs`; it keeps the C `main` and the process set-up.

mod agent_client;
pub mod cmd;
pub mod config;
pub mod env;
