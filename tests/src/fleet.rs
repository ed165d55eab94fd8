//! A hub and N member control planes.

use tokio::sync::OnceCell;

use crate::Result;
use crate::controlplane::{ControlPlane, ControlPlaneOptions};

/// A hub and its members, each a separate real control plane.
#[derive(Debug)]
pub struct Fleet {
    /// The hub: where inventories, sources and sinks live.
    pub hub: ControlPlane,
    /// The member clusters.
    pub members: Vec<ControlPlane>,
}

impl Fleet {
    /// Start a hub and `members` members concurrently. Dropping the fleet stops them all.
    pub async fn start(members: usize) -> Result<Self> {
        Self::start_with(ControlPlaneOptions::named("hub"), members).await
    }

    /// As [`Fleet::start`] with hub options (e.g. controller-manager controllers).
    pub async fn start_with(hub: ControlPlaneOptions, members: usize) -> Result<Self> {
        let hub_start = ControlPlane::start(hub);
        let member_starts = futures::future::join_all(
            (1..=members)
                .map(|i| ControlPlane::start(ControlPlaneOptions::named(&format!("member-{i}")))),
        );
        let (hub, members) = tokio::join!(hub_start, member_starts);
        let hub = hub?;
        let members = members.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(Self { hub, members })
    }
}

/// The fleet shared by all tests of one test binary: a hub and two members, started on first use
/// and stopped when the binary exits. Tests isolate themselves with their own namespaces.
pub async fn shared_fleet() -> Result<&'static Fleet> {
    static FLEET: OnceCell<Fleet> = OnceCell::const_new();
    FLEET
        .get_or_try_init(|| async {
            let fleet = Fleet::start(2).await?;
            Ok::<_, crate::BoxError>(Fleet {
                hub: fleet.hub.into_shared(),
                members: fleet
                    .members
                    .into_iter()
                    .map(ControlPlane::into_shared)
                    .collect(),
            })
        })
        .await
}
