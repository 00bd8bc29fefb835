//! The plugin's side of the agent API: HTTP over the agent's unix socket.

use std::path::Path;
use std::time::Duration;

use edgeway_common::api::{
    ApiError, Attachment, AttachmentKey, Readiness, UnregisterResponse, ATTACHMENTS_PATH,
    READYZ_PATH,
};
use reqwest::{Client, Method, StatusCode};

/// Why a call to the agent did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    /// No answer: the socket is missing, refused, or timed out. `onAgentDown` applies.
    #[error("edgeway agent at {socket} is unreachable: {reason}")]
    Down { socket: String, reason: String },
    /// The agent answered and refused.
    #[error("edgeway agent refused the request ({status}): {reason}")]
    Rejected { status: StatusCode, reason: String },
}

pub struct AgentClient {
    client: Client,
    socket: String,
}

impl AgentClient {
    pub fn new(socket: &Path, timeout: Duration) -> Result<Self, AgentError> {
        let socket_s = socket.display().to_string();
        let client = Client::builder()
            .unix_socket(socket)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| AgentError::Down {
                socket: socket_s.clone(),
                reason: e.to_string(),
            })?;
        Ok(AgentClient {
            client,
            socket: socket_s,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, AgentError> {
        let mut req = self
            .client
            .request(method, format!("http://edgeway-agent{path}"));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let down = |e: reqwest::Error| AgentError::Down {
            socket: self.socket.clone(),
            reason: e.to_string(),
        };
        let resp = req.send().await.map_err(down)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(down)?.to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        let reason = serde_json::from_slice::<ApiError>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        if status.is_server_error() {
            // A 5xx means the agent is not able to serve now; treat it like an absent agent.
            return Err(AgentError::Down {
                socket: self.socket.clone(),
                reason: format!("{status}: {reason}"),
            });
        }
        Err(AgentError::Rejected { status, reason })
    }

    pub async fn register(&self, a: &Attachment) -> Result<(), AgentError> {
        let body = serde_json::to_vec(a).expect("attachment serializes");
        self.send(Method::POST, ATTACHMENTS_PATH, Some(body))
            .await
            .map(drop)
    }

    /// Returns the attachment the agent had, if any.
    pub async fn unregister(&self, key: &AttachmentKey) -> Result<Option<Attachment>, AgentError> {
        // Both parts are validated to hold no '/', so they are safe as path segments.
        let path = format!("{ATTACHMENTS_PATH}/{}/{}", key.container_id, key.ifname);
        let body = self.send(Method::DELETE, &path, None).await?;
        // An older agent may answer without the attachment: treat that as unknown.
        Ok(serde_json::from_slice::<UnregisterResponse>(&body)
            .ok()
            .and_then(|r| r.removed))
    }

    /// The agent's readiness. A not-ready agent answers 503 with its problems.
    pub async fn readiness(&self) -> Result<Readiness, AgentError> {
        match self.send(Method::GET, READYZ_PATH, None).await {
            Ok(body) => serde_json::from_slice(&body).map_err(|e| AgentError::Rejected {
                status: StatusCode::OK,
                reason: format!("unreadable /readyz answer: {e}"),
            }),
            Err(AgentError::Down { reason, .. }) if reason.starts_with("503") => Ok(Readiness {
                ready: false,
                problems: vec![reason],
            }),
            Err(e) => Err(e),
        }
    }
}
