//! The core error type. Every error maps to a bounded `category()`, used as the metric label and as
//! the Event reason, so dashboards and alerts never see unbounded values (object names, messages).

use std::fmt;

/// A bounded set of error categories shared by every adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// The API server refused the request for lack of permission (RBAC short).
    Forbidden,
    /// A write lost a race or an ownership conflict (server-side apply conflict, 409).
    Conflict,
    /// A referenced object or API (CRD) does not exist.
    NotFound,
    /// The API server rejected an object as invalid (422).
    Rejected,
    /// Any other failure talking to an API server (network, 5xx, timeouts).
    KubeApi,
    /// A source or input object cannot be used as it is (bad labels, malformed data).
    InvalidInput,
    /// The adapter's own configuration (flags, files) is wrong.
    Config,
    /// Leader election failed.
    LeaderElection,
    /// (De)serialisation of our own data failed.
    Serialization,
    /// Local I/O (files, sockets) failed.
    Io,
}

impl Category {
    /// Every category, for tests and metric pre-registration.
    pub const ALL: [Category; 10] = [
        Category::Forbidden,
        Category::Conflict,
        Category::NotFound,
        Category::Rejected,
        Category::KubeApi,
        Category::InvalidInput,
        Category::Config,
        Category::LeaderElection,
        Category::Serialization,
        Category::Io,
    ];

    /// The label value: kebab-case, stable.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Forbidden => "forbidden",
            Category::Conflict => "conflict",
            Category::NotFound => "not-found",
            Category::Rejected => "rejected",
            Category::KubeApi => "kube-api",
            Category::InvalidInput => "invalid-input",
            Category::Config => "config",
            Category::LeaderElection => "leader-election",
            Category::Serialization => "serialization",
            Category::Io => "io",
        }
    }

    /// The Event reason (PascalCase, as Kubernetes Events expect).
    pub fn event_reason(self) -> &'static str {
        match self {
            Category::Forbidden => "Forbidden",
            Category::Conflict => "Conflict",
            Category::NotFound => "NotFound",
            Category::Rejected => "Rejected",
            Category::KubeApi => "KubeApiError",
            Category::InvalidInput => "InvalidInput",
            Category::Config => "ConfigError",
            Category::LeaderElection => "LeaderElectionError",
            Category::Serialization => "SerializationError",
            Category::Io => "IoError",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Anything that can say which bounded category it belongs to. Adapter error types implement it
/// so the engines can count and report them without knowing their variants.
pub trait Categorized {
    /// The bounded category.
    fn category(&self) -> Category;
}

/// Errors of the shared core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to an API server failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// Building a client from a kubeconfig or the in-cluster environment failed.
    #[error("cannot configure the Kubernetes client: {0}")]
    ClientConfig(String),
    /// An input object cannot be used; the message says which field and why.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The adapter's configuration is wrong.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Leader election failed.
    #[error("leader election failed: {0}")]
    LeaderElection(#[from] kube_lease_manager::LeaseManagerError),
    /// This replica lost the leader lease: it stopped writing and ends (its Pod restarts).
    #[error("lost the leader lease: {0}")]
    LeadershipLost(String),
    /// (De)serialisation of our own data failed.
    #[error("serialization failed: {0}")]
    Serialization(#[from] serde_json::Error),
    /// Local I/O failed.
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// A problem an adapter already classified (its category is kept, not re-derived).
    #[error("{message}")]
    Classified {
        /// The adapter's category.
        category: Category,
        /// What went wrong (never a secret).
        message: String,
    },
}

impl Categorized for Error {
    fn category(&self) -> Category {
        match self {
            Error::Kube(err) => kube_category(err),
            Error::ClientConfig(_) | Error::Config(_) => Category::Config,
            Error::InvalidInput(_) => Category::InvalidInput,
            Error::LeaderElection(_) | Error::LeadershipLost(_) => Category::LeaderElection,
            Error::Serialization(_) => Category::Serialization,
            Error::Io(_) => Category::Io,
            Error::Classified { category, .. } => *category,
        }
    }
}

impl Error {
    /// The bounded category (shortcut for [`Categorized::category`]).
    pub fn category(&self) -> Category {
        Categorized::category(self)
    }
}

/// The category of a kube client error, from the API server's status code where there is one.
pub fn kube_category(err: &kube::Error) -> Category {
    match err {
        kube::Error::Api(status) => match status.code {
            403 | 401 => Category::Forbidden,
            404 => Category::NotFound,
            409 => Category::Conflict,
            400 | 422 => Category::Rejected,
            _ => Category::KubeApi,
        },
        kube::Error::SerdeError(_) => Category::Serialization,
        _ => Category::KubeApi,
    }
}

/// Result with the core error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_distinct_kebab_case_labels() {
        let labels: std::collections::BTreeSet<&str> =
            Category::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), Category::ALL.len());
        for label in labels {
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{label}"
            );
        }
    }

    #[test]
    fn api_status_codes_map_to_categories() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        assert_eq!(kube_category(&api(403)), Category::Forbidden);
        assert_eq!(kube_category(&api(404)), Category::NotFound);
        assert_eq!(kube_category(&api(409)), Category::Conflict);
        assert_eq!(kube_category(&api(422)), Category::Rejected);
        assert_eq!(kube_category(&api(503)), Category::KubeApi);
        assert_eq!(
            Error::InvalidInput("label value too long".into()).category(),
            Category::InvalidInput
        );
    }
}
