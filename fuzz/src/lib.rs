//! What the fuzz targets (`fuzz_targets/`) and the seed generator (`examples/`) share.

use edgeway_common::cni::CniError;

/// Checks an error the way a runtime reads it: a code from `allowed`, a message, and
/// `{cniVersion, code, msg}` JSON on stdout.
pub fn check_cni_error(e: &CniError, allowed: &[u32], what: &str) {
    let code = e.code.code();
    assert!(
        allowed.contains(&code),
        "{what}: code {code} is not one of {allowed:?}: {e:?}"
    );
    assert!(!e.msg.is_empty(), "{what}: error without a message");
    let v: serde_json::Value =
        serde_json::from_str(&e.to_json("1.0.0")).expect("error JSON re-parses");
    assert_eq!(v["code"], code, "{what}");
    assert_eq!(v["msg"], e.msg.as_str(), "{what}");
}

/// A fixed announcement author and cluster secret, so that the seeds stay valid and the
/// target can sign fuzzed bodies the way a member would.
pub mod announce {
    use edgeway_agent::p2p::membership::ClusterSecret;
    use libp2p::identity::Keypair;

    pub fn author() -> Keypair {
        Keypair::ed25519_from_bytes([7u8; 32]).expect("32 bytes are an ed25519 secret key")
    }

    pub fn secret() -> ClusterSecret {
        ClusterSecret::from_bytes(b"edgeway-fuzz-cluster-secret".to_vec()).expect("long enough")
    }

    /// The fuzz input's first byte picks how the rest is used.
    pub const WIRE: u8 = 0;
    /// The rest is a body, signed with [`author`] before it goes through the wire format.
    pub const BODY: u8 = 1;
}

/// The one attachment the API target's store holds a record for, so a registration can
/// succeed; the seed generator writes it as a POST body.
pub mod api {
    use edgeway_common::api::{Attachment, PodRef};

    pub fn record() -> Attachment {
        Attachment {
            container_id: "0f3e9a7c2b1d".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/cni-7f0e".into(),
            network: "cbr0".into(),
            ips: vec![
                "10.244.1.5".parse().unwrap(),
                "fd00:10:244:1::5".parse().unwrap(),
            ],
            pod: PodRef {
                namespace: Some("default".into()),
                name: Some("web-0".into()),
                uid: Some("5d2c".into()),
            },
            table: 7332,
            priority: 7332,
            generation: "0123456789abcdef0123456789abcdef".into(),
            created_unix: 1_764_000_000,
        }
    }

    /// The input's first byte: DELETE with the rest as the path after `/v1/attachments/`.
    /// Anything else: POST `/v1/attachments` with the rest as the body.
    pub const DELETE: u8 = b'D';
    pub const POST: u8 = b'P';
}
