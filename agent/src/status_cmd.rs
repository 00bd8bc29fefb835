//! `edgeway-agent status`: asks the local agent for `/v1/status` and prints it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The agent's API socket (default: `api.socket` from the config).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short, value_parser = ["table", "json"], default_value = "table")]
    output: String,
    /// Exit 1 unless the agent reports ready: for readiness probes.
    #[arg(long)]
    ready: bool,
}

pub fn run(config_socket: PathBuf, args: StatusArgs) -> anyhow::Result<()> {
    let socket = args.socket.unwrap_or(config_socket);
    let body = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let client = reqwest::Client::builder()
                .unix_socket(socket.as_path())
                .timeout(Duration::from_secs(5))
                .build()?;
            let resp = client.get("http://edgeway-agent/v1/status").send().await?;
            resp.error_for_status()?.text().await
        })
        .with_context(|| format!("cannot reach the agent at {}", socket.display()))?;
    let status: Value = serde_json::from_str(&body).context("unreadable status from the agent")?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    if args.ready && status["ready"].as_bool() != Some(true) {
        anyhow::bail!(
            "the agent is not ready; see `curl --unix-socket {} http://x/readyz`",
            socket.display()
        );
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn human_bytes(v: &Value) -> String {
    let b = v.as_u64().unwrap_or(0) as f64;
    match b {
        b if b >= 1e9 => format!("{:.1}G", b / 1e9),
        b if b >= 1e6 => format!("{:.1}M", b / 1e6),
        b if b >= 1e3 => format!("{:.1}k", b / 1e3),
        b => format!("{b}"),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str("  ");
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The readable form: identity, local pods, peers.
pub fn render(st: &Value) -> String {
    let mut out = format!(
        "node {}  segment {}  ready {}\npeer id {}\n",
        s(&st["node"]),
        s(&st["segment"]),
        if st["ready"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
        s(&st["peerId"]),
    );
    let pods = st["localPods"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("\nlocal pods ({}):\n", pods.len()));
    if !pods.is_empty() {
        let mut rows = vec![vec![
            "POD".into(),
            "IPS".into(),
            "CONTAINER".into(),
            "IFNAME".into(),
        ]];
        for p in &pods {
            let name = match (p["pod"]["namespace"].as_str(), p["pod"]["name"].as_str()) {
                (Some(ns), Some(n)) => format!("{ns}/{n}"),
                _ => "-".into(),
            };
            let ips: Vec<String> = p["ips"].as_array().into_iter().flatten().map(s).collect();
            let cid = s(&p["containerID"]);
            rows.push(vec![
                name,
                ips.join(","),
                cid.chars().take(12).collect(),
                s(&p["ifname"]),
            ]);
        }
        out.push_str(&table(&rows));
    }
    let peers = st["peers"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!("\npeers ({}):\n", peers.len()));
    if !peers.is_empty() {
        let mut rows = vec![vec![
            "NODE".into(),
            "SEGMENT".into(),
            "PATH".into(),
            "RTT".into(),
            "PODS".into(),
            "IN".into(),
            "OUT".into(),
            "PEER".into(),
        ]];
        for p in &peers {
            let rtt = p["rttMs"]
                .as_f64()
                .map(|r| format!("{r:.2}ms"))
                .unwrap_or("-".into());
            let path = if p["connected"].as_bool() == Some(true) {
                s(&p["path"])
            } else {
                "down".into()
            };
            rows.push(vec![
                s(&p["nodeName"]),
                s(&p["segment"]),
                path,
                rtt,
                s(&p["pods"]),
                human_bytes(&p["bytesIn"]),
                human_bytes(&p["bytesOut"]),
                s(&p["peerId"]),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_identity_pods_and_peers() {
        let st = serde_json::json!({
            "node": "e1", "peerId": "12D3KooWabc", "segment": "edge-1", "ready": true,
            "localPods": [{"containerID": "0123456789abcdef", "ifname": "eth0", "ips": ["10.244.5.2"],
                           "pod": {"namespace": "default", "name": "web"}}],
            "peers": [{"peerId": "12D3KooWxyz", "nodeName": "c1", "segment": "cloud", "connected": true,
                       "path": "direct", "rttMs": 0.42, "pods": 3, "bytesIn": 2500000, "bytesOut": 999,
                       "packetsIn": 1, "packetsOut": 1}]
        });
        let text = render(&st);
        for want in [
            "node e1",
            "segment edge-1",
            "default/web",
            "10.244.5.2",
            "0123456789ab",
            "c1",
            "cloud",
            "direct",
            "0.42ms",
            "2.5M",
            "999",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
