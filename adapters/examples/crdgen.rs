//! Prints the ClusterProfile CRD, or writes it to the path given as the first argument.
//! `make crds` writes it where the charts use it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match adapters::crd::cluster_profile_crd_yaml() {
        Ok(yaml) => yaml,
        Err(err) => {
            eprintln!("crdgen: cannot render the CRD: {err}");
            return ExitCode::FAILURE;
        }
    };
    match std::env::args().nth(1) {
        None => print!("{yaml}"),
        Some(path) => {
            if let Err(err) = std::fs::write(&path, yaml) {
                eprintln!("crdgen: cannot write {path}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
