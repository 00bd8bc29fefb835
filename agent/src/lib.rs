//! The agent's modules, as a library so that fuzz targets and benchmarks can drive the
//! parsers and decoders directly. The binary is `src/main.rs`.

pub mod api;
pub mod ca_cmd;
pub mod cni_install;
pub mod config;
pub mod dataplane;
pub mod metrics;
pub mod netstate;
pub mod networking;
pub mod node;
pub mod ownership;
pub mod p2p;
pub mod recovery;
pub mod registry;
pub mod route_sync;
pub mod routes;
pub mod run;
pub mod segments;
pub mod status;
pub mod status_cmd;
pub mod tunnel;
