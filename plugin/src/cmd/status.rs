//! STATUS: ready when the agent says so.

use edgeway_common::cni::{CniError, ErrorCode};

use crate::agent_client::AgentClient;
use crate::config::NetConf;

pub fn run(conf: &NetConf) -> Result<(), CniError> {
    let unavailable = |msg: String| CniError::new(ErrorCode::NotAvailable, msg);
    let client = AgentClient::new(&conf.agent_socket, conf.agent_timeout)
        .map_err(|e| unavailable(e.to_string()))?;
    let readiness = client.readiness().map_err(|e| unavailable(e.to_string()))?;
    if readiness.ready {
        Ok(())
    } else {
        Err(unavailable(format!(
            "edgeway agent is not ready: {}",
            readiness.problems.join("; ")
        )))
    }
}
