//! Start a local hub and member clusters (real etcd + kube-apiserver processes) and print how to
//! reach them. Ctrl-C stops everything.
//!
//!     cargo run -p inventory-bridge-tests --bin fleet -- --members 2

use std::path::PathBuf;
use std::process::ExitCode;

use harness::{ControlPlane, Fleet, ForeignCrd, install_crd, install_crds};

struct Options {
    members: usize,
    dir: PathBuf,
    exit_when_ready: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        members: 2,
        dir: PathBuf::from(".fleet"),
        exit_when_ready: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--members" => {
                options.members = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--members needs a number")?;
            }
            "--dir" => options.dir = args.next().map(PathBuf::from).ok_or("--dir needs a path")?,
            "--exit-when-ready" => options.exit_when_ready = true,
            "-h" | "--help" => {
                return Err("usage: fleet [--members N] [--dir DIR] [--exit-when-ready]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

async fn describe(
    control_plane: &ControlPlane,
    kubeconfig: &std::path::Path,
) -> harness::Result<()> {
    let version = control_plane.client().await?.apiserver_version().await?;
    let uid = control_plane.kube_system_uid().await?;
    println!(
        "  {:<10} {}  Kubernetes {}  kube-system uid {}\n             kubeconfig: {}",
        control_plane.name(),
        control_plane.server(),
        version.git_version,
        uid,
        kubeconfig.display()
    );
    Ok(())
}

async fn run(options: Options) -> harness::Result<()> {
    eprintln!(
        "starting a hub and {} member(s) (the first run builds the control plane: 5-20 minutes)...",
        options.members
    );
    let fleet = Fleet::start(options.members).await?;
    let hub = fleet.hub.client().await?;
    install_crd(&hub, adapters::crd::cluster_profile_crd()).await?;
    let foreign: Vec<ForeignCrd> = ForeignCrd::ALL
        .into_iter()
        .filter(|crd| *crd != ForeignCrd::ClusterProfile)
        .collect();
    install_crds(&hub, &foreign).await?;

    std::fs::create_dir_all(&options.dir)?;
    let dir = std::fs::canonicalize(&options.dir)?;
    println!("\ninventory-bridge local fleet is up:");
    for control_plane in std::iter::once(&fleet.hub).chain(&fleet.members) {
        let path = dir.join(format!("{}.kubeconfig", control_plane.name()));
        control_plane.write_admin_kubeconfig(&path)?;
        describe(control_plane, &path).await?;
    }
    println!(
        "\nThe hub serves ClusterProfile (our CRD) and the OCM, Cluster API, Sveltos and About API CRDs.\n\
         Reach a cluster with any Kubernetes client, e.g.:\n  \
         KUBECONFIG={}/hub.kubeconfig kubectl get clusterprofiles -A\n\
         Logs and data: {}",
        dir.display(),
        fleet
            .hub
            .dir()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    for control_plane in std::iter::once(&fleet.hub).chain(&fleet.members) {
        println!("pids {}: {:?}", control_plane.name(), control_plane.pids());
    }
    if options.exit_when_ready {
        return Ok(());
    }
    println!("\nCtrl-C stops the fleet.");
    tokio::signal::ctrl_c().await?;
    eprintln!("stopping...");
    drop(fleet);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fleet: {err}");
            ExitCode::FAILURE
        }
    }
}
