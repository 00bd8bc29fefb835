//! The agent's local API as the plugin reaches it: POST /v1/attachments with a JSON body,
//! and DELETE /v1/attachments/{containerID}/{ifname}.
//!
//! Input: `D` then the path after `/v1/attachments/`, or any other byte then the POST
//! body (see `edgeway_fuzz::api`). The requests go through the agent's real router, in
//! process, against a store that holds one record. Nothing may answer 5xx, every 4xx
//! carries `{"error": ...}`, and whatever is accepted is valid.

#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use edgeway_agent::node::Node;
use edgeway_common::api::{ApiError, Attachment, UnregisterResponse};
use edgeway_common::store::Store;
use edgeway_fuzz::api::{record, DELETE};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Agent {
    rt: tokio::runtime::Runtime,
    router: Router,
}

fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        // Under fuzz/target, which cargo clean removes; no temp dir is left behind.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/agent_api-state");
        let store = Store::new(dir);
        store.ensure_dirs().expect("state dir");
        store.write_record(&record()).expect("record");
        let node = Arc::new(Node::new("fuzz".into(), store));
        Agent {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            router: edgeway_agent::api::router(node),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let request = if mode == DELETE {
        let mut uri = b"/v1/attachments/".to_vec();
        uri.extend_from_slice(rest);
        Request::builder()
            .method(Method::DELETE)
            .uri(uri.as_slice())
            .body(Body::empty())
    } else {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/attachments")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(rest.to_vec()))
    };
    // Not a URI hyper would pass on: such a request never reaches the router.
    let Ok(request) = request else {
        return;
    };
    let path = request.uri().path().to_string();
    let agent = agent();
    let (status, body) = agent.rt.block_on(async {
        let response = agent.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, body)
    });
    let shown = String::from_utf8_lossy(&body);
    assert!(!status.is_server_error(), "{status} for {path}: {shown}");
    if status.is_client_error() {
        let e: ApiError = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{status} for {path} without {{\"error\"}}: {shown}"));
        assert!(!e.error.is_empty());
        return;
    }
    assert_eq!(status, StatusCode::OK, "{path}: {shown}");
    if mode == DELETE {
        // Accepted: the segments are a valid key, whatever the encoding was.
        let answer: UnregisterResponse = serde_json::from_slice(&body).unwrap();
        if let Some(a) = answer.removed {
            assert_eq!(a, record());
        }
        let segments: Vec<&str> = path["/v1/attachments/".len()..].split('/').collect();
        assert_eq!(segments.len(), 2, "{path}");
    } else {
        let a: Attachment = serde_json::from_slice(&body).unwrap();
        assert_eq!(a, record(), "registered without a matching record");
    }
});
