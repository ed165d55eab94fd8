//! `make demo --once` as a user runs it: the demo binary (built next to this test) against a
//! fresh directory must exit 0 and print the inventory table with every profile, the shared
//! member registered once per consumer (the other profile reported as its duplicate), the
//! provisioning cluster unregistered, and a successful proof per generated kubeconfig.

// Integration test file: a broken fixture fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn make_demo_once_converges_registers_and_proves() {
    let dir = std::env::temp_dir().join(format!("inventory-bridge-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--once", "--timeout", "90", "--dir"])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the demo binary starts");
    // Bounded: the demo itself gives up after 90 s of converging; kill it if it hangs beyond.
    let deadline = started + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not finish within 240 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    eprintln!(
        "MEASURED demo --once: {:.1} s\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "demo failed: {status}\n{stderr}");

    let row = |profile: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{profile} ")))
            .unwrap_or_else(|| panic!("no table row for {profile}"))
            .to_string()
    };
    // Every profile, with its manager; the registered ones with all three consumers.
    let prod = row("capi-demo-prod-eu");
    assert!(
        prod.contains("cluster-api") && prod.ends_with("sveltos,argocd,flux"),
        "{prod}"
    );
    let ap = row("ap-south");
    assert!(
        ap.contains("open-cluster-management") && ap.ends_with("sveltos,argocd,flux"),
        "{ap}"
    );
    // The shared member: registered once (through the older CAPI profile), the OCM one a duplicate.
    let shared = row("eu-central");
    assert!(shared.contains("open-cluster-management"), "{shared}");
    assert!(
        shared.ends_with("- (duplicate of capi-demo-prod-eu)"),
        "{shared}"
    );
    let id = |line: &str| line.split_whitespace().nth(2).unwrap().to_string();
    assert_eq!(id(&shared), id(&prod), "same member id");
    // Still provisioning: a profile, not joined, no registration.
    let staging = row("capi-demo-staging-us");
    assert!(
        staging.contains("False (ControlPlaneNotInitialized)"),
        "{staging}"
    );
    assert!(staging.ends_with(" -"), "{staging}");

    // One proof per consumer per registered profile, each the sink's own identity.
    for sink in ["sveltos-sink", "argocd-sink", "flux-sink"] {
        for profile in ["capi-demo-prod-eu", "ap-south"] {
            let proof = stdout
                .lines()
                .find(|l| {
                    l.trim_start().starts_with("ok ") && l.contains(sink) && l.contains(profile)
                })
                .unwrap_or_else(|| panic!("no successful proof for {sink} {profile}"));
            assert!(
                proof.contains(&format!(
                    "SelfSubjectReview says system:serviceaccount:inventory-bridge:inventory-bridge-{sink}"
                )),
                "{proof}"
            );
        }
    }
    // The duplicate got no registration, so nothing to prove for it.
    assert!(
        !stdout
            .lines()
            .any(|l| l.trim_start().starts_with("ok ") && l.contains("eu-central"))
    );
    // The generated kubeconfigs are written, owner-only.
    use std::os::unix::fs::PermissionsExt;
    let generated = dir.join("kubeconfigs/flux-sink-ap-south.kubeconfig");
    let mode = std::fs::metadata(&generated).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", generated.display());
    // No credential in what the demo printed.
    let kubeconfig = std::fs::read_to_string(&generated).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&kubeconfig).unwrap();
    let token = doc["users"][0]["user"]["token"]
        .as_str()
        .expect("the generated kubeconfig has a token")
        .to_string();
    assert!(token.len() > 20);
    assert!(!stdout.contains(&token) && !stderr.contains(&token));
    let _ = std::fs::remove_dir_all(&dir);
}
