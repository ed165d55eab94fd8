//! The real binary refuses bad flags at start, with a message naming the flag and the problem,
//! before it contacts any cluster.

use std::process::Command;

fn refused(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_argocd-sink"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .map_err(|err| err.to_string());
    let output = match output {
        Ok(output) => output,
        Err(err) => panic!("cannot run argocd-sink: {err}"),
    };
    assert_eq!(output.status.code(), Some(2), "{args:?} was not refused");
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn invalid_flags_are_refused_at_start_with_a_clear_message() {
    let stderr = refused(&["--argocd-namespace", "Argo_CD"]);
    assert!(stderr.contains("--argocd-namespace"), "{stderr}");
    assert!(stderr.contains("not a valid namespace name"), "{stderr}");
    let stderr = refused(&["--cluster-name-template", "{cluster}"]);
    assert!(stderr.contains("unknown placeholder"), "{stderr}");
    let stderr = refused(&["--cluster-name-template", "fixed"]);
    assert!(stderr.contains("lacks {name}"), "{stderr}");
    let stderr = refused(&["--namespaces", "ok,Not-OK"]);
    assert!(stderr.contains("--namespaces"), "{stderr}");
    // Shared sink flags resolve before anything starts, too.
    let stderr = refused(&["--token-ttl", "5m"]);
    assert!(stderr.contains("below the minimum"), "{stderr}");
}
