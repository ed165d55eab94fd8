//! The real binary refuses bad flags at start, with a message naming the flag and the problem,
//! before it contacts any cluster.

use std::process::Command;

fn refused(args: &[&str]) -> String {
    let output = match Command::new(env!("CARGO_BIN_EXE_flux-sink"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
    {
        Ok(output) => output,
        Err(err) => panic!("cannot run flux-sink: {err}"),
    };
    assert_eq!(output.status.code(), Some(2), "{args:?} was not refused");
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn invalid_flags_are_refused_at_start_with_a_clear_message() {
    let stderr = refused(&["--secret-name-template", "{name}_Kubeconfig"]);
    assert!(stderr.contains("--secret-name-template"), "{stderr}");
    assert!(stderr.contains("not a valid object name"), "{stderr}");
    let stderr = refused(&["--secret-name-template", "{nam}"]);
    assert!(stderr.contains("unknown placeholder"), "{stderr}");
    let stderr = refused(&["--flux-namespace", "Flux_System"]);
    assert!(stderr.contains("not a valid namespace name"), "{stderr}");
    let stderr = refused(&["--member-rules", "/nonexistent/rules.yaml"]);
    assert!(stderr.contains("--member-rules"), "{stderr}");
}
