//! The configuration file's shape (serde); the checks serde cannot make
//! are in `validate`.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::duration;
use crate::names::names;
use crate::retention::Retention;
use crate::size;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where locks, event logs and last-run records live.
    #[serde(default, deserialize_with = "state_dir")]
    pub state_dir: Option<PathBuf>,
    /// Attempts per provision run, unless the image says otherwise.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Attempt k multiplies every load and wait timeout by growth^(k-1).
    #[serde(default = "default_growth")]
    pub timeout_growth: f64,
    /// `[provisioners.NAME]`: how images get onto computers. Kept raw:
    /// each provisioner kind decodes and validates its own table.
    #[serde(default)]
    pub provisioners: BTreeMap<String, toml::Table>,
    /// `[os.NAME]`: OS profiles, each starting from a built-in one.
    #[serde(default)]
    pub os: BTreeMap<String, OsConfig>,
    /// `[images.NAME]`.
    #[serde(default)]
    pub images: BTreeMap<String, ImageConfig>,
    /// `[computers.NAME]`.
    #[serde(default)]
    pub computers: BTreeMap<String, ComputerConfig>,
    /// `[coordination]`: the site-wide lock and load-limit store.
    pub coordination: Option<crate::coord::Settings>,
    /// `[logs]`: how much of each computer's event log is kept, and
    /// whether events also go to journald or syslog.
    #[serde(default, deserialize_with = "table")]
    pub logs: LogsConfig,
    /// `[metrics]`: the node_exporter textfile written after every run.
    #[serde(default, deserialize_with = "table")]
    pub metrics: MetricsConfig,
}

/// `[metrics]`: Prometheus metrics per computer, written atomically to
/// `textfile` after every run, for node_exporter's textfile collector.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The `.prom` file to write (absolute), e.g.
    /// /var/lib/node_exporter/textfile/reimage.prom.
    pub textfile: Option<PathBuf>,
}

/// `[logs]`: each computer's event log keeps the last `keep_runs` runs, and
/// of the finished ones no more than `max_bytes`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Runs kept, the one in progress included.
    pub keep_runs: u32,
    /// Bytes the finished runs kept may take ("8MiB", or a number).
    #[serde(deserialize_with = "size::de")]
    pub max_bytes: u64,
    /// Also send every event to journald, with structured fields.
    pub journald: bool,
    /// Also send every event to syslog (RFC 5424 on /dev/log).
    pub syslog: bool,
    /// The datagram socket journald or syslog listens on (default:
    /// /run/systemd/journal/socket, /dev/log).
    pub socket: Option<PathBuf>,
}

impl Default for LogsConfig {
    fn default() -> LogsConfig {
        let r = Retention::default();
        LogsConfig {
            keep_runs: r.keep_runs,
            max_bytes: r.max_bytes,
            journald: false,
            syslog: false,
            socket: None,
        }
    }
}

impl LogsConfig {
    /// The retention the state directory applies.
    pub fn retention(&self) -> Retention {
        Retention {
            keep_runs: self.keep_runs,
            max_bytes: self.max_bytes,
        }
    }
}

/// serde: a table, and only a table. serde's derive also takes an array
/// for a struct, its fields in order: `logs = [1, 5]` would be keep_runs 1
/// and max_bytes 5.
fn table<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(V(std::marker::PhantomData))
}

/// serde: `state_dir`, a path that is not empty: "" would be whatever
/// directory reimage happens to run in.
fn state_dir<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let p = PathBuf::deserialize(d)?;
    if p.as_os_str().is_empty() {
        return Err(serde::de::Error::custom(
            "state_dir is empty, which would be whatever directory reimage runs in: give a directory, e.g. \"/var/lib/reimage\"",
        ));
    }
    Ok(Some(p))
}

fn default_attempts() -> u32 {
    3
}

fn default_growth() -> f64 {
    1.5
}

/// `[computers.NAME]`: one computer reimage can load.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct ComputerConfig {
    /// Where the OS module reaches it (IP address or DNS name).
    pub address: String,
    /// Its name in the provisioner (xCAT node, VM name); default: the
    /// computer's name.
    pub node: Option<String>,
    /// Provisioner that loads this computer; wins over the image's.
    pub provisioner: Option<String>,
    /// Port of the OS channel on `address` (SSH or WinRM), when it is not the
    /// profile's (e.g. a forwarded port of a local VM).
    #[serde(default, deserialize_with = "port_opt")]
    pub port: Option<u16>,
    /// MAC address of the private interface (the management network the
    /// channel runs on), for provisioners that define the machine; the OS
    /// modules find that interface by it.
    pub mac: Option<String>,
    /// MAC address of the public interface, the one the user connects to.
    pub public_mac: Option<String>,
    /// The public interface's static IPv4 address, with its prefix length
    /// (`192.0.2.10/24`) or with `public_netmask`; unset: DHCP.
    pub public_address: Option<String>,
    /// The public subnet mask (`255.255.255.0`), when `public_address`
    /// has no prefix length.
    pub public_netmask: Option<String>,
    /// The public default gateway (static address only).
    pub public_gateway: Option<String>,
    /// DNS servers of the public interface (static address only).
    pub public_dns: Option<Vec<String>>,
    /// First boot renews the DHCP lease of every interface (Windows:
    /// `ipconfig /renew`).
    #[serde(default)]
    pub renew_dhcp: bool,
    /// First boot gives this interface a static address and default
    /// gateway (Windows: `netsh interface ip set address`).
    pub static_address: Option<StaticAddress>,
}

/// `static_address = { interface = "Public", address = "192.0.2.7/24", gateway = "192.0.2.1" }`.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StaticAddress {
    /// The interface's name on the computer (not the one reimage talks
    /// over: its address would change under the channel).
    pub interface: String,
    /// IPv4 address with prefix length.
    pub address: String,
    /// Default gateway.
    pub gateway: Option<String>,
}

/// `[images.NAME]`: what gets loaded and which OS profile brings it up.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// OS profile name: one of `[os.*]` or a built-in (linux, windows-6, ...).
    pub os: String,
    /// Provisioner name, used when the computer names none.
    pub provisioner: Option<String>,
    /// What the provisioner loads: an xCAT osimage, a vSphere template, a
    /// base disk path, an argument to a command.
    pub source: Option<String>,
    /// Attempts for this image, overriding the top-level `max_attempts`.
    pub max_attempts: Option<u32>,
    /// The image was generalized with Sysprep: longer first boot, a reboot.
    /// Unset: the family's default (true for windows-6 and windows-10, as
    /// VCL's imagemeta has it).
    #[serde(default)]
    pub sysprep: Option<bool>,
    /// The image runs as a virtual machine: shorter waits.
    #[serde(default)]
    pub r#virtual: bool,
    /// Command whose output proves the loaded image is the one asked for.
    pub image_check: Option<ImageCheck>,
    /// Local scripts run on the computer after first-boot configuration.
    #[serde(default)]
    pub post_load: Vec<PathBuf>,
    /// Timeout of each post-load script.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub post_load_timeout: Option<Duration>,
    /// Run the image's own post-load hooks (VCL's `vcl_post_load` and
    /// reimage's `post-load.d`); default true.
    pub image_hooks: Option<bool>,
    /// Direct boot (qemu): kernel file.
    pub kernel: Option<PathBuf>,
    /// Direct boot (qemu): initrd file.
    pub initrd: Option<PathBuf>,
    /// Direct boot (qemu): kernel command line; placeholders allowed.
    pub cmdline: Option<String>,
    /// libvirt: domain XML template file.
    pub domain_xml: Option<PathBuf>,
    /// Memory of a VM in MiB.
    pub memory: Option<u32>,
    /// Virtual CPUs of a VM.
    pub cpus: Option<u32>,
}

/// `image_check = { command = [...], expect = "regex" }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ImageCheck {
    /// Run on the computer once its channel answers.
    pub command: Vec<String>,
    /// Regex its standard output must match.
    pub expect: String,
}

/// How the OS module talks to the computer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum ChannelKind {
    /// SSH (key or password file).
    Ssh,
    /// WS-Management (WinRM).
    Winrm,
    /// Network probes only.
    None,
}

names!(ChannelKind {
    Ssh => "ssh",
    Winrm => "winrm",
    None => "none",
});

/// `[os.NAME]`: an OS profile. Every key is optional; what is not set comes
/// from the built-in profile of the same `family` (or the same name).
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct OsConfig {
    /// One of the families the OS floor hands down (linux, windows-5,
    /// ...); checked against them, not by serde.
    pub family: Option<String>,
    /// ssh | winrm | none.
    pub channel: Option<ChannelKind>,
    /// Login user.
    pub user: Option<String>,
    /// SSH private key file (ssh-agent when unset and no password file).
    pub key_file: Option<PathBuf>,
    /// File whose first line is the password (SSH or WinRM).
    pub password_file: Option<PathBuf>,
    /// Channel port (22, 5985, 5986).
    #[serde(default, deserialize_with = "port_opt")]
    pub port: Option<u16>,
    /// SSH host-key policy, as written: the SSH channel
    /// (`control::ssh::HostKeyPolicy`) decodes it, and its family's checks
    /// refuse a name it does not know.
    pub host_keys: Option<String>,
    /// known_hosts file (default: STATE_DIR/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// Run the family's first-boot configuration.
    pub first_boot: Option<bool>,
    /// Wait for cloud-init to finish (linux).
    pub cloud_init: Option<bool>,
    /// WinRM over HTTPS.
    pub https: Option<bool>,
    /// CA file for WinRM HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification for WinRM (explicit, warned).
    pub insecure: Option<bool>,
    /// WinRM authentication (negotiate, ntlm or basic), as written: the
    /// WinRM channel (`control::winrm::auth::Auth`) decodes it, and the
    /// families' checks refuse a name it does not know.
    pub auth: Option<String>,
    /// Basic authentication over plain HTTP (explicit, warned).
    pub allow_unencrypted: Option<bool>,
    /// WinRM HTTPS: the listener certificate's SHA-256, or `accept-new`,
    /// as written: the WinRM channel (`control::winrm::pin::Thumbprint`)
    /// decodes it, and the families' checks refuse what it cannot read.
    pub thumbprint: Option<String>,
    /// File with the Administrator password to set (windows first boot)
    /// instead of a fresh random one.
    pub admin_password_file: Option<PathBuf>,
    /// Set a fresh random password for Administrator (windows) or root
    /// (linux) on every load (default true).
    pub fresh_password: Option<bool>,
    /// Sources (CIDRs or addresses) the first boot opens RDP/SSH and ping
    /// to; default: the management node's own address toward the computer.
    pub allow_from: Option<Vec<String>>,
    /// NTP servers the first boot points the clock at and syncs from.
    pub time_servers: Option<Vec<String>>,
    /// TCP ports `reimage grant` opens to the user's addresses besides
    /// the family's own (SSH 22, RDP 3389).
    pub ports: Option<Vec<u16>>,
    /// Windows activation: `best-effort` (the default when `kms_hosts` or
    /// `mak_file` is set: a failure warns), `required` (a failure fails
    /// the load) or `off`. Kept as written (a table is the old form,
    /// refused with a pointer to the new keys): the family checks it.
    pub activation: Option<ActivationValue>,
    /// KMS hosts (`host[:port]`), tried in order.
    pub kms_hosts: Option<Vec<String>>,
    /// File whose first line is a MAK product key (a secret), tried after
    /// the KMS hosts.
    pub mak_file: Option<PathBuf>,
    /// DNS servers set before the domain join (Windows).
    pub domain_dns: Option<Vec<String>>,
    /// Active Directory domain to join at first boot (and leave before a
    /// reload).
    pub domain: Option<DomainConfig>,
    /// The wait sequence, replacing the built-in one.
    pub steps: Option<Vec<StepConfig>>,
    /// Timeouts of steps by step name, over the sequence.
    #[serde(default)]
    pub timeouts: BTreeMap<String, DurationValue>,
    /// How long the computer must keep answering before it is ready.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub stable_for: Option<Duration>,
    /// Connect timeout of one channel attempt.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub connect_timeout: Option<Duration>,
    /// Pause between port or banner probes while the target answers.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub probe_interval: Option<Duration>,
    /// Timeout of one first-boot command.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub command_timeout: Option<Duration>,
}

/// `activation = "required"` as written, or the old table form
/// (`{ kms = .. }` / `{ mak_file = .. }`), which `check` refuses with the
/// keys that replaced it.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum ActivationValue {
    /// `off`, `best-effort` or `required`.
    Mode(String),
    /// The old table form.
    Table(toml::Table),
}

/// `domain = { name = "ad.example.edu", ou = "OU=Lab,DC=ad,DC=example,DC=edu", credentials_file = "..." }`.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// The domain's DNS name.
    pub name: String,
    /// Organizational unit for the computer account (distinguished name).
    pub ou: Option<String>,
    /// File: first line the user (`user@domain` or `DOMAIN\\user`), second
    /// line its password.
    pub credentials_file: PathBuf,
}

/// serde: a TCP port, 1 to 65535 (port 0 cannot be connected to).
fn port_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let n = i64::deserialize(d)?;
    match u16::try_from(n) {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(serde::de::Error::custom(format!(
            "port {n} is not a TCP port: use 1 to 65535"
        ))),
    }
}

/// A duration in a map value position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration::de(d).map(DurationValue)
    }
}

/// What a wait step waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum WaitKind {
    /// ICMP echo answered (system `ping`).
    Ping,
    /// TCP connect succeeds.
    Port,
    /// TCP connect and a first line matching `regex`.
    Banner,
    /// The channel authenticates and runs a no-op.
    Login,
    /// A command over the channel until its output matches `regex` (or
    /// it exits 0 when no regex is given).
    Command,
    /// The computer goes down and comes back with a new boot id.
    Reboot,
    /// Windows says its setup is complete: Sysprep's passes are done
    /// (windows families only).
    SetupDone,
    /// Just wait.
    Sleep,
}

names!(WaitKind {
    Ping => "ping",
    Port => "port",
    Banner => "banner",
    Login => "login",
    Command => "command",
    Reboot => "reboot",
    SetupDone => "setup-done",
    Sleep => "sleep",
});

impl WaitKind {
    /// True for steps that need a channel other than `none`.
    pub fn needs_channel(self) -> bool {
        matches!(
            self,
            WaitKind::Login | WaitKind::Command | WaitKind::Reboot | WaitKind::SetupDone
        )
    }
}

/// One step of a wait sequence: `{ wait = "port", port = 22, timeout = "10m" }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// What it waits for.
    pub wait: WaitKind,
    /// Name in events and `timeouts` (default: the wait kind).
    pub name: Option<String>,
    /// TCP port (port, banner; default: the channel's).
    #[serde(default, deserialize_with = "port_opt")]
    pub port: Option<u16>,
    /// Give up after this long (grows with the attempt).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub timeout: Option<Duration>,
    /// Give up when nothing changed for this long.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub stall_timeout: Option<Duration>,
    /// banner / command: regex to match.
    pub regex: Option<String>,
    /// command: the argument vector; reboot: what triggers the reboot.
    pub command: Option<Vec<String>>,
    /// sleep: how long.
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub duration: Option<Duration>,
    /// When the step times out and the provisioner can reset power: reset
    /// and wait this much longer (Windows 6.x, as Apache VCL does).
    #[serde(default, deserialize_with = "duration::de_opt")]
    pub reset_on_timeout: Option<Duration>,
}
