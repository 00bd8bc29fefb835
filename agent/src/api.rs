//! The local HTTP API on the agent's unix socket.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use edgeway_common::api::{
    validate_container_id, validate_ifname, ApiError, Attachment, AttachmentKey, UnregisterResponse,
};
use tokio::net::UnixListener;

use crate::metrics::ApiLabels;
use crate::node::Node;
use crate::registry::Change;

/// Registrations are under a KiB; this leaves room and refuses floods.
const MAX_BODY: usize = 64 * 1024;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/attachments", get(list).post(register))
        .route(
            "/v1/attachments/{container_id}/{ifname}",
            delete(unregister),
        )
        .route("/v1/status", get(status))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(node)
}

fn count(node: &Node, endpoint: &'static str, status: StatusCode) {
    node.metrics
        .api_requests
        .get_or_create(&ApiLabels {
            endpoint,
            code: status.as_u16(),
        })
        .inc();
}

fn error(
    node: &Node,
    endpoint: &'static str,
    status: StatusCode,
    reason: impl Into<String>,
) -> Response {
    count(node, endpoint, status);
    (
        status,
        Json(ApiError {
            error: reason.into(),
        }),
    )
        .into_response()
}

async fn register(
    State(node): State<Arc<Node>>,
    body: Result<Json<Attachment>, JsonRejection>,
) -> Response {
    const EP: &str = "register";
    let a = match body {
        Ok(Json(a)) => a,
        Err(rejection) => {
            return error(
                &node,
                EP,
                StatusCode::BAD_REQUEST,
                format!("invalid attachment: {}", rejection.body_text()),
            )
        }
    };
    if let Err(reason) = a.validate() {
        return error(
            &node,
            EP,
            StatusCode::BAD_REQUEST,
            format!("invalid attachment: {reason}"),
        );
    }
    // The plugin writes the record before it registers. Anything else reaching the socket
    // (a member of api.group, say) cannot make the node announce addresses it never set up.
    match node.store.read_record(&a.key()) {
        Ok(Some(r)) if r == a => {}
        Ok(_) => {
            return error(
                &node,
                EP,
                StatusCode::CONFLICT,
                "no matching attachment record under stateDir",
            )
        }
        Err(e) => return error(&node, EP, StatusCode::CONFLICT, e.to_string()),
    }
    let change = node.registry().upsert(a.clone());
    node.registry_changed();
    if change == Change::Added {
        tracing::info!(container = %a.container_id, ifname = %a.ifname, ips = ?a.ips, "attachment registered");
    }
    count(&node, EP, StatusCode::OK);
    Json(a).into_response()
}

async fn unregister(
    State(node): State<Arc<Node>>,
    path: Result<UrlPath<(String, String)>, PathRejection>,
) -> Response {
    const EP: &str = "unregister";
    // A percent-escape that decodes to no UTF-8 fails here; it still gets a JSON reason.
    let (container_id, ifname) = match path {
        Ok(UrlPath(segments)) => segments,
        Err(rejection) => {
            return error(&node, EP, StatusCode::BAD_REQUEST, rejection.body_text());
        }
    };
    if let Err(reason) = validate_container_id(&container_id).and(validate_ifname(&ifname)) {
        return error(&node, EP, StatusCode::BAD_REQUEST, reason);
    }
    let key = AttachmentKey {
        container_id,
        ifname,
    };
    let removed = node.registry().take(&key);
    node.registry_changed();
    if removed.is_some() {
        tracing::info!(container = %key.container_id, ifname = %key.ifname, "attachment unregistered");
    }
    count(&node, EP, StatusCode::OK);
    // The plugin removes the returned addresses' rules when its own record is gone.
    Json(UnregisterResponse { removed }).into_response()
}

async fn list(State(node): State<Arc<Node>>) -> Response {
    let all = node.registry().list();
    count(&node, "list", StatusCode::OK);
    Json(all).into_response()
}

async fn status(State(node): State<Arc<Node>>) -> Response {
    count(&node, "status", StatusCode::OK);
    Json(crate::status::collect(&node)).into_response()
}

async fn healthz(State(node): State<Arc<Node>>) -> Response {
    count(&node, "healthz", StatusCode::OK);
    Json(serde_json::json!({"ready": true})).into_response()
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    let r = node.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    count(&node, "readyz", status);
    (status, Json(r)).into_response()
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    count(&node, "metrics", StatusCode::OK);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.encode(),
    )
        .into_response()
}

async fn not_found(State(node): State<Arc<Node>>) -> Response {
    error(&node, "other", StatusCode::NOT_FOUND, "no such endpoint")
}

/// Binds the socket under a temporary name, sets its mode and group, then renames it into
/// place, so it is never reachable with looser permissions.
pub fn bind(path: &Path, group: Option<&str>) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another agent is already serving {}", path.display()),
                ));
            }
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
    let result = (|| {
        let mode = if let Some(g) = group {
            let gid = nix::unistd::Group::from_name(g)
                .map_err(io::Error::from)?
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("api.group: no group named {g:?}"),
                    )
                })?
                .gid;
            nix::unistd::chown(&tmp, None, Some(gid)).map_err(io::Error::from)?;
            0o660
        } else {
            0o600
        };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeway_common::store::Store;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One bodiless request over the socket; the status and the body of the answer.
    async fn request(socket: &Path, method_and_path: &str) -> (u16, String) {
        let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
        let head = format!(
            "{method_and_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        let status = raw[9..12].parse().unwrap();
        (status, raw.split_once("\r\n\r\n").unwrap().1.to_string())
    }

    #[tokio::test]
    async fn undecodable_path_gets_a_json_reason() {
        let dir = tempfile::tempdir().unwrap();
        let node = Arc::new(Node::new("n".into(), Store::new(dir.path().join("state"))));
        let socket = dir.path().join("api.sock");
        let listener = bind(&socket, None).unwrap();
        tokio::spawn(async move { axum::serve(listener, router(node)).await });
        // Found by fuzzing (agent_api): `%f4` decodes to no UTF-8, and axum's own
        // plain-text rejection went out instead of {"error": ...}.
        for path in ["/v1/attachments/%f4/eth0", "/v1/attachments/c1/%ff%fe"] {
            let (status, body) = request(&socket, &format!("DELETE {path}")).await;
            assert_eq!(status, 400, "{path}: {body}");
            let e: ApiError = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("{path}: not an API error: {body}"));
            assert!(e.error.contains("UTF-8"), "{path}: {}", e.error);
        }
        // Still a valid key after decoding: accepted.
        let (status, body) = request(&socket, "DELETE /v1/attachments/c1/veth%40x").await;
        assert_eq!(status, 200, "{body}");
    }
}
