//! One real Kubernetes control plane on loopback: etcd + kube-apiserver (and, on request,
//! kube-controller-manager with chosen controllers), all from the pinned release.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Namespace;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

use crate::binary::control_plane_binary;
use crate::pki::Pki;
use crate::process::{ManagedProcess, kill_at_exit, remove_at_exit};
use crate::{BoxError, Result};

/// How long a cold apiserver may take to become ready on a busy 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Controllers a test may ask kube-controller-manager to run.
pub mod controllers {
    /// Finishes namespace deletion.
    pub const NAMESPACE: &str = "namespace";
    /// Owner-reference garbage collection.
    pub const GARBAGE_COLLECTOR: &str = "garbage-collector-controller";
    /// Fills aggregated ClusterRoles (admin/edit/view).
    pub const CLUSTERROLE_AGGREGATION: &str = "clusterrole-aggregation-controller";
    /// Creates the `default` ServiceAccount in each namespace.
    pub const SERVICEACCOUNT: &str = "serviceaccount-controller";
    /// Publishes `kube-root-ca.crt` into each namespace.
    pub const ROOT_CA_CERT_PUBLISHER: &str = "root-ca-certificate-publisher-controller";
}

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct ControlPlaneOptions {
    /// Name, used in certificates, the ServiceAccount issuer and directory names.
    pub name: String,
    /// kube-controller-manager controllers to run; none starts no controller-manager.
    pub controllers: Vec<String>,
    /// Write an audit log of every write request (who, what, when, answer) to `audit.log` in the
    /// control plane's directory: attributes writes to users (e.g. one ServiceAccount per replica).
    pub audit: bool,
}

impl ControlPlaneOptions {
    /// A control plane named `name` without controller-manager.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            controllers: Vec::new(),
            audit: false,
        }
    }

    /// Also keep an audit log of write requests ([`ControlPlane::audit_events`]).
    pub fn with_audit(mut self) -> Self {
        self.audit = true;
        self
    }

    /// Also run kube-controller-manager with these controllers.
    pub fn with_controllers(mut self, controllers: &[&str]) -> Self {
        self.controllers = controllers.iter().map(|c| c.to_string()).collect();
        self
    }
}

/// A running control plane. Dropping it kills its processes and removes its directory.
#[derive(Debug)]
pub struct ControlPlane {
    name: String,
    dir: PathBuf,
    pki: Pki,
    apiserver_port: u16,
    etcd: Option<ManagedProcess>,
    apiserver: Option<ManagedProcess>,
    controller_manager: Option<ManagedProcess>,
    controllers: Vec<String>,
    apiserver_args: Vec<String>,
    etcd_args: Vec<String>,
    /// Shared control planes live in statics: their processes and directory go at process exit.
    shared: bool,
}

/// Ports handed out by this process (never handed out twice).
fn handed_out() -> &'static std::sync::Mutex<std::collections::BTreeSet<u16>> {
    static PORTS: std::sync::OnceLock<std::sync::Mutex<std::collections::BTreeSet<u16>>> =
        std::sync::OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// A port that is free now, for a child process to bind. Chosen below Linux's ephemeral range
/// (32768+): a port from `bind(0)` comes from that range, so between our probe and the child's
/// bind an outgoing connection (the many clients of a test) could take it.
pub fn free_port() -> Result<u16> {
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1)
        ^ std::process::id().rotate_left(16);
    for _ in 0..1000 {
        // xorshift: good enough to spread concurrent test binaries over the range.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let port = 20000 + u16::try_from(state % 12000).unwrap_or(0);
        let mut taken = handed_out().lock().map_err(|_| "port registry poisoned")?;
        if taken.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        taken.insert(port);
        return Ok(port);
    }
    Err("no free port found in 20000-31999".into())
}

/// Attempts to start one control plane; a start can lose a port race to another process.
const START_ATTEMPTS: u32 = 3;

/// Root of this test binary's control-plane directories; stale ones of dead test binaries are
/// removed on first use.
fn work_root() -> Result<PathBuf> {
    let base = std::env::temp_dir().join("inventory-bridge-harness");
    std::fs::create_dir_all(&base)?;
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        if let Ok(entries) = std::fs::read_dir(&base) {
            for entry in entries.flatten() {
                let pid = entry
                    .file_name()
                    .to_string_lossy()
                    .strip_prefix("pid-")
                    .and_then(|p| p.parse::<u32>().ok());
                if let Some(pid) = pid
                    && !Path::new(&format!("/proc/{pid}")).exists()
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    });
    let root = base.join(format!("pid-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    Ok(root)
}

impl ControlPlane {
    /// Start etcd and kube-apiserver (and kube-controller-manager if asked) and wait until the
    /// apiserver reports ready.
    pub async fn start(options: ControlPlaneOptions) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::try_start(options.clone()).await {
                Ok(control_plane) => return Ok(control_plane),
                Err(err)
                    if attempt < START_ATTEMPTS
                        && err.to_string().contains("exited while starting") =>
                {
                    eprintln!(
                        "control plane {} failed to start (attempt {attempt}), retrying with new ports: {err}",
                        options.name
                    );
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn try_start(options: ControlPlaneOptions) -> Result<Self> {
        let binary = control_plane_binary()?;
        static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = work_root()?.join(format!("{}-{sequence}", options.name));
        std::fs::create_dir_all(&dir)?;
        let pki = Pki::generate(&options.name)?;
        for (file, pem) in [
            ("ca.crt", &pki.ca_cert),
            ("ca.key", &pki.ca_key),
            ("server.crt", &pki.server_cert),
            ("server.key", &pki.server_key),
            ("sa.key", &pki.service_account_key),
            ("sa.pub", &pki.service_account_public_key),
        ] {
            std::fs::write(dir.join(file), pem)?;
        }
        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let apiserver_port = free_port()?;
        let etcd_args = vec![
            format!("--name={}", options.name),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
            format!(
                "--initial-cluster={}=http://127.0.0.1:{etcd_peer_port}",
                options.name
            ),
            "--unsafe-no-fsync".to_string(),
            "--log-level=warn".to_string(),
        ];
        let etcd = ManagedProcess::spawn(
            "etcd",
            &binary,
            &prefixed("etcd", etcd_args.clone()),
            &dir.join("etcd.log"),
        )?;
        let mut apiserver_args = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            format!("--secure-port={apiserver_port}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--tls-cert-file={}", dir.join("server.crt").display()),
            format!(
                "--tls-private-key-file={}",
                dir.join("server.key").display()
            ),
            format!("--client-ca-file={}", dir.join("ca.crt").display()),
            format!(
                "--service-account-issuer=https://{}.inventory-bridge.test",
                options.name
            ),
            format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ),
            format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ),
            "--authorization-mode=RBAC".to_string(),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            "--disable-admission-plugins=ServiceAccount".to_string(),
            "--allow-privileged=true".to_string(),
            "--endpoint-reconciler-type=none".to_string(),
            "--profiling=false".to_string(),
        ];
        if options.audit {
            std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY)?;
            apiserver_args.extend([
                format!(
                    "--audit-policy-file={}",
                    dir.join("audit-policy.yaml").display()
                ),
                format!("--audit-log-path={}", dir.join("audit.log").display()),
                // Written before the response is sent, so a test reading it after a request
                // returned sees that request.
                "--audit-log-mode=blocking".to_string(),
                "--audit-log-format=json".to_string(),
            ]);
        }
        let mut control_plane = Self {
            name: options.name.clone(),
            dir,
            pki,
            apiserver_port,
            etcd: Some(etcd),
            apiserver: None,
            controller_manager: None,
            controllers: options.controllers.clone(),
            apiserver_args,
            etcd_args,
            shared: false,
        };
        control_plane.start_apiserver().await?;
        if !control_plane.controllers.is_empty() {
            control_plane.start_controller_manager()?;
        }
        Ok(control_plane)
    }

    /// Start (or restart, after [`ControlPlane::stop_apiserver`]) the apiserver on the same port
    /// and etcd, and wait until it is ready.
    pub async fn start_apiserver(&mut self) -> Result<()> {
        let binary = control_plane_binary()?;
        let process = ManagedProcess::spawn(
            "kube-apiserver",
            &binary,
            &prefixed("kube-apiserver", self.apiserver_args.clone()),
            &self.dir.join("kube-apiserver.log"),
        )?;
        if self.shared {
            kill_at_exit(process.pid());
        }
        self.apiserver = Some(process);
        self.wait_ready().await
    }

    /// Stop the apiserver (etcd keeps the data): the member becomes unreachable.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut process) = self.apiserver.take() {
            process.kill();
        }
    }

    /// Stop etcd (kill -9; its data directory stays): the apiserver keeps running but can
    /// neither read nor write, as when a hub's etcd is unavailable.
    pub fn stop_etcd(&mut self) {
        if let Some(mut process) = self.etcd.take() {
            process.kill();
        }
    }

    /// Start etcd again (after [`ControlPlane::stop_etcd`]) on the same ports and data, and wait
    /// until the apiserver reports ready again.
    pub async fn start_etcd(&mut self) -> Result<()> {
        let binary = control_plane_binary()?;
        let process = ManagedProcess::spawn(
            "etcd",
            &binary,
            &prefixed("etcd", self.etcd_args.clone()),
            &self.dir.join("etcd.log"),
        )?;
        if self.shared {
            kill_at_exit(process.pid());
        }
        self.etcd = Some(process);
        self.wait_ready().await
    }

    fn start_controller_manager(&mut self) -> Result<()> {
        let binary = control_plane_binary()?;
        let kubeconfig = self.dir.join("admin.kubeconfig");
        std::fs::write(&kubeconfig, self.admin_kubeconfig_yaml())?;
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--controllers={}", self.controllers.join(",")),
            format!(
                "--service-account-private-key-file={}",
                self.dir.join("sa.key").display()
            ),
            format!("--root-ca-file={}", self.dir.join("ca.crt").display()),
            "--leader-elect=false".to_string(),
            "--secure-port=0".to_string(),
            "--use-service-account-credentials=false".to_string(),
        ];
        let process = ManagedProcess::spawn(
            "kube-controller-manager",
            &binary,
            &prefixed("kube-controller-manager", args),
            &self.dir.join("kube-controller-manager.log"),
        )?;
        if self.shared {
            kill_at_exit(process.pid());
        }
        self.controller_manager = Some(process);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = self.client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_error;
        loop {
            for process in [self.etcd.as_mut(), self.apiserver.as_mut()]
                .into_iter()
                .flatten()
            {
                if process.has_exited() {
                    return Err(format!(
                        "a process of {} exited while starting\n{}",
                        self.name,
                        process.log_tail(40)
                    )
                    .into());
                }
            }
            let request = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last_error = body,
                Err(err) => last_error = err.to_string(),
            }
            if Instant::now() > deadline {
                let tail = self
                    .apiserver
                    .as_ref()
                    .map(|p| p.log_tail(40))
                    .unwrap_or_default();
                return Err(format!(
                    "kube-apiserver of {} not ready after {READY_TIMEOUT:?}: {last_error}\n{tail}",
                    self.name
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Mark this control plane as shared (held in a static): its processes are killed and its
    /// directory removed when the test binary exits.
    pub(crate) fn into_shared(mut self) -> Self {
        self.shared = true;
        for process in [&self.etcd, &self.apiserver, &self.controller_manager]
            .into_iter()
            .flatten()
        {
            kill_at_exit(process.pid());
        }
        remove_at_exit(&self.dir);
        self
    }

    /// The audit log so far (with [`ControlPlaneOptions::with_audit`]): one event per write
    /// request, at `Metadata` level (user, verb, object, answer code, timestamps).
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        let text = std::fs::read_to_string(self.dir.join("audit.log"))?;
        Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str::<AuditEvent>(line).ok())
            .collect())
    }

    /// Process ids of its running processes (etcd, apiserver, controller-manager).
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver, &self.controller_manager]
            .into_iter()
            .flatten()
            .map(ManagedProcess::pid)
            .collect()
    }

    /// Name of this control plane.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// The CA certificate (PEM) that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_cert
    }

    /// The PKI of this control plane.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Directory holding its certificates, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Admin kubeconfig (client certificate in group `system:masters`).
    pub fn admin_kubeconfig_yaml(&self) -> String {
        self.kubeconfig_yaml(&format!(
            "client-certificate-data: {}\n    client-key-data: {}",
            BASE64.encode(&self.pki.admin_cert),
            BASE64.encode(&self.pki.admin_key)
        ))
    }

    /// A kubeconfig that authenticates with a bearer `token` (for ServiceAccount tokens).
    pub fn token_kubeconfig_yaml(&self, token: &str) -> String {
        self.kubeconfig_yaml(&format!("token: {token}"))
    }

    /// One cluster, one user with `credentials` (YAML lines under `user:`), one context.
    fn kubeconfig_yaml(&self, credentials: &str) -> String {
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {name}-user
  user:
    {credentials}
contexts:
- name: {name}
  context:
    cluster: {name}
    user: {name}-user
current-context: {name}
"#,
            name = self.name,
            server = self.server(),
            ca = BASE64.encode(&self.pki.ca_cert),
        )
    }

    /// Write the admin kubeconfig to `path`.
    pub fn write_admin_kubeconfig(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.admin_kubeconfig_yaml())?;
        Ok(())
    }

    /// A new admin client. Clients are cheap and tied to the calling test's async runtime, so
    /// each test makes its own.
    pub async fn client(&self) -> Result<Client> {
        client_from_kubeconfig_yaml(&self.admin_kubeconfig_yaml()).await
    }

    /// A client authenticating with a bearer `token`.
    pub async fn token_client(&self, token: &str) -> Result<Client> {
        client_from_kubeconfig_yaml(&self.token_kubeconfig_yaml(token)).await
    }

    /// UID of the `kube-system` namespace (the conventional cluster id), waiting for the
    /// apiserver's system-namespace controller to create it.
    pub async fn kube_system_uid(&self) -> Result<String> {
        let namespaces: Api<Namespace> = Api::all(self.client().await?);
        let uid = crate::wait_for(Duration::from_secs(60), "kube-system namespace", || {
            let namespaces = namespaces.clone();
            async move {
                Ok(namespaces
                    .get_opt("kube-system")
                    .await?
                    .and_then(|ns| ns.metadata.uid))
            }
        })
        .await?;
        Ok(uid)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Controller-manager and apiserver first, so nothing writes to etcd while it stops.
        for process in [
            self.controller_manager.take(),
            self.apiserver.take(),
            self.etcd.take(),
        ]
        .into_iter()
        .flatten()
        {
            drop(process);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Audit every request that can write (Metadata level: no bodies), nothing else.
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
"#;

/// One line of the apiserver's audit log (the fields tests use).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// Who sent it.
    pub user: AuditUser,
    /// What it was about.
    #[serde(default)]
    pub object_ref: Option<AuditObjectRef>,
    /// The answer.
    #[serde(default)]
    pub response_status: Option<AuditStatus>,
    /// When the apiserver received it (RFC 3339, microseconds).
    pub request_received_timestamp: String,
}

/// `user` of an audit event.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AuditUser {
    /// e.g. `system:serviceaccount:<namespace>:<name>`.
    #[serde(default)]
    pub username: String,
}

/// `objectRef` of an audit event.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AuditObjectRef {
    /// Plural resource, e.g. `configmaps`.
    #[serde(default)]
    pub resource: String,
    /// Namespace, if any.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Name, if any.
    #[serde(default)]
    pub name: Option<String>,
}

/// `responseStatus` of an audit event.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AuditStatus {
    /// HTTP status code.
    #[serde(default)]
    pub code: u16,
}

impl AuditEvent {
    /// When it was received, as a comparable timestamp.
    pub fn received(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        self.request_received_timestamp.parse().ok()
    }

    /// Whether the apiserver accepted it (2xx).
    pub fn succeeded(&self) -> bool {
        self.response_status
            .as_ref()
            .is_some_and(|s| (200..300).contains(&s.code))
    }
}

fn prefixed(component: &str, args: Vec<String>) -> Vec<String> {
    std::iter::once(component.to_string()).chain(args).collect()
}

/// A kube client from kubeconfig YAML.
pub async fn client_from_kubeconfig_yaml(yaml: &str) -> Result<Client> {
    let kubeconfig = Kubeconfig::from_yaml(yaml)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Client::try_from(config).map_err(|err| Box::new(err) as BoxError)
}
