//! `edgeway-agent`: one per node. It keeps the node's pod registry, recovers it after a
//! restart, and serves the local API that the `edgeway` CNI plugin calls.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgeway_agent::{ca_cmd, cni_install, config, run, status_cmd};

#[derive(Parser, Debug)]
#[command(name = "edgeway-agent", version, about = "edgeway's per-node agent")]
struct Cli {
    /// Config file (TOML). Without one, every key takes its default.
    #[arg(long, short, global = true, env = "EDGEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, in tracing's env-filter syntax.
    #[arg(long, global = true, env = "EDGEWAY_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent (the default).
    Run(run::RunArgs),
    /// Show this node's identity, local pods and peers (path, RTT, traffic).
    Status(status_cmd::StatusArgs),
    /// Check a config file and print it with defaults filled in.
    CheckConfig,
    /// Install the edgeway plugin binary and chain it into the primary CNI config.
    InstallCni(cni_install::InstallArgs),
    /// Remove edgeway's CNI config entry and plugin binary.
    UninstallCni(cni_install::UninstallArgs),
    /// Print this node's peer ID (making its identity key if there is none yet).
    PeerId,
    /// The cluster CA that grants each node the pod CIDRs it may claim.
    #[command(subcommand)]
    Ca(ca_cmd::CaCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match &cli.config {
        Some(path) => config::Config::load(path),
        None => Ok(config::Config::default()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgeway-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Run(run::RunArgs::default())) {
        Command::Run(args) => run::run(config, args),
        Command::Status(args) => status_cmd::run(config.api.socket.clone(), args),
        Command::InstallCni(args) => cni_install::run_install(&config, args),
        Command::UninstallCni(args) => cni_install::run_uninstall(args),
        Command::PeerId => ca_cmd::print_peer_id(&config),
        Command::Ca(cmd) => ca_cmd::run(cmd),
        Command::CheckConfig => {
            println!("{config:#?}");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgeway-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
