//! `make demo`: the whole bridge on a local fleet. Starts a hub and three members, plays Cluster
//! API and OCM (visibly), runs every adapter as its real binary, shows the convergence, prints the
//! unified inventory and what each consumer got, proves every generated kubeconfig against its
//! member, then stays up (Ctrl-C tears down) or, with `--once`, exits: 0 only if everything
//! converged and every proof succeeded.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::estate::{
    ARGOCD_NAMESPACE, CAPI_NAMESPACE, Estate, EstateOptions, FLUX_NAMESPACE, INVENTORY, SINKS,
    render_table, short_id,
};

struct Options {
    once: bool,
    dir: PathBuf,
    timeout: Duration,
}

const USAGE: &str =
    "usage: demo [--once] [--dir DIR (default .demo)] [--timeout SECONDS (default 120)]";

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        once: false,
        dir: PathBuf::from(".demo"),
        timeout: Duration::from_secs(120),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--once" => options.once = true,
            "--dir" => options.dir = PathBuf::from(args.next().ok_or(USAGE)?),
            "--timeout" => {
                let seconds: u64 = args.next().and_then(|s| s.parse().ok()).ok_or(USAGE)?;
                options.timeout = Duration::from_secs(seconds);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(options)
}

async fn run(options: &Options) -> harness::Result<(Estate, Vec<String>)> {
    let started = Instant::now();
    let say: harness::estate::Say = Arc::new(|line: &str| println!("{line}"));
    let mut estate = Estate::start(EstateOptions::new(&options.dir), say).await?;
    println!(
        "\n== converging (every adapter is a separate process; logs in {}/logs/) ==",
        estate.dir.display()
    );
    let converged = estate
        .wait_converged(options.timeout, |waiting| {
            println!(
                "waiting ({:>4.1} s; capi-demo/staging-us stays provisioning, no kubeconfig Secret yet, so nothing registers it):",
                started.elapsed().as_secs_f64()
            );
            for line in waiting {
                println!("  - {line}");
            }
        })
        .await;
    let converged = match converged {
        Ok(took) => {
            println!(
                "converged: {:.1} s of waiting after the managers were played ({:.1} s since the demo started)",
                took.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            true
        }
        Err(err) => {
            println!("NOT CONVERGED: {err}");
            false
        }
    };

    let inventory = estate.inventory().await?;
    println!("\n== the unified inventory: ClusterProfiles in namespace {INVENTORY} ==");
    println!("{}", render_table(&inventory));
    println!(
        "(member id: the member's kube-system uid, first 8 characters; member-1 = {}, member-2 = {}, member-3 = {})",
        short_id(&estate.member_ids[0]),
        short_id(&estate.member_ids[1]),
        short_id(&estate.member_ids[2]),
    );

    println!("\n== what each consumer got ==");
    for sink in SINKS {
        println!("{sink}:");
        for registration in inventory.registrations.iter().filter(|r| r.sink == sink) {
            let member = estate
                .member_by_server(&registration.server)
                .map(|m| m.name().to_string())
                .unwrap_or_else(|| registration.server.clone());
            let what = match &registration.sveltos_cluster {
                Some(cluster) => format!(
                    "SveltosCluster {cluster} + kubeconfig Secret {}",
                    registration.secret
                ),
                None if sink == "argocd-sink" => {
                    format!("Argo CD cluster Secret {}", registration.secret)
                }
                None => format!("Flux kubeconfig Secret {}", registration.secret),
            };
            println!(
                "  {:<18} {what}; on {member}: ServiceAccount {}",
                registration.profile, registration.service_account
            );
        }
    }

    println!("\n== proof: each generated kubeconfig, used against its member ==");
    let proofs = estate.prove(&inventory).await;
    let mut proved = !proofs.is_empty();
    for proof in &proofs {
        match &proof.error {
            Some(error) => {
                proved = false;
                println!(
                    "  FAILED {} {} -> {}: {error}",
                    proof.sink, proof.profile, proof.member
                );
            }
            None => {
                proved &= proof.ok;
                let may: Vec<String> = proof
                    .may
                    .iter()
                    .map(|(what, allowed)| {
                        format!("{what}: {}", if *allowed { "yes" } else { "no" })
                    })
                    .collect();
                println!(
                    "  {} {:<12} {:<18} -> {}: SelfSubjectReview says {}; may {}",
                    if proof.ok { "ok" } else { "WRONG IDENTITY" },
                    proof.sink,
                    proof.profile,
                    proof.member,
                    proof.username,
                    may.join(", ")
                );
            }
        }
    }

    let paths = estate.write_generated_kubeconfigs(&inventory)?;
    let dir = estate.dir.display().to_string();
    println!("\n== files (kubeconfigs are 0600; they hold credentials, this output never does) ==");
    println!(
        "  admin kubeconfigs: {dir}/hub.kubeconfig, {dir}/member-1.kubeconfig, {dir}/member-2.kubeconfig, {dir}/member-3.kubeconfig"
    );
    for path in &paths {
        println!("  generated: {}", path.display());
    }
    println!("  adapter logs: {dir}/logs/<adapter>.log");
    println!("\n== try ==");
    println!(
        "  KUBECONFIG={dir}/hub.kubeconfig kubectl get clusterprofiles -n {INVENTORY} -L env,region"
    );
    println!("  KUBECONFIG={dir}/hub.kubeconfig kubectl get sveltosclusters -n {INVENTORY}");
    println!(
        "  KUBECONFIG={dir}/hub.kubeconfig kubectl get secrets -n {ARGOCD_NAMESPACE} -l argocd.argoproj.io/secret-type=cluster"
    );
    println!("  KUBECONFIG={dir}/hub.kubeconfig kubectl get secrets -n {FLUX_NAMESPACE}");
    println!("  KUBECONFIG={dir}/hub.kubeconfig kubectl get events -n {INVENTORY}");
    println!(
        "  KUBECONFIG={dir}/hub.kubeconfig kubectl label clusters.cluster.x-k8s.io -n {CAPI_NAMESPACE} prod-eu tier=gold   # then watch the profile and consumers follow"
    );
    if let Some(path) = paths.first() {
        println!("  kubectl --kubeconfig {} auth whoami", path.display());
    }
    let mut failures = Vec::new();
    if !converged {
        failures.push(format!(
            "not converged within {} s (what was still awaited is listed above)",
            options.timeout.as_secs()
        ));
    }
    if !proved {
        let failed = proofs.iter().filter(|p| !p.ok).count();
        failures.push(format!(
            "{failed} of {} generated kubeconfigs were not accepted by their member as their sink's identity",
            proofs.len()
        ));
    }
    Ok((estate, failures))
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
    let (mut estate, failures) = match run(&options).await {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!("demo: {err}");
            return ExitCode::FAILURE;
        }
    };
    if options.once {
        if failures.is_empty() {
            println!("\ndemo: everything converged and every kubeconfig was proved on its member");
        } else {
            println!("\ndemo: FAILED: {}", failures.join("; "));
        }
        estate.stop_adapters().await;
        drop(estate);
        return if failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    println!("\nThe bridge is running. Ctrl-C stops the adapters, then the control planes.");
    if let Err(err) = tokio::signal::ctrl_c().await {
        eprintln!("demo: {err}");
    }
    println!("stopping the adapters...");
    estate.stop_adapters().await;
    println!("stopping the control planes...");
    drop(estate);
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
