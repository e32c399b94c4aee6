//! `vsphere` provisioner: a VM per computer, cloned afresh from a template
//! VM through vCenter's vSphere Automation REST API (the `/api` paths of
//! vSphere 7.0 U2 and later) over `ureq`.
//!
//! A load is one API session: log in (`POST /api/session`, Basic auth),
//! resolve the placement names to ids, find the template VM, power off and
//! delete the computer's old VM, clone the template under the computer's
//! node name (full clone, or instant clone of a running source), power it
//! on, and poll its power state until `POWERED_ON`; the session is deleted
//! (`DELETE /api/session`) on every path. The template and placement are
//! resolved before anything is deleted, so a typo in the config never costs
//! the computer its VM.
//!
//! Error classes: credentials rejected at login (HTTP 401/403) and a
//! privilege missing later (403) are fatal, as are a template or placement
//! name that finds nothing, a TLS certificate that does not verify, and any
//! other request the API rejects (4xx); 5xx, busy/unavailable error types,
//! connection failures and timeouts ask for a retry. Every message names
//! the VM and the call (method and path); the password is read from
//! `password_file` and never appears in argv, logs, events or messages, and
//! neither does the session id.

use serde::Deserialize;
use serde_json::{Value, json};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::Provisioner;
use super::command::per_attempt;
use crate::attempt::Attempt;
use crate::config::Plan;
use crate::duration;
use crate::outcome::{Outcome, collapse};
use crate::report::Reporter;
use crate::secret::Secret;
use crate::signal;
use crate::wait::{self, Limits, Pace, Poll, Waited};

/// The header that carries the session id after login.
const SESSION_HEADER: &str = "vmware-api-session-id";
/// Longest wait for the logout call: the load's result is known by then.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(10);
/// Error types that say "try again later" whatever the HTTP status.
const RETRYABLE_TYPES: [&str; 7] = [
    "RESOURCE_BUSY",
    "RESOURCE_IN_USE",
    "SERVICE_UNAVAILABLE",
    "TIMED_OUT",
    "CONCURRENT_CHANGE",
    "RESOURCE_INACCESSIBLE",
    "UNABLE_TO_ALLOCATE_RESOURCE",
];

/// How the computer's VM is made from the template.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CloneKind {
    /// `POST /api/vcenter/vm?action=clone`: a full copy of a template VM
    /// (powered off or on); slow, independent of the source.
    #[default]
    Full,
    /// `POST /api/vcenter/vm?action=instant-clone`: a clone that shares the
    /// running source VM's memory and disks; seconds, but the source must be
    /// powered on.
    Instant,
}

impl CloneKind {
    fn name(self) -> &'static str {
        match self {
            CloneKind::Full => "full",
            CloneKind::Instant => "instant",
        }
    }

    fn action(self) -> &'static str {
        match self {
            CloneKind::Full => "clone",
            CloneKind::Instant => "instant-clone",
        }
    }
}

/// `[provisioners.NAME] kind = "vsphere"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct VsphereConfig {
    /// vCenter's address, `https://vcenter.example` (no path).
    pub url: String,
    /// The vCenter (SSO) account, e.g. `reimage@vsphere.local`.
    pub username: String,
    /// File whose first line is the password; never in argv or logs.
    pub password_file: Option<PathBuf>,
    /// PEM file with the CA certificate(s) that signed vCenter's
    /// certificate (vCenter's own VMCA root, usually). Without it, the
    /// Mozilla roots are trusted.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS certificate verification: an explicit opt-out for labs;
    /// every load warns about it.
    #[serde(default)]
    pub insecure: bool,
    /// Datacenter name; narrows every other lookup to it.
    pub datacenter: Option<String>,
    /// VM folder name the clones go into (and where the computer's old VM
    /// is looked for); default: the template's folder.
    pub folder: Option<String>,
    /// Resource pool name; default: the template's.
    pub resource_pool: Option<String>,
    /// Datastore name; default: the template's.
    pub datastore: Option<String>,
    /// `"full"` (default) or `"instant"`.
    #[serde(default)]
    pub clone: CloneKind,
    /// Limit of each API call but the clone.
    #[serde(default = "default_request_timeout", deserialize_with = "duration::de")]
    pub request_timeout: Duration,
    /// Limit of the clone call (the API answers when the clone is done),
    /// stretched on later attempts.
    #[serde(default = "default_clone_timeout", deserialize_with = "duration::de")]
    pub clone_timeout: Duration,
    /// How long the new VM may take to report `POWERED_ON`, stretched on
    /// later attempts.
    #[serde(
        default = "default_power_on_timeout",
        deserialize_with = "duration::de"
    )]
    pub power_on_timeout: Duration,
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_clone_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_power_on_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

impl VsphereConfig {
    /// Checks serde cannot make.
    pub fn validate(&self) -> Result<(), String> {
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .ok_or_else(|| {
                format!(
                    "`url` must start with https:// (or http://), e.g. \"https://vcenter.example\"; got {:?}",
                    self.url
                )
            })?;
        let host = rest.trim_end_matches('/');
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "`url` must be vCenter's address without a path, e.g. \"https://vcenter.example\"; got {:?}",
                self.url
            ));
        }
        if self.username.trim().is_empty() {
            return Err("`username` must not be empty, e.g. \"reimage@vsphere.local\"".into());
        }
        if self.password_file.is_none() {
            return Err("`password_file` is required: a file whose first line is the password of `username`".into());
        }
        if self.insecure && self.ca_file.is_some() {
            return Err(
                "`insecure = true` and `ca_file` contradict each other: keep `ca_file` to verify vCenter's certificate"
                    .into(),
            );
        }
        for (key, v) in [
            ("datacenter", &self.datacenter),
            ("folder", &self.folder),
            ("resource_pool", &self.resource_pool),
            ("datastore", &self.datastore),
        ] {
            if matches!(v, Some(s) if s.trim().is_empty()) {
                return Err(format!(
                    "`{key}` must not be empty; leave it out for the default"
                ));
            }
        }
        for (key, d) in [
            ("request_timeout", self.request_timeout),
            ("clone_timeout", self.clone_timeout),
            ("power_on_timeout", self.power_on_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("`{key}` must be longer than 0s"));
            }
        }
        Ok(())
    }

    /// Lines for `reimage check`.
    pub fn describe(&self, plan: &Plan) -> Vec<String> {
        let tls = if !self.url.starts_with("https://") {
            "no TLS (http)".to_string()
        } else if self.insecure {
            "certificate NOT verified (insecure = true)".to_string()
        } else if let Some(ca) = &self.ca_file {
            format!("certificate verified against {}", ca.display())
        } else {
            "certificate verified against the system's roots".to_string()
        };
        let or_template = |v: &Option<String>| v.clone().unwrap_or_else(|| "the template's".into());
        vec![
            format!("vCenter: {} as {} ({tls})", self.url, self.username),
            format!("VM: {}", plan.computer.node),
            format!("template VM: {}", plan.image.source),
            format!(
                "placement: datacenter {}, folder {}, resource pool {}, datastore {}",
                self.datacenter.as_deref().unwrap_or("any"),
                or_template(&self.folder),
                or_template(&self.resource_pool),
                or_template(&self.datastore),
            ),
            format!("clone: {}", self.clone.name()),
            format!("request timeout: {}", duration::fmt(self.request_timeout)),
            format!("clone timeout: {}", per_attempt(self.clone_timeout, plan)),
            format!(
                "power-on timeout: {}",
                per_attempt(self.power_on_timeout, plan)
            ),
        ]
    }
}

/// The vsphere provisioner.
pub struct Vsphere {
    config: VsphereConfig,
}

impl Vsphere {
    /// A vsphere provisioner.
    pub fn new(config: VsphereConfig) -> Vsphere {
        Vsphere { config }
    }

    /// Logs in, runs `f` with the session, logs out whatever `f` returned.
    fn with_session(
        &self,
        plan: &Plan,
        report: &Reporter,
        f: impl FnOnce(&Api) -> Result<(), Outcome>,
    ) -> Outcome {
        if self.config.insecure {
            report.warn(&format!(
                "vSphere: TLS certificate verification is off (insecure = true) for {}; set ca_file to vCenter's CA certificate instead",
                self.config.url
            ));
        }
        let mut api = match Api::new(&self.config, &plan.computer.node) {
            Ok(a) => a,
            Err(o) => return o,
        };
        if let Err(o) = api.login() {
            return o;
        }
        report.info(&format!(
            "vSphere: logged in to {} as {}",
            self.config.url, self.config.username
        ));
        let result = f(&api);
        if let Err(e) = api.logout() {
            report.warn(&e);
        }
        collapse(result)
    }
}

impl Provisioner for Vsphere {
    fn describe(&self, plan: &Plan) -> Vec<String> {
        self.config.describe(plan)
    }

    fn load(&self, plan: &Plan, attempt: Attempt, report: &Reporter) -> Outcome {
        self.with_session(plan, report, |api| {
            load(api, &self.config, plan, attempt, report)
        })
    }

    fn power_reset(&self, plan: &Plan, _attempt: Attempt, report: &Reporter) -> Option<Outcome> {
        Some(self.with_session(plan, report, |api| {
            let placement = Placement::resolve(api, &self.config, false)?;
            let Some(vm) = find_target(api, &plan.computer.node, &placement)? else {
                return Err(Outcome::Fatal(anyhow::anyhow!(
                    "power reset of VM {}: no VM of that name{}",
                    plan.computer.node,
                    placement.scope()
                )));
            };
            let path = format!("/api/vcenter/vm/{}/power?action=reset", enc(&vm.vm));
            match api.post(&path, None, api.timeout) {
                Ok(_) => {}
                Err(f) if f.error_type.as_deref() == Some("NOT_ALLOWED_IN_CURRENT_STATE") => {
                    // A VM that is off cannot be reset; starting it is what
                    // a reset is for.
                    let path = format!("/api/vcenter/vm/{}/power?action=start", enc(&vm.vm));
                    api.post(&path, None, api.timeout)
                        .or_else(already)
                        .map_err(Failure::outcome)?;
                }
                Err(f) => return Err(f.outcome()),
            }
            report.info(&format!("vSphere: VM {} ({}) reset", vm.name, vm.vm));
            Ok(())
        }))
    }
}

/// The load itself, inside a session.
fn load(
    api: &Api,
    cfg: &VsphereConfig,
    plan: &Plan,
    attempt: Attempt,
    report: &Reporter,
) -> Result<(), Outcome> {
    let name = plan.computer.node.as_str();
    let source = plan.image.source.as_str();
    if name == source {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "VM {name}: the computer's node name is the template's name; loading would delete the template"
        )));
    }
    interrupted()?;
    let placement = Placement::resolve(api, cfg, true)?;

    let template = find_template(api, source, &placement)?;
    report.info(&format!(
        "vSphere: template {source} is {} ({})",
        template.vm,
        template
            .power_state
            .as_deref()
            .unwrap_or("power state unknown")
    ));
    if cfg.clone == CloneKind::Instant && template.power_state.as_deref() != Some("POWERED_ON") {
        return Err(Outcome::Fatal(anyhow::anyhow!(
            "VM {name}: clone = \"instant\" needs a running source VM, and template {source} is {}; power it on or use clone = \"full\"",
            template
                .power_state
                .as_deref()
                .unwrap_or("not known to be powered on")
        )));
    }

    interrupted()?;
    if let Some(old) = find_target(api, name, &placement)? {
        if old.vm == template.vm {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "VM {name} is the template itself ({}); refusing to delete it",
                old.vm
            )));
        }
        remove(api, &old, report)?;
    } else {
        report.info(&format!(
            "vSphere: no VM {name}{} to remove",
            placement.scope()
        ));
    }

    interrupted()?;
    let clone_timeout = attempt.scale(cfg.clone_timeout);
    report.step(&format!("{} clone", cfg.clone.name()), Some(clone_timeout));
    let mut spec = json!({ "name": name, "source": template.vm });
    if let Some(p) = placement.spec() {
        spec["placement"] = p;
    }
    if cfg.clone == CloneKind::Full {
        spec["power_on"] = json!(false);
    }
    let path = format!("/api/vcenter/vm?action={}", cfg.clone.action());
    let vm = match api
        .post(&path, Some(&spec), clone_timeout)
        .and_then(|text| api.parse::<String>(&format!("POST {path}"), &text))
    {
        Ok(vm) => vm,
        Err(f) => {
            report.step_end(false, &f.to_string());
            return Err(f.outcome());
        }
    };
    report.step_end(true, &format!("VM {name} is {vm}, cloned from {source}"));

    interrupted()?;
    let start = format!("/api/vcenter/vm/{}/power?action=start", enc(&vm));
    api.post(&start, None, api.timeout)
        .or_else(already)
        .map_err(Failure::outcome)?;

    let timeout = attempt.scale(cfg.power_on_timeout);
    report.step("power on", Some(timeout));
    let get = format!("/api/vcenter/vm/{}/power", enc(&vm));
    let waited = wait::poll(
        report,
        Limits {
            timeout,
            stall: None,
        },
        Pace::COSTLY,
        |left| {
            let t = left.clamp(Duration::from_millis(500), api.timeout);
            match api
                .get(&get, t)
                .and_then(|text| api.parse::<PowerInfo>(&format!("GET {get}"), &text))
            {
                Ok(p) if p.state == "POWERED_ON" => Poll::Ready(p.state),
                Ok(p) => Poll::NotYet(format!("power state {}", p.state)),
                Err(f) if f.retry => Poll::NotYet(f.to_string()),
                Err(f) => Poll::Fatal(f.err),
            }
        },
    );
    let what = format!("VM {name}: GET {get}");
    match waited {
        Waited::Ready(..) => {
            report.step_end(true, &format!("VM {name} is POWERED_ON"));
            Ok(())
        }
        Waited::Fatal(e) => {
            report.step_end(false, &format!("{e:#}"));
            Err(Outcome::Fatal(e))
        }
        Waited::Interrupted(i) => {
            report.step_end(false, &i.to_string());
            Err(Outcome::Fatal(anyhow::Error::new(i)))
        }
        w => {
            let msg = wait::describe(&w, &what, timeout);
            report.step_end(false, &msg);
            Err(Outcome::Retry(anyhow::anyhow!(
                "{msg}; the VM did not report POWERED_ON"
            )))
        }
    }
}

/// Powers off and deletes the computer's old VM.
fn remove(api: &Api, old: &VmSummary, report: &Reporter) -> Result<(), Outcome> {
    report.info(&format!(
        "vSphere: removing the old VM {} ({}, {})",
        old.name,
        old.vm,
        old.power_state.as_deref().unwrap_or("power state unknown")
    ));
    let stop = format!("/api/vcenter/vm/{}/power?action=stop", enc(&old.vm));
    api.post(&stop, None, api.timeout)
        .or_else(already)
        .map_err(Failure::outcome)?;
    let path = format!("/api/vcenter/vm/{}", enc(&old.vm));
    match api.delete(&path, api.timeout) {
        Ok(_) => Ok(()),
        // Gone in between: what we wanted.
        Err(f) if f.error_type.as_deref() == Some("NOT_FOUND") => Ok(()),
        Err(f) => Err(f.outcome()),
    }
}

/// `ALREADY_IN_DESIRED_STATE` (start when on, stop when off) is success.
fn already(f: Failure) -> Result<String, Failure> {
    if f.error_type.as_deref() == Some("ALREADY_IN_DESIRED_STATE") {
        Ok(String::new())
    } else {
        Err(f)
    }
}

fn interrupted() -> Result<(), Outcome> {
    signal::check().map_err(|i| Outcome::Fatal(anyhow::Error::new(i)))
}

/// One entry of `GET /api/vcenter/vm` (VM.Summary).
#[derive(Debug, Deserialize)]
struct VmSummary {
    vm: String,
    name: String,
    #[serde(default)]
    power_state: Option<String>,
}

/// `GET /api/vcenter/vm/{vm}/power` (VM.Power.Info).
#[derive(Debug, Deserialize)]
struct PowerInfo {
    state: String,
}

/// Placement ids, resolved from the configured names.
#[derive(Debug, Default)]
struct Placement {
    datacenter: Option<(String, String)>,
    folder: Option<(String, String)>,
    resource_pool: Option<String>,
    datastore: Option<String>,
}

impl Placement {
    /// Looks up each configured name (the pool and datastore only when
    /// `all`: a power reset needs just datacenter and folder).
    fn resolve(api: &Api, cfg: &VsphereConfig, all: bool) -> Result<Placement, Outcome> {
        let mut p = Placement::default();
        if let Some(name) = &cfg.datacenter {
            let id = lookup(api, "datacenter", "datacenter", name, "")?;
            p.datacenter = Some((id, name.clone()));
        }
        let dc = p.dc_filter();
        if let Some(name) = &cfg.folder {
            let id = lookup(
                api,
                "folder",
                "folder",
                name,
                &format!("&type=VIRTUAL_MACHINE{dc}"),
            )?;
            p.folder = Some((id, name.clone()));
        }
        if all {
            if let Some(name) = &cfg.resource_pool {
                p.resource_pool = Some(lookup(api, "resource-pool", "resource_pool", name, &dc)?);
            }
            if let Some(name) = &cfg.datastore {
                p.datastore = Some(lookup(api, "datastore", "datastore", name, &dc)?);
            }
        }
        Ok(p)
    }

    /// `&datacenters=ID`, or nothing.
    fn dc_filter(&self) -> String {
        self.datacenter
            .as_ref()
            .map(|(id, _)| format!("&datacenters={}", enc(id)))
            .unwrap_or_default()
    }

    /// " in folder F of datacenter D", for messages.
    fn scope(&self) -> String {
        let mut s = String::new();
        if let Some((_, f)) = &self.folder {
            s.push_str(&format!(" in folder {f}"));
        }
        if let Some((_, d)) = &self.datacenter {
            s.push_str(&format!(" in datacenter {d}"));
        }
        s
    }

    /// The clone spec's `placement`, or None for the template's own.
    fn spec(&self) -> Option<Value> {
        let mut m = serde_json::Map::new();
        if let Some((id, _)) = &self.folder {
            m.insert("folder".into(), json!(id));
        }
        if let Some(id) = &self.resource_pool {
            m.insert("resource_pool".into(), json!(id));
        }
        if let Some(id) = &self.datastore {
            m.insert("datastore".into(), json!(id));
        }
        (!m.is_empty()).then_some(Value::Object(m))
    }
}

/// Finds the one object of a kind with this name: its id.
fn lookup(
    api: &Api,
    kind: &str,
    id_field: &str,
    name: &str,
    extra: &str,
) -> Result<String, Outcome> {
    let path = format!("/api/vcenter/{kind}?names={}{extra}", enc(name));
    let text = api.get(&path, api.timeout).map_err(Failure::outcome)?;
    let found: Vec<Value> = api
        .parse(&format!("GET {path}"), &text)
        .map_err(Failure::outcome)?;
    let ids: Vec<&str> = found
        .iter()
        .filter_map(|v| v.get(id_field).and_then(Value::as_str))
        .collect();
    let label = kind.replace('-', " ");
    match ids.as_slice() {
        [id] => Ok((*id).to_string()),
        [] => Err(Outcome::Fatal(anyhow::anyhow!(
            "VM {}: GET {path}: no {label} named {name:?} (check `{}` in the provisioner)",
            api.vm,
            id_field
        ))),
        many => Err(Outcome::Fatal(anyhow::anyhow!(
            "VM {}: GET {path}: {} {label}s named {name:?} ({}); set `datacenter` to tell them apart",
            api.vm,
            many.len(),
            many.join(", ")
        ))),
    }
}

/// VMs of a name, narrowed by `filters` (`&datacenters=..&folders=..`).
fn vms_named(api: &Api, name: &str, filters: &str) -> Result<(String, Vec<VmSummary>), Outcome> {
    let path = format!("/api/vcenter/vm?names={}{filters}", enc(name));
    let text = api.get(&path, api.timeout).map_err(Failure::outcome)?;
    let found: Vec<VmSummary> = api
        .parse(&format!("GET {path}"), &text)
        .map_err(Failure::outcome)?;
    // The filter is the server's; check the name ourselves as well.
    let found = found.into_iter().filter(|v| v.name == name).collect();
    Ok((path, found))
}

/// The template VM: exactly one VM of that name in the datacenter.
fn find_template(api: &Api, source: &str, p: &Placement) -> Result<VmSummary, Outcome> {
    let (path, mut found) = vms_named(api, source, &p.dc_filter())?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Outcome::Fatal(anyhow::anyhow!(
            "VM {}: template not found: GET {path} found no VM named {source:?}{} (the image's `source` must name a template VM)",
            api.vm,
            p.datacenter
                .as_ref()
                .map(|(_, d)| format!(" in datacenter {d}"))
                .unwrap_or_default()
        ))),
        n => Err(Outcome::Fatal(anyhow::anyhow!(
            "VM {}: GET {path}: {n} VMs named {source:?}; set `datacenter` so the template is one",
            api.vm
        ))),
    }
}

/// The computer's current VM, if any, in the configured folder.
fn find_target(api: &Api, name: &str, p: &Placement) -> Result<Option<VmSummary>, Outcome> {
    let mut filters = p.dc_filter();
    if let Some((id, _)) = &p.folder {
        filters.push_str(&format!("&folders={}", enc(id)));
    }
    let (path, mut found) = vms_named(api, name, &filters)?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found.remove(0))),
        n => Err(Outcome::Fatal(anyhow::anyhow!(
            "VM {name}: GET {path}: {n} VMs of that name ({}); refusing to guess which to delete, set `folder`",
            found
                .iter()
                .map(|v| v.vm.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A failed API call, classified.
#[derive(Debug)]
struct Failure {
    /// Loading again may help.
    retry: bool,
    /// The API's `error_type`, when it sent one.
    error_type: Option<String>,
    /// What happened, naming the VM and the call.
    err: anyhow::Error,
}

impl Failure {
    fn retry(err: anyhow::Error) -> Failure {
        Failure {
            retry: true,
            error_type: None,
            err,
        }
    }

    fn fatal(err: anyhow::Error) -> Failure {
        Failure {
            retry: false,
            error_type: None,
            err,
        }
    }

    fn outcome(self) -> Outcome {
        if self.retry {
            Outcome::Retry(self.err)
        } else {
            Outcome::Fatal(self.err)
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.err)
    }
}

/// The error body every `/api` operation sends (`error_type`, `messages`).
#[derive(Debug, Deserialize, Default)]
struct ApiErrorBody {
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    messages: Vec<ApiMessage>,
}

#[derive(Debug, Deserialize)]
struct ApiMessage {
    #[serde(default)]
    default_message: Option<String>,
}

/// One vCenter connection: the HTTP agent, credentials, and once logged
/// in, the session id.
struct Api {
    base: String,
    host: String,
    user: String,
    authorization: Secret,
    session: Option<Secret>,
    agent: ureq::Agent,
    timeout: Duration,
    has_ca: bool,
    /// The computer's VM name, for every message.
    vm: String,
}

impl Api {
    /// Reads the password and CA files and prepares the agent.
    fn new(cfg: &VsphereConfig, vm: &str) -> Result<Api, Outcome> {
        let fatal = |m: String| Outcome::Fatal(anyhow::anyhow!("VM {vm}: {m}"));
        let Some(pw_path) = &cfg.password_file else {
            return Err(fatal("no password_file is configured".into()));
        };
        let password = Secret::from_file(pw_path, "the vSphere password_file")
            .map_err(|e| fatal(format!("{e:#}")))?;
        let authorization = Secret::basic_auth(&cfg.username, &password);

        let mut tls = ureq::tls::TlsConfig::builder();
        if cfg.insecure {
            tls = tls.disable_verification(true);
        } else if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                fatal(format!(
                    "cannot read the vSphere ca_file {}: {e}",
                    ca.display()
                ))
            })?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(fatal(format!(
                            "cannot parse the vSphere ca_file {}: {e}",
                            ca.display()
                        )));
                    }
                }
            }
            if certs.is_empty() {
                return Err(fatal(format!(
                    "the vSphere ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .timeout_connect(Some(cfg.request_timeout.min(Duration::from_secs(15))))
            .user_agent(concat!("reimage/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let base = cfg.url.trim_end_matches('/').to_string();
        let host = base
            .split_once("://")
            .map(|(_, h)| h.to_string())
            .unwrap_or_else(|| base.clone());
        Ok(Api {
            base,
            host,
            user: cfg.username.clone(),
            authorization,
            session: None,
            agent,
            timeout: cfg.request_timeout,
            has_ca: cfg.ca_file.is_some(),
            vm: vm.to_string(),
        })
    }

    /// `POST /api/session`: Basic auth in, session id (a JSON string) out.
    fn login(&mut self) -> Result<(), Outcome> {
        let path = "/api/session";
        let text = match self.send("POST", path, None, self.timeout, true) {
            Ok(t) => t,
            Err(f) => return Err(f.outcome()),
        };
        let id: String = self
            .parse(&format!("POST {path}"), &text)
            .map_err(Failure::outcome)?;
        if id.is_empty() {
            return Err(Outcome::Fatal(anyhow::anyhow!(
                "VM {}: POST {path} on {}: an empty session id",
                self.vm,
                self.host
            )));
        }
        self.session = Some(Secret::new(id));
        Ok(())
    }

    /// `DELETE /api/session`; the error says why it failed.
    fn logout(&mut self) -> Result<(), String> {
        if self.session.is_none() {
            return Ok(());
        }
        let r = self.send(
            "DELETE",
            "/api/session",
            None,
            self.timeout.min(LOGOUT_TIMEOUT),
            false,
        );
        self.session = None;
        r.map(|_| ())
            .map_err(|f| format!("vSphere: the session was not deleted: {f}"))
    }

    fn get(&self, path: &str, timeout: Duration) -> Result<String, Failure> {
        self.send("GET", path, None, timeout, false)
    }

    fn post(&self, path: &str, body: Option<&Value>, timeout: Duration) -> Result<String, Failure> {
        self.send("POST", path, body, timeout, false)
    }

    fn delete(&self, path: &str, timeout: Duration) -> Result<String, Failure> {
        self.send("DELETE", path, None, timeout, false)
    }

    /// Parses a JSON answer; a shape we cannot read is fatal (not vCenter's
    /// Automation API, or a version that changed it).
    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, text: &str) -> Result<T, Failure> {
        serde_json::from_str(text).map_err(|e| {
            Failure::fatal(anyhow::anyhow!(
                "VM {}: {what} on {}: cannot read the answer ({e}){}; is `url` vCenter's address (7.0 U2 or later)?",
                self.vm,
                self.host,
                snippet(text)
            ))
        })
    }

    /// One request: the body text of a 2xx answer, or a classified failure.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
        login: bool,
    ) -> Result<String, Failure> {
        let what = format!("VM {}: {method} {path} on {}", self.vm, self.host);
        let url = format!("{}{path}", self.base);
        let auth: (&str, &str) = if login {
            ("Authorization", self.authorization.expose())
        } else {
            match &self.session {
                Some(s) => (SESSION_HEADER, s.expose()),
                None => {
                    return Err(Failure::fatal(anyhow::anyhow!("{what}: not logged in")));
                }
            }
        };
        let result = match (method, body) {
            ("GET", _) => self
                .agent
                .get(&url)
                .header("Accept", "application/json")
                .header(auth.0, auth.1)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Accept", "application/json")
                .header(auth.0, auth.1)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .call(),
            (_, Some(b)) => self
                .agent
                .post(&url)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .header(auth.0, auth.1)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .send(b.to_string()),
            (_, None) => self
                .agent
                .post(&url)
                .header("Accept", "application/json")
                .header(auth.0, auth.1)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .send_empty(),
        };
        let mut resp = result.map_err(|e| self.transport(&what, e, timeout))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport(&what, e, timeout))?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        Err(self.rejected(&what, status, &text, login))
    }

    /// Classifies an answer with a non-2xx status.
    fn rejected(&self, what: &str, status: u16, text: &str, login: bool) -> Failure {
        let body: ApiErrorBody = serde_json::from_str(text).unwrap_or_default();
        let message = body
            .messages
            .iter()
            .filter_map(|m| m.default_message.as_deref())
            .collect::<Vec<_>>()
            .join(" ");
        let mut detail = format!("HTTP {status}");
        if let Some(t) = &body.error_type {
            detail.push_str(&format!(" {t}"));
        }
        if !message.is_empty() {
            detail.push_str(&format!(": {message}"));
        } else if body.error_type.is_none() {
            detail.push_str(&snippet(text));
        }
        let error_type = body.error_type.clone();
        let retryable = error_type
            .as_deref()
            .is_some_and(|t| RETRYABLE_TYPES.contains(&t));
        let (retry, err) = match status {
            401 | 403 if login => (
                false,
                anyhow::anyhow!(
                    "{what}: vCenter rejected the credentials of user {:?} ({detail}); check username and password_file",
                    self.user
                ),
            ),
            401 => (
                true,
                anyhow::anyhow!("{what}: the session is no longer valid ({detail})"),
            ),
            403 => (
                false,
                anyhow::anyhow!(
                    "{what}: user {:?} lacks the privilege for this call ({detail}); check the user's role in vCenter",
                    self.user
                ),
            ),
            404 if error_type.is_none() => (
                false,
                anyhow::anyhow!(
                    "{what}: {detail}; is `url` vCenter's address (vSphere 7.0 U2 or later serves /api)?"
                ),
            ),
            408 | 429 | 500..=599 => (true, anyhow::anyhow!("{what}: {detail}")),
            _ if retryable => (true, anyhow::anyhow!("{what}: {detail}")),
            _ => (false, anyhow::anyhow!("{what}: {detail}")),
        };
        Failure {
            retry,
            error_type,
            err,
        }
    }

    /// Classifies a transport error: certificates fatal, the rest retry.
    fn transport(&self, what: &str, e: ureq::Error, timeout: Duration) -> Failure {
        let text = e.to_string();
        let lower = text.to_ascii_lowercase();
        let cert = lower.contains("certificate")
            || lower.contains("unknownissuer")
            || lower.contains("notvalidforname")
            || lower.contains("unknown issuer");
        let tls = matches!(e, ureq::Error::Rustls(_) | ureq::Error::Tls(_))
            || matches!(&e, ureq::Error::Io(io) if io.to_string().to_ascii_lowercase().contains("certificate"));
        if cert && (tls || lower.contains("tls") || lower.contains("certificate")) {
            let hint = if self.has_ca {
                "vCenter's certificate is not signed by the CA in ca_file, or not issued for this host name; set ca_file to the CA that signed it"
            } else {
                "set ca_file to the PEM file of the CA that signed vCenter's certificate (vCenter's VMCA root: https://VCENTER/certs/download.zip), or insecure = true for a lab"
            };
            return Failure::fatal(anyhow::anyhow!(
                "{what}: TLS certificate not trusted: {text}; {hint}"
            ));
        }
        match e {
            ureq::Error::Timeout(_) => Failure::retry(anyhow::anyhow!(
                "{what}: no answer within {} ({text})",
                duration::fmt(timeout)
            )),
            _ => Failure::retry(anyhow::anyhow!("{what}: {text}")),
        }
    }
}

/// A short, single-line excerpt of an answer for a message.
fn snippet(text: &str) -> String {
    let t: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.is_empty() {
        return String::new();
    }
    let cut: String = t.chars().take(200).collect();
    if cut.len() < t.len() {
        format!(": {cut}…")
    } else {
        format!(": {cut}")
    }
}

/// Percent-encodes a query value or path segment (RFC 3986 unreserved
/// characters stay).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<VsphereConfig, String> {
        let text = format!(
            "url = \"https://vc.example\"\nusername = \"u\"\npassword_file = \"/p\"\n{extra}"
        );
        toml::from_str(&text).map_err(|e| e.to_string())
    }

    #[test]
    fn config_defaults_and_checks() {
        let c = cfg("").expect("parses");
        assert_eq!(c.clone, CloneKind::Full);
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        assert_eq!(c.power_on_timeout, Duration::from_secs(600));
        assert!(!c.insecure);
        c.validate().expect("valid");

        let c = cfg("clone = \"instant\"\npower_on_timeout = \"2m\"").expect("parses");
        assert_eq!(c.clone, CloneKind::Instant);
        assert_eq!(c.power_on_timeout, Duration::from_secs(120));

        assert!(cfg("bogus = 1").is_err(), "unknown keys are errors");
        assert!(cfg("clone = \"linked\"").is_err());

        let mut c = cfg("").expect("parses");
        c.url = "vc.example".into();
        assert!(c.validate().unwrap_err().contains("https://"));
        c.url = "https://vc.example/api".into();
        assert!(c.validate().unwrap_err().contains("without a path"));
        c.url = "http://127.0.0.1:8080/".into();
        c.validate().expect("http with a port and a slash");
        c.password_file = None;
        assert!(c.validate().unwrap_err().contains("password_file"));

        let c = cfg("insecure = true\nca_file = \"/ca.pem\"").expect("parses");
        assert!(c.validate().unwrap_err().contains("insecure"));
        let c = cfg("folder = \"\"").expect("parses");
        assert!(c.validate().unwrap_err().contains("folder"));
    }

    #[test]
    fn encodes_names_and_credentials() {
        assert_eq!(
            enc("win7 template/ä&x=1"),
            "win7%20template%2F%C3%A4%26x%3D1"
        );
        assert_eq!(enc("vm-42"), "vm-42");
        assert_eq!(crate::encoding::base64_encode(b""), "");
        assert_eq!(crate::encoding::base64_encode(b"f"), "Zg==");
        assert_eq!(crate::encoding::base64_encode(b"fo"), "Zm8=");
        assert_eq!(crate::encoding::base64_encode(b"foo"), "Zm9v");
        assert_eq!(
            crate::encoding::base64_encode(b"user:pa:ss"),
            "dXNlcjpwYTpzcw=="
        );
    }
}
