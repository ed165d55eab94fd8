//! The sink engine: ClusterProfiles become consumer registrations, each with its own minted,
//! rotating, revocable member identity.
//!
//! A sink adapter supplies a [`Sink`]: its name, its default member identity, the hub kinds it
//! writes and one pure [`Sink::render`]. The engine does the rest: watching profiles (namespaces and
//! label selector), dropping duplicates by member id, resolving bootstrap access (provider file,
//! built-in providers, exec plugins), minting and verifying the member identity, applying the
//! rendered hub objects, rotating tokens, cleaning up on deletion behind a bounded finalizer, and
//! sweeping orphans.

pub mod claims;
pub mod duplicates;
mod engine;
pub mod metrics;
mod published;
pub mod record;
pub mod render_helpers;
pub mod schedule;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::core::ApiResource;
use serde_json::Value;

pub use engine::run;
pub use metrics::SinkMetrics;
pub use schedule::RenewalPolicy;

use crate::access::ProviderFile;
use crate::error::{Error, Result};
use crate::kubeconfig::KubeconfigNames;
use crate::member::{MIN_TOKEN_TTL, MemberIdentity};
use crate::names::is_dns1123_label;
use crate::profile::ClusterProfile;
use crate::runtime::{Metrics, RuntimeArgs};
use crate::sensitive::Sensitive;

/// Label on every hub object a sink writes: which sink.
pub const LABEL_SINK: &str = crate::member::LABEL_SINK;
/// Label on every hub object (and member object) a sink writes: which sink instance. Sweeps and
/// lookups select on it, so two instances sharing a namespace never touch each other's objects.
pub const LABEL_INSTANCE: &str = crate::member::LABEL_INSTANCE;
/// Annotation on every credential Secret: the registration record ([`record::Record`]): what was
/// minted on which member through which bootstrap access. Revocation follows it, never the
/// profile; a restarted sink adopts it instead of minting again.
pub const ANNOTATION_REGISTRATION: &str = "inventory-bridge.io/registration";
/// Label on every hub object a sink writes: the uid of the profile it was rendered from.
pub const LABEL_PROFILE_UID: &str = "inventory-bridge.io/profile-uid";
/// Label on every hub object a sink writes: the namespace (inventory) of that profile.
pub const LABEL_PROFILE_NAMESPACE: &str = "inventory-bridge.io/profile-namespace";
/// Annotation: `<namespace>/<name>` of the profile.
pub const ANNOTATION_PROFILE: &str = "inventory-bridge.io/profile";
/// Annotation on the credential Secret: when the published token expires (RFC 3339).
pub const ANNOTATION_TOKEN_EXPIRES_AT: &str = "inventory-bridge.io/token-expires-at";
/// Annotation on the credential Secret: when the engine plans to renew it (RFC 3339).
pub const ANNOTATION_TOKEN_RENEW_AFTER: &str = "inventory-bridge.io/token-renew-after";

/// The credential the engine minted for one profile, handed to [`Sink::render`].
#[derive(Clone, Debug)]
pub struct MintedCredential {
    /// A kubeconfig with one cluster, one token user and one context (namespace = the account's).
    pub kubeconfig: Sensitive,
    /// The token alone (for consumers that want `bearerToken` rather than a kubeconfig).
    pub token: Sensitive,
    /// The member's API server URL.
    pub server: String,
    /// The member's CA (PEM), if the profile gave one.
    pub ca_pem: Option<String>,
    /// `tls-server-name`, if the profile gave one.
    pub tls_server_name: Option<String>,
    /// Server certificate verification is off (only when the provider file allowed it).
    pub insecure_skip_tls_verify: bool,
    /// Proxy to reach the server through, if the profile gave one.
    pub proxy_url: Option<String>,
    /// When the token expires.
    pub expires_at: Timestamp,
    /// The ServiceAccount's namespace on the member.
    pub namespace: String,
    /// The ServiceAccount's name on the member.
    pub service_account: String,
}

/// Where a sink writes for one profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    /// Namespace of the hub objects for this profile.
    pub namespace: String,
}

/// One hub object a sink wants: its kind and its content (with `metadata.name` and
/// `metadata.namespace`). The engine adds its own labels and annotations and applies it.
#[derive(Clone, Debug)]
pub struct DesiredObject {
    /// Kind of the object.
    pub resource: ApiResource,
    /// The object (`apiVersion`, `kind`, `metadata`, ...).
    pub object: Value,
}

/// A per-profile problem: a bounded category and a message naming the field, never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Bounded category (metric label).
    pub category: &'static str,
    /// Human explanation.
    pub message: String,
}

impl Problem {
    /// A problem.
    pub fn new(category: &'static str, message: impl Into<String>) -> Self {
        Self {
            category,
            message: message.into(),
        }
    }
}

/// What [`Sink::render`] produces: the objects, plus problems that did not prevent rendering
/// (e.g. a label value skipped), which the engine reports.
#[derive(Clone, Debug, Default)]
pub struct Rendered {
    /// Objects to apply, in order.
    pub objects: Vec<DesiredObject>,
    /// Non-fatal problems to report.
    pub warnings: Vec<Problem>,
}

/// A consumer of ClusterProfiles. Everything but `render` is a constant description.
pub trait Sink: Send + Sync + 'static {
    /// Adapter name: field manager, Event reporter, label value, default instance.
    const NAME: &'static str;

    /// Default rules of the member ClusterRole (what the consumer's own registration tool grants).
    fn default_member_rules() -> Vec<PolicyRule>;

    /// Names inside the minted kubeconfig.
    fn kubeconfig_names() -> KubeconfigNames;

    /// The hub kinds `render` produces (for deletion and the orphan sweep).
    fn hub_kinds() -> Vec<ApiResource>;

    /// Namespaced mode of the member identity: the member namespaces its Roles cover (empty, the
    /// default: one ClusterRole and ClusterRoleBinding).
    fn member_namespaces(&self) -> Vec<String> {
        Vec::new()
    }

    /// Names in the consumer that must be unique among profiles (e.g. an Argo CD cluster name),
    /// from the profile's metadata alone so the engine can compare all profiles cheaply. Checked
    /// before minting: when two profiles claim the same one, the older registers and the other is
    /// refused with a `name-conflict` problem (and its hub objects are withdrawn). Pure; none by
    /// default.
    fn claims(&self, _profile: &ObjectMeta, _config: &SinkConfig) -> Vec<String> {
        Vec::new()
    }

    /// Hub namespaces `render` writes to, when not the engine's target namespace of each profile
    /// (e.g. one Secret per consumer namespace); deletion and the orphan sweep look there.
    fn hub_namespaces(&self) -> Option<Vec<String>> {
        None
    }

    /// The hub objects for `profile` with `credential`. Pure: no I/O.
    fn render(
        &self,
        profile: &ClusterProfile,
        credential: &MintedCredential,
        config: &SinkConfig,
    ) -> std::result::Result<Rendered, Problem>;

    /// The token published in one of our credential Secrets, so a restarted sink can adopt the
    /// registration instead of minting again. The default finds a kubeconfig (any key) with a
    /// token user, or a JSON document with `bearerToken` (Argo CD's `config`).
    fn published_token(&self, secret: &Secret) -> Option<Sensitive> {
        record::published_token(secret)
    }
}

/// The engine's settings, resolved from [`SinkArgs`] (or built directly by tests).
#[derive(Clone, Debug)]
pub struct SinkOptions {
    /// The sink instance: ownership labels, finalizer and default member names derive from it.
    pub instance: String,
    /// Inventories to watch; empty means all namespaces (only with `all_namespaces`).
    pub inventory_namespaces: Vec<String>,
    /// Serve every namespace (an explicit operator choice).
    pub all_namespaces: bool,
    /// `--bootstrap-secret-namespace`: extra namespaces built-in providers may read Secrets from.
    pub extra_secret_namespaces: Vec<String>,
    /// Release mode: revoke and deregister every profile of the served inventories, remove our
    /// finalizers, then stop (uninstalling the sink).
    pub release_finalizers: bool,
    /// Label selector on profiles.
    pub profile_selector: Option<String>,
    /// Namespace of the hub objects; `None` means each profile's own namespace.
    pub target_namespace: Option<String>,
    /// Bootstrap access providers.
    pub providers: ProviderFile,
    /// Namespace of `token-secret` Secrets named by `{clusterName}`; default: the profile's.
    pub credentials_namespace: Option<String>,
    /// What to create on members.
    pub identity: MemberIdentity,
    /// Requested token lifetime.
    pub token_ttl: Duration,
    /// When to renew.
    pub renewal: RenewalPolicy,
    /// Leave the member identity in place when a profile is deleted.
    pub keep_member_identity: bool,
    /// How long deletion waits for an unreachable member before giving up on it.
    pub cleanup_timeout: Duration,
    /// Exec plugin timeout.
    pub exec_timeout: Duration,
    /// Connect/read timeout of member requests.
    pub member_timeout: Duration,
    /// Longest retry backoff.
    pub max_backoff: Duration,
    /// Profiles reconciled at once.
    pub concurrency: u16,
    /// Orphan sweep period (also the longest time between two checks of a profile).
    pub resync: Duration,
}

impl SinkOptions {
    /// Defaults for sink `S` (no inventory yet, built-in providers, 24 h tokens).
    pub fn defaults<S: Sink>() -> Self {
        Self {
            instance: S::NAME.to_string(),
            inventory_namespaces: Vec::new(),
            all_namespaces: false,
            extra_secret_namespaces: Vec::new(),
            release_finalizers: false,
            profile_selector: None,
            target_namespace: None,
            providers: ProviderFile::default(),
            credentials_namespace: None,
            identity: MemberIdentity::default_for(S::NAME, S::default_member_rules()),
            token_ttl: Duration::from_secs(24 * 3600),
            renewal: RenewalPolicy::default(),
            keep_member_identity: false,
            cleanup_timeout: Duration::from_secs(300),
            exec_timeout: Duration::from_secs(30),
            member_timeout: Duration::from_secs(15),
            max_backoff: Duration::from_secs(300),
            concurrency: 8,
            resync: Duration::from_secs(300),
        }
    }
}

/// Flags every sink shares. Each falls back to the environment variable named beside it.
#[derive(Clone, Debug, clap::Args)]
pub struct SinkArgs {
    /// Inventory namespace to serve (repeatable, or comma-separated). Required unless
    /// --all-namespaces.
    #[arg(
        long = "inventory-namespace",
        env = "IB_INVENTORY_NAMESPACE",
        value_delimiter = ','
    )]
    pub inventory_namespaces: Vec<String>,

    /// Serve the profiles of every namespace (whoever can write a profile anywhere is then
    /// trusted as an inventory writer).
    #[arg(long, env = "IB_ALL_NAMESPACES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub all_namespaces: bool,

    /// This sink instance's name: ownership labels, finalizer and default member identity derive
    /// from it, so two instances never touch each other's objects. Default: the sink name.
    #[arg(long, env = "IB_INSTANCE")]
    pub instance: Option<String>,

    /// Extra namespace built-in providers may read bootstrap Secrets from (repeatable, or
    /// comma-separated), e.g. the namespaces of the CAPI Clusters. Default: only the profile's own
    /// namespace (kubeconfig-secret) / the ManagedCluster's hub namespace (token-secret).
    #[arg(
        long = "bootstrap-secret-namespace",
        env = "IB_BOOTSTRAP_SECRET_NAMESPACE",
        value_delimiter = ','
    )]
    pub bootstrap_secret_namespaces: Vec<String>,

    /// Uninstall mode: revoke every member identity and remove every registration and finalizer
    /// of the served inventories, then exit.
    #[arg(long, env = "IB_RELEASE_FINALIZERS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub release_finalizers: bool,

    /// Label selector choosing which ClusterProfiles to register.
    #[arg(long, env = "IB_PROFILE_SELECTOR")]
    pub profile_selector: Option<String>,

    /// Provider file (KEP-4322 JSON): which access providers to use, in order, and how.
    /// Without it: the built-in `kubeconfig-secret` then `token-secret`.
    #[arg(long, env = "IB_CLUSTERPROFILE_PROVIDER_FILE")]
    pub clusterprofile_provider_file: Option<PathBuf>,

    /// Namespace of `token-secret` Secrets given as `{clusterName}` (default: the profile's).
    #[arg(long, env = "IB_CREDENTIALS_NAMESPACE")]
    pub credentials_namespace: Option<String>,

    /// File of RBAC PolicyRules (YAML/JSON list) for the member ClusterRole, replacing the sink's
    /// default rules.
    #[arg(long, env = "IB_MEMBER_RULES")]
    pub member_rules: Option<PathBuf>,

    /// Namespace of the member ServiceAccount (default: `inventory-bridge`).
    #[arg(long, env = "IB_MEMBER_NAMESPACE")]
    pub member_namespace: Option<String>,

    /// Name of the member ServiceAccount (default: `inventory-bridge-<instance>`).
    #[arg(long, env = "IB_MEMBER_SERVICE_ACCOUNT")]
    pub member_service_account: Option<String>,

    /// Lifetime of minted tokens (minimum 10m, the apiserver's floor), e.g. `24h`, `90m`.
    #[arg(long, env = "IB_TOKEN_TTL", default_value = "24h", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Keep the member ServiceAccount and binding when a profile is deleted.
    #[arg(long, env = "IB_KEEP_MEMBER_IDENTITY", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub keep_member_identity: bool,

    /// How long deletion waits for an unreachable member before giving up on the member side.
    #[arg(long, env = "IB_CLEANUP_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub cleanup_timeout: Duration,

    /// Exec credential plugin timeout.
    #[arg(long, env = "IB_EXEC_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub exec_timeout: Duration,

    /// Connect and read timeout of requests to members.
    #[arg(long, env = "IB_MEMBER_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub member_timeout: Duration,

    /// Profiles reconciled concurrently.
    #[arg(long, env = "IB_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    /// Orphan sweep period.
    #[arg(long, env = "IB_RESYNC", default_value = "5m", value_parser = parse_duration)]
    pub resync: Duration,
}

impl SinkArgs {
    /// Resolve flags into options for sink `S`: reads the provider and rules files.
    pub fn resolve<S: Sink>(&self, target_namespace: Option<String>) -> Result<SinkOptions> {
        let mut options = SinkOptions::defaults::<S>();
        if self.token_ttl < MIN_TOKEN_TTL {
            return Err(Error::Config(format!(
                "--token-ttl {:?} is below the minimum of 10m (the apiserver refuses shorter TokenRequests)",
                self.token_ttl
            )));
        }
        if let Some(path) = &self.clusterprofile_provider_file {
            options.providers = ProviderFile::read(path)
                .map_err(|err| Error::Config(format!("--clusterprofile-provider-file: {err}")))?;
        }
        let rules = match &self.member_rules {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| {
                    Error::Config(format!("--member-rules {}: {err}", path.display()))
                })?;
                crate::member::parse_rules(&text).map_err(|err| {
                    Error::Config(format!("--member-rules {}: {err}", path.display()))
                })?
            }
            None => S::default_member_rules(),
        };
        let instance = self
            .instance
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| S::NAME.to_string());
        // It becomes part of a label value, a finalizer and member object names.
        if !is_dns1123_label(&instance) || instance.len() > 40 {
            return Err(Error::Config(format!(
                "--instance {instance:?} must be a DNS-1123 label of at most 40 characters"
            )));
        }
        let default_identity = MemberIdentity::default_for(&instance, rules.clone());
        let namespace = self
            .member_namespace
            .clone()
            .unwrap_or(default_identity.namespace);
        let account = self
            .member_service_account
            .clone()
            .unwrap_or(default_identity.service_account);
        options.identity = MemberIdentity::new(&instance, &namespace, &account, rules);
        options.instance = instance;
        options.inventory_namespaces = self
            .inventory_namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        if let Some(bad) = options
            .inventory_namespaces
            .iter()
            .find(|n| !is_dns1123_label(n))
        {
            return Err(Error::Config(format!(
                "--inventory-namespace {bad:?} is not a namespace name"
            )));
        }
        options.all_namespaces = self.all_namespaces;
        match (options.inventory_namespaces.is_empty(), self.all_namespaces) {
            (true, false) => {
                return Err(Error::Config(
                    "name the inventories to serve with --inventory-namespace (or, to trust every profile writer of the hub, --all-namespaces)".into(),
                ));
            }
            (false, true) => {
                return Err(Error::Config(
                    "--inventory-namespace and --all-namespaces exclude each other".into(),
                ));
            }
            _ => {}
        }
        options.extra_secret_namespaces = self
            .bootstrap_secret_namespaces
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        crate::access::check_secret_namespaces(
            "--bootstrap-secret-namespace",
            &options.extra_secret_namespaces,
        )
        .or_else(|err| {
            if options.extra_secret_namespaces.is_empty() {
                Ok(())
            } else {
                Err(Error::Config(err))
            }
        })?;
        options.release_finalizers = self.release_finalizers;
        options.profile_selector = self.profile_selector.clone().filter(|s| !s.is_empty());
        options.target_namespace = target_namespace.filter(|s| !s.is_empty());
        options.credentials_namespace = self.credentials_namespace.clone();
        options.token_ttl = self.token_ttl;
        options.keep_member_identity = self.keep_member_identity;
        options.cleanup_timeout = self.cleanup_timeout;
        options.exec_timeout = self.exec_timeout;
        options.member_timeout = self.member_timeout;
        options.concurrency = self.concurrency.max(1);
        options.resync = self.resync.max(Duration::from_secs(10));
        Ok(options)
    }
}

impl SinkArgs {
    /// [`SinkArgs::resolve`], then what the sink value itself declares (namespaced mode).
    pub fn resolve_for<S: Sink>(
        &self,
        sink: &S,
        target_namespace: Option<String>,
    ) -> Result<SinkOptions> {
        let mut options = self.resolve::<S>(target_namespace)?;
        options.identity = options.identity.with_namespaces(sink.member_namespaces());
        Ok(options)
    }
}

/// Parse `90s`, `10m`, `24h`, `1h30m`, `2d` (or plain seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(format!("{text:?}: unknown unit {c:?} (use s, m, h, d)")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: a number must precede {c:?}"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(format!("{text:?} is not a duration like 90s, 10m, 24h"));
    }
    Ok(Duration::from_secs(total))
}

/// Label rules, one implementation for the whole core (re-exported here for sink renders).
pub use crate::names::{is_valid_label_key, is_valid_label_value};

/// `<base><suffix>`, kept within `max` characters (DNS names): when too long, the base is cut
/// and a short stable hash of the full base is inserted, so distinct bases stay distinct. The hash
/// is SHA-256 ([`crate::names::short_hash`]): these names are persisted, so they must not change
/// with the Rust release (std's hasher may). Cut by characters, never inside one.
pub fn bounded_name(base: &str, suffix: &str, max: usize) -> String {
    let full = format!("{base}{suffix}");
    if full.chars().count() <= max {
        return full;
    }
    let hash = crate::names::short_hash(base);
    let keep = max.saturating_sub(suffix.chars().count() + hash.len() + 1);
    let cut: String = base.chars().take(keep).collect();
    let cut = cut.trim_end_matches(['-', '.']);
    format!("{cut}-{hash}{suffix}")
}

/// Everything a sink binary's `main` does: shared runtime flags, sink flags, the sink value and
/// where its hub objects go; returns the process exit code.
pub async fn run_main<S: Sink>(
    runtime: RuntimeArgs,
    args: SinkArgs,
    sink: S,
    target_namespace: Option<String>,
) -> std::process::ExitCode {
    let options = match args.resolve_for(&sink, target_namespace) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("{}: {err}", S::NAME);
            return std::process::ExitCode::from(2);
        }
    };
    let mut metrics = Metrics::new(S::NAME);
    let sink_metrics = SinkMetrics::register(metrics.registry_mut());
    let sink = Arc::new(sink);
    crate::runtime::run_main(S::NAME, runtime, metrics, move |context| {
        run(sink.clone(), options.clone(), sink_metrics.clone(), context)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        for bad in ["", "h", "10x", "5m3", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_validation_matches_kubernetes_rules() {
        for ok in ["", "a", "v1.36.3", "prod_eu-1", &"a".repeat(63)] {
            assert!(is_valid_label_value(ok), "{ok}");
        }
        for bad in ["-a", "a-", "a b", "ä", &"a".repeat(64), "a/b"] {
            assert!(!is_valid_label_value(bad), "{bad}");
        }
        for ok in [
            "env",
            "id.k8s.io",
            "cluster.clusterset.k8s.io",
            "x-k8s.io/cluster-manager",
        ] {
            assert!(is_valid_label_key(ok), "{ok}");
        }
        for bad in ["", "/a", "Upper.io/a", "a/", "a b"] {
            assert!(!is_valid_label_key(bad), "{bad}");
        }
    }

    #[test]
    fn long_names_are_bounded_and_stay_distinct() {
        assert_eq!(
            bounded_name("p", "-sveltos-kubeconfig", 253),
            "p-sveltos-kubeconfig"
        );
        let a = bounded_name(&"a".repeat(250), "-sveltos-kubeconfig", 253);
        let b = bounded_name(&format!("{}b", "a".repeat(249)), "-sveltos-kubeconfig", 253);
        assert!(a.len() <= 253 && b.len() <= 253);
        assert!(a.ends_with("-sveltos-kubeconfig"));
        assert_ne!(a, b);
        // Stable across releases: SHA-256, not std's hasher.
        assert_eq!(
            a,
            format!(
                "{}-{}-sveltos-kubeconfig",
                "a".repeat(253 - 19 - 9),
                crate::names::short_hash(&"a".repeat(250))
            )
        );
    }

    #[test]
    fn bounded_name_cuts_by_characters_without_panicking() {
        // A multi-byte character straddling the cut point used to panic (byte slicing).
        let base = "é".repeat(200);
        let name = bounded_name(&base, "-x", 63);
        assert_eq!(name.chars().count(), 63, "{name}");
        assert!(name.ends_with("-x"));
        let short = bounded_name("ü", "-x", 63);
        assert_eq!(short, "ü-x");
    }
}
