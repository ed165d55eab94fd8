//! Proof that the generated kubeconfigs work: each one called against its member, and written
//! out for the user.

use std::path::PathBuf;

use super::{Estate, Inventory, write_private};
use crate::{Result, sinks};

/// The outcome of calling a member with a generated kubeconfig.
#[derive(Clone, Debug)]
pub struct Proof {
    /// The sink.
    pub sink: String,
    /// The profile.
    pub profile: String,
    /// The member control plane called.
    pub member: String,
    /// The username the member answered.
    pub username: String,
    /// What it may do (description, allowed).
    pub may: Vec<(String, bool)>,
    /// The call failed.
    pub error: Option<String>,
    /// The member knows it as the recorded ServiceAccount.
    pub ok: bool,
}

impl Estate {
    /// Call each registration's member with its generated kubeconfig: who it is there
    /// (SelfSubjectReview) and what it may do (SelfSubjectAccessReviews).
    pub async fn prove(&self, inventory: &Inventory) -> Vec<Proof> {
        let mut proofs = Vec::new();
        for registration in &inventory.registrations {
            let member = self
                .member_by_server(&registration.server)
                .map(|m| m.name().to_string())
                .unwrap_or_else(|| registration.server.clone());
            let expected = format!(
                "system:serviceaccount:{}",
                registration.service_account.replace('/', ":")
            );
            let outcome = async {
                let client =
                    crate::controlplane::client_from_kubeconfig_yaml(&registration.kubeconfig)
                        .await?;
                let username = sinks::whoami(&client).await?;
                let mut may = Vec::new();
                for (verb, group, resource, namespace) in [
                    ("list", "", "namespaces", None),
                    ("create", "apps", "deployments", Some("default")),
                    ("get", "", "secrets", Some("kube-system")),
                ] {
                    let allowed = sinks::may(&client, verb, group, resource, namespace).await;
                    let what = match namespace {
                        Some(ns) => format!("{verb} {resource} in {ns}"),
                        None => format!("{verb} {resource}"),
                    };
                    may.push((what, allowed));
                }
                Ok::<_, crate::BoxError>((username, may))
            }
            .await;
            proofs.push(match outcome {
                Ok((username, may)) => Proof {
                    sink: registration.sink.clone(),
                    profile: registration.profile.clone(),
                    member,
                    ok: username == expected,
                    username,
                    may,
                    error: None,
                },
                Err(err) => Proof {
                    sink: registration.sink.clone(),
                    profile: registration.profile.clone(),
                    member,
                    ok: false,
                    username: String::new(),
                    may: Vec::new(),
                    error: Some(err.to_string()),
                },
            });
        }
        proofs
    }

    /// Write every generated kubeconfig to `<dir>/kubeconfigs/<sink>-<profile>.kubeconfig`
    /// (0600); returns the paths.
    pub fn write_generated_kubeconfigs(&self, inventory: &Inventory) -> Result<Vec<PathBuf>> {
        let dir = self.dir.join("kubeconfigs");
        std::fs::create_dir_all(&dir)?;
        let mut paths = Vec::new();
        for registration in &inventory.registrations {
            let path = dir.join(format!(
                "{}-{}.kubeconfig",
                registration.sink, registration.profile
            ));
            write_private(&path, &registration.kubeconfig)?;
            paths.push(path);
        }
        Ok(paths)
    }
}
