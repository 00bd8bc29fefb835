//! `edgeway-agent ca init|grant` and `peer-id`: the operator's side of pod-range grants.
//! The CA key stays with the operator; nodes get its public key and their own grant.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ipnetwork::IpNetwork;
use libp2p::identity::Keypair;
use libp2p::PeerId;

use crate::config::Config;
use crate::p2p::grants::{self, ClusterCa, GrantBody};
use crate::p2p::identity;

#[derive(clap::Subcommand, Debug)]
pub enum CaCommand {
    /// Make the cluster CA key (random, 0600) unless it exists, and write its public key:
    /// the file every agent's `p2p.clusterCaFile` names.
    Init {
        /// The CA's private key. Keep it off the nodes.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        public: PathBuf,
    },
    /// Grant one node (by peer ID, see `edgeway-agent peer-id`) the pod CIDRs it may claim.
    Grant {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        peer_id: PeerId,
        /// Repeat for several ranges (IPv4 and IPv6).
        #[arg(long = "pod-cidr", required = true)]
        pod_cidrs: Vec<IpNetwork>,
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// Valid for this many seconds instead of `--days` (short-lived nodes, tests).
        #[arg(long)]
        valid_secs: Option<u64>,
        /// Where to write the grant (the node's `p2p.grantFile`); stdout without it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(cmd: CaCommand) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init { key, public } => {
            let ca = identity::load_or_create(&key)?;
            let text = ClusterCa::encode(&ca.public()) + "\n";
            std::fs::write(&public, text)
                .with_context(|| format!("cannot write {}", public.display()))?;
            eprintln!(
                "cluster CA key {} (keep it private); public key written to {}",
                key.display(),
                public.display()
            );
            Ok(())
        }
        CaCommand::Grant {
            key,
            peer_id,
            pod_cidrs,
            days,
            valid_secs,
            out,
        } => {
            let ca = read_ca_key(&key)?;
            if let Some(any) = pod_cidrs.iter().find(|c| c.prefix() == 0) {
                anyhow::bail!("--pod-cidr {any} grants every address: give the node its own range");
            }
            let valid = valid_secs.unwrap_or(days.saturating_mul(86_400));
            let not_after_unix = edgeway_common::unix_now().as_secs().saturating_add(valid);
            let body = GrantBody {
                peer_id: peer_id.to_string(),
                pod_cidrs: pod_cidrs.iter().map(|c| network_of(*c)).collect(),
                not_after_unix,
            };
            if body.pod_cidrs.len() > grants::MAX_GRANT_CIDRS {
                anyhow::bail!("at most {} --pod-cidr", grants::MAX_GRANT_CIDRS);
            }
            let text = serde_json::to_string_pretty(&grants::issue(&ca, &body))? + "\n";
            match out {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{text}"),
            }
            eprintln!(
                "granted {peer_id} {:?} for {valid} s",
                body.pod_cidrs
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
            );
            Ok(())
        }
    }
}

/// Prints this node's peer ID, making the identity key first if there is none yet, so
/// that a node can be granted before its agent ever starts.
pub fn print_peer_id(config: &Config) -> anyhow::Result<()> {
    edgeway_common::store::Store::new(&config.state_dir).ensure_dirs()?;
    let key = identity::load_or_create(&config.state_dir.join("identity.key"))?;
    println!("{}", key.public().to_peer_id());
    Ok(())
}

/// Unlike a node's identity, a missing CA key is an error, never a new CA.
fn read_ca_key(path: &Path) -> anyhow::Result<Keypair> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read CA key {}", path.display()))?;
    Keypair::from_protobuf_encoding(&bytes)
        .map_err(|e| anyhow::anyhow!("CA key {} is corrupt: {e}", path.display()))
}

/// `10.244.1.7/24` means the range: grant `10.244.1.0/24`.
fn network_of(c: IpNetwork) -> IpNetwork {
    IpNetwork::new(c.network(), c.prefix()).expect("the prefix came from a valid network")
}
