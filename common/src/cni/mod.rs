//! CNI spec handling that does not depend on the host: versions, errors and results.

pub mod error;
pub mod result;
pub mod version;

pub use error::{CniError, ErrorCode};
pub use version::CniVersion;
