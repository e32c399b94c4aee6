//! The `vsphere` provisioner over the built binary, against govmomi's
//! vSphere simulator (vcsim) built from Debian's golang-github-vmware-
//! govmomi-dev by tests/vcsim/build.sh: not a stand-in, the simulator
//! VMware's own Go SDK is tested with. Both of its models run: VPX (a
//! vCenter: the clone path) and ESX (a standalone host: the disk-copy and
//! create path).
//!
//! The tests look at the simulator's inventory through its own SOAP API
//! (a separate session of the test's), never at reimage's messages alone.
//!
//! What vcsim 0.24 cannot show, and so these tests do not claim:
//! - CloneVM_Task ignores `spec.config.numCPUs`/`memoryMB` (it copies the
//!   template's hardware), so CPU and memory are checked on the ESX path
//!   (CreateVM_Task honours them) only.
//! - Linked clones: vcsim accepts `diskMoveType` and the snapshot but makes
//!   a full copy; the test checks the snapshot requirement and the request.
//! - Task progress: vcsim's tasks finish inside the call that starts them;
//!   a slow task is simulated with its method delay (`-delay`), which
//!   holds the call itself, not the task. A session that ends during a
//!   task's wait is ended by the test's HTTP front (`front`) between the
//!   filter's creation and the wait.
//! - A session that ends between a ContainerView's creation and its read:
//!   vcsim answers RetrievePropertiesEx without a session (where vCenter
//!   says NotAuthenticated), so the lookup's new view after a new login
//!   is not shown here.

use crate::common::{self, LIMIT, Scratch};
use crate::test::{Output, Test, run};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testbed::port;
use testbed::vcsim::Vcsim;

mod front;
mod nets;
use front::{Act, Front};

const USER: &str = "reimage-svc";
const PASSWORD: &str = "Pw-for-vcsim-7731";
const MAC: &str = "00:50:56:01:02:03";

/// The simulator binary, built once per test run.
fn vcsim() -> &'static Path {
    testbed::vcsim::binary(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("vcsim/vcsim"))
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Model {
    Vpx,
    Esx,
}

/// A running simulator (killed on drop), with a SOAP client of the test's
/// own to look at its inventory (its [`Api`], which it derefs to).
struct Sim {
    vcsim: Vcsim,
    api: Api,
    thumbprint: String,
    cert: PathBuf,
    model: Model,
}

impl std::ops::Deref for Sim {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The test's own SOAP client of a simulator: raw calls and sessions of
/// its own. Cloned into the threads of a [`front::Front`].
#[derive(Clone)]
pub(crate) struct Api {
    /// `https://127.0.0.1:PORT` (no /sdk).
    pub base: String,
    agent: ureq::Agent,
}

impl Api {
    /// A raw call; the answer's text (faults included).
    fn soap(&self, method: &str, ty: &str, this: &str, body: &str, cookie: Option<&str>) -> String {
        let env = format!(
            "<?xml version=\"1.0\"?><soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><soapenv:Body><{method} xmlns=\"urn:vim25\">\
<_this type=\"{ty}\">{this}</_this>{body}</{method}></soapenv:Body></soapenv:Envelope>"
        );
        let mut req = self
            .agent
            .post(&format!("{}/sdk", self.base))
            .header("Content-Type", "text/xml")
            .header("SOAPAction", "urn:vim25/6.5");
        if let Some(c) = cookie {
            req = req.header("Cookie", format!("vmware_soap_session={c}"));
        }
        let mut resp = req.send(env).expect("vcsim answers");
        resp.body_mut().read_to_string().expect("body")
    }

    fn manager(&self, name: &str) -> (String, String) {
        let sc = self.soap(
            "RetrieveServiceContent",
            "ServiceInstance",
            "ServiceInstance",
            "",
            None,
        );
        let doc = roxmltree::Document::parse(&sc).expect("XML");
        let n = doc
            .descendants()
            .find(|n| n.tag_name().name() == name)
            .unwrap_or_else(|| panic!("no {name}"));
        (
            n.attribute("type").expect("type").to_string(),
            n.text().expect("text").to_string(),
        )
    }

    /// Runs `f` in a session of the test's own, logged out after.
    fn session<T>(&self, f: impl FnOnce(&str) -> T) -> T {
        let (ty, sm) = self.manager("sessionManager");
        let r = self.soap(
            "Login",
            &ty,
            &sm,
            &format!("<userName>{USER}</userName><password>{PASSWORD}</password>"),
            None,
        );
        let key = between(&r, "<key>", "</key>")
            .expect("logged in")
            .to_string();
        let out = f(&key);
        self.soap("Logout", &ty, &sm, "", Some(&key));
        out
    }
}

impl Api {
    /// Ends session `key` (reimage's) from a session of the test's own,
    /// as an admin does in vCenter's Sessions view; true when it did.
    fn terminate_session(&self, key: &str) -> bool {
        let (st, sm) = self.manager("sessionManager");
        self.session(|c| {
            let r = self.soap(
                "TerminateSession",
                &st,
                &sm,
                &format!("<sessionId>{key}</sessionId>"),
                Some(c),
            );
            !r.contains("Fault>")
        })
    }
}

impl Sim {
    fn start(s: &Scratch, model: Model, delay: Option<&str>) -> Sim {
        let pw = s.write("vcsim-password", &format!("{PASSWORD}\n"));
        let name = match model {
            Model::Vpx => "vpx",
            Model::Esx => "esx",
        };
        let vcsim = Vcsim::start(vcsim(), &s.dir, name, USER, &pw, delay);
        let pem = std::fs::read(&vcsim.cert).expect("vcsim wrote its certificate");
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            )
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .new_agent();
        let sim = Sim {
            api: Api {
                base: vcsim.base.clone(),
                agent,
            },
            thumbprint: vcsim.thumbprint.clone(),
            cert: vcsim.cert.clone(),
            vcsim,
            model,
        };
        // It answers RetrieveServiceContent on /sdk, with the model's apiType.
        let sc = sim.soap(
            "RetrieveServiceContent",
            "ServiceInstance",
            "ServiceInstance",
            "",
            None,
        );
        let want = match model {
            Model::Vpx => "<apiType>VirtualCenter</apiType>",
            Model::Esx => "<apiType>HostAgent</apiType>",
        };
        assert!(sc.contains(want), "{sc}");
        sim
    }

    /// Every VM: (moref, name, power state, MACs, CPUs, memory MB, boot time).
    fn vms(&self) -> Vec<Vm> {
        self.session(|c| {
            let (vt, vmgr) = self.manager("viewManager");
            let (_, root) = self.manager("rootFolder");
            let v = self.soap(
                "CreateContainerView",
                &vt,
                &vmgr,
                &format!("<container type=\"Folder\">{root}</container><type>VirtualMachine</type><recursive>true</recursive>"),
                Some(c),
            );
            let view = between(&v, "<returnval type=\"ContainerView\">", "</returnval>")
                .expect("a view")
                .to_string();
            let (pt, pc) = self.manager("propertyCollector");
            let r = self.soap(
                "RetrievePropertiesEx",
                &pt,
                &pc,
                &format!(
                    "<specSet><propSet><type>VirtualMachine</type><pathSet>name</pathSet><pathSet>runtime.powerState</pathSet>\
<pathSet>config.hardware</pathSet><pathSet>summary.runtime.bootTime</pathSet><pathSet>resourcePool</pathSet></propSet>\
<objectSet><obj type=\"ContainerView\">{view}</obj><skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>v</name>\
<type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet></specSet><options/>"
                ),
                Some(c),
            );
            parse_vms(&r)
        })
    }

    fn vms_named(&self, name: &str) -> Vec<Vm> {
        self.vms().into_iter().filter(|v| v.name == name).collect()
    }

    /// User agents of the open sessions (the test's own session, which
    /// vcsim needs to fill in sessionList, is ureq's).
    fn session_agents(&self) -> Vec<String> {
        let (pt, pc) = self.manager("propertyCollector");
        let (st, sm) = self.manager("sessionManager");
        let r = self.session(|c| self.soap(
            "RetrievePropertiesEx",
            &pt,
            &pc,
            &format!(
                "<specSet><propSet><type>SessionManager</type><pathSet>sessionList</pathSet></propSet>\
<objectSet><obj type=\"{st}\">{sm}</obj></objectSet></specSet><options/>"
            ),
            Some(c),
        ));
        let doc = roxmltree::Document::parse(&r).expect("XML");
        let agents: Vec<String> = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "userAgent")
            .map(|n| n.text().unwrap_or("").to_string())
            .collect();
        assert!(
            !agents.is_empty(),
            "sessionList shows the test's own session: {r}"
        );
        agents
    }

    /// Asserts no session of reimage's is left open.
    fn assert_logged_out(&self) {
        let agents = self.session_agents();
        assert!(
            !agents.iter().any(|a| a.starts_with("reimage/")),
            "a reimage session was left open: {agents:?}"
        );
    }

    /// A task call in a session; panics on a fault.
    fn task(&self, c: &str, method: &str, ty: &str, this: &str, body: &str) {
        let r = self.soap(method, ty, this, body, Some(c));
        assert!(!r.contains("Fault>"), "{method}: {r}");
    }

    /// ESX: a base disk at `[LocalDS_0] base/base.vmdk`.
    fn make_base_disk(&self) -> &'static str {
        const DISK: &str = "[LocalDS_0] base/base.vmdk";
        self.session(|c| {
            let (ft, fm) = self.manager("fileManager");
            let r = self.soap(
                "MakeDirectory",
                &ft,
                &fm,
                "<name>[LocalDS_0] base</name><datacenter type=\"Datacenter\">ha-datacenter</datacenter><createParentDirectories>true</createParentDirectories>",
                Some(c),
            );
            assert!(!r.contains("Fault>"), "{r}");
            let (dt, dm) = self.manager("virtualDiskManager");
            self.task(
                c,
                "CreateVirtualDisk_Task",
                &dt,
                &dm,
                &format!("<name>{DISK}</name><datacenter type=\"Datacenter\">ha-datacenter</datacenter>\
<spec xsi:type=\"FileBackedVirtualDiskSpec\"><diskType>thin</diskType><adapterType>lsiLogic</adapterType><capacityKb>1024</capacityKb></spec>"),
            );
        });
        DISK
    }

    /// The morefs and names of every object of `kind` (a ContainerView
    /// from the root folder), in a session of the test's.
    fn objects(&self, c: &str, kind: &str) -> Vec<(String, String)> {
        let (vt, vmgr) = self.manager("viewManager");
        let (_, root) = self.manager("rootFolder");
        let v = self.soap(
            "CreateContainerView",
            &vt,
            &vmgr,
            &format!("<container type=\"Folder\">{root}</container><type>{kind}</type><recursive>true</recursive>"),
            Some(c),
        );
        let view = between(&v, "<returnval type=\"ContainerView\">", "</returnval>")
            .expect("a view")
            .to_string();
        let (pt, pc) = self.manager("propertyCollector");
        let r = self.soap(
            "RetrievePropertiesEx",
            &pt,
            &pc,
            &format!(
                "<specSet><propSet><type>{kind}</type><pathSet>name</pathSet></propSet>\
<objectSet><obj type=\"ContainerView\">{view}</obj><skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>v</name>\
<type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet></specSet><options/>"
            ),
            Some(c),
        );
        let doc = roxmltree::Document::parse(&r).expect("XML");
        doc.descendants()
            .filter(|n| n.tag_name().name() == "objects")
            .map(|o| {
                let text = |name: &str| {
                    o.descendants()
                        .find(|n| n.tag_name().name() == name)
                        .and_then(|n| n.text())
                        .unwrap_or("")
                        .to_string()
                };
                (text("obj"), text("val"))
            })
            .collect()
    }

    /// The raw answer for properties `paths` of object `ty`/`moref`.
    fn props(&self, c: &str, ty: &str, moref: &str, paths: &[&str]) -> String {
        let (pt, pc) = self.manager("propertyCollector");
        let sets: String = paths
            .iter()
            .map(|p| format!("<pathSet>{p}</pathSet>"))
            .collect();
        self.soap(
            "RetrievePropertiesEx",
            &pt,
            &pc,
            &format!(
                "<specSet><propSet><type>{ty}</type>{sets}</propSet><objectSet><obj type=\"{ty}\">{moref}</obj></objectSet></specSet><options/>"
            ),
            Some(c),
        )
    }

    /// A VM's hardware as the simulator keeps it.
    fn hardware(&self, vm: &str) -> Hw {
        let r = self.session(|c| {
            self.props(
                c,
                "VirtualMachine",
                vm,
                &[
                    "config.firmware",
                    "config.version",
                    "config.bootOptions",
                    "config.guestId",
                    "config.hardware.device",
                ],
            )
        });
        let doc = roxmltree::Document::parse(&r).expect("XML");
        let prop = |name: &str| {
            doc.descendants()
                .filter(|n| n.tag_name().name() == "propSet")
                .find(|p| {
                    p.children()
                        .any(|c| c.tag_name().name() == "name" && c.text() == Some(name))
                })
                .and_then(|p| p.children().find(|c| c.tag_name().name() == "val"))
        };
        let text = |name: &str| prop(name).and_then(|v| v.text()).unwrap_or("").to_string();
        Hw {
            firmware: text("config.firmware"),
            version: text("config.version"),
            guest_id: text("config.guestId"),
            secure_boot: prop("config.bootOptions").is_some_and(|b| {
                b.descendants().any(|n| {
                    n.tag_name().name() == "efiSecureBootEnabled" && n.text() == Some("true")
                })
            }),
            vtpm: prop("config.hardware.device").is_some_and(|d| {
                d.children().any(|n| {
                    n.attributes()
                        .any(|a| a.name() == "type" && a.value() == "VirtualTPM")
                })
            }),
            disks: prop("config.hardware.device")
                .map(|d| {
                    d.descendants()
                        .filter(|n| n.tag_name().name() == "fileName")
                        .filter_map(|n| n.text())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// ReconfigVM_Task of `vm` with `spec` (VirtualMachineConfigSpec
    /// elements).
    fn reconfigure(&self, vm: &str, spec: &str) {
        self.session(|c| {
            self.task(
                c,
                "ReconfigVM_Task",
                "VirtualMachine",
                vm,
                &format!("<spec>{spec}</spec>"),
            )
        });
    }

    /// The first datacenter's moref.
    fn datacenter(&self, c: &str) -> String {
        self.objects(c, "Datacenter")
            .into_iter()
            .next()
            .expect("a datacenter")
            .0
    }

    /// True when the simulator has the virtual disk `path`.
    fn disk_exists(&self, path: &str) -> bool {
        self.session(|c| {
            let dc = self.datacenter(c);
            let (dt, dm) = self.manager("virtualDiskManager");
            let r = self.soap(
                "QueryVirtualDiskUuid",
                &dt,
                &dm,
                &format!("<name>{path}</name><datacenter type=\"Datacenter\">{dc}</datacenter>"),
                Some(c),
            );
            !r.contains("Fault>")
        })
    }

    /// A VM `name` made by the test (CreateVM_Task): its files at `vmx` (a
    /// datastore path), with `disk` (an existing disk file) as its disk
    /// when given.
    fn create_vm(&self, name: &str, vmx: &str, disk: Option<&str>) {
        self.session(|c| {
            let dc = self.datacenter(c);
            let r = self.props(c, "Datacenter", &dc, &["vmFolder"]);
            let doc = roxmltree::Document::parse(&r).expect("XML");
            let folder = doc
                .descendants()
                .find(|n| n.tag_name().name() == "val")
                .and_then(|n| n.text())
                .expect("the datacenter's vmFolder")
                .to_string();
            let pool = self
                .objects(c, "ResourcePool")
                .into_iter()
                .next()
                .expect("a resource pool")
                .0;
            let disk = disk
                .map(|d| {
                    format!(
                        "<deviceChange><operation>add</operation><device xsi:type=\"VirtualLsiLogicController\"><key>-100</key><busNumber>0</busNumber><sharedBus>noSharing</sharedBus></device></deviceChange>\
<deviceChange><operation>add</operation><device xsi:type=\"VirtualDisk\"><key>-101</key><backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{d}</fileName><diskMode>persistent</diskMode></backing><controllerKey>-100</controllerKey><unitNumber>0</unitNumber><capacityInKB>1024</capacityInKB></device></deviceChange>"
                    )
                })
                .unwrap_or_default();
            self.task(
                c,
                "CreateVM_Task",
                "Folder",
                &folder,
                &format!(
                    "<config><name>{name}</name><guestId>otherGuest64</guestId><files><vmPathName>{vmx}</vmPathName></files>{disk}</config><pool type=\"ResourcePool\">{pool}</pool>"
                ),
            );
        });
    }

    /// VPX: a snapshot of `vm`.
    fn snapshot(&self, vm: &str) {
        self.session(|c| {
            self.task(
                c,
                "CreateSnapshot_Task",
                "VirtualMachine",
                vm,
                "<name>base</name><memory>false</memory><quiesce>false</quiesce>",
            )
        });
    }

    /// The template (VPX) or base disk (ESX) every test loads.
    fn source(&self) -> &'static str {
        match self.model {
            Model::Vpx => "DC0_H0_VM0",
            Model::Esx => self.make_base_disk(),
        }
    }

    /// Kills the simulator at once.
    fn kill(&mut self) {
        self.vcsim.kill();
    }
}

/// A VM's hardware, read back from the simulator.
#[derive(Debug, Clone)]
struct Hw {
    firmware: String,
    version: String,
    guest_id: String,
    secure_boot: bool,
    vtpm: bool,
    /// Every disk file (with parents).
    disks: Vec<String>,
}

#[derive(Debug, Clone)]
struct Vm {
    moref: String,
    name: String,
    power: String,
    macs: Vec<String>,
    cpus: String,
    memory: String,
    boot: String,
    pool: String,
}

fn parse_vms(text: &str) -> Vec<Vm> {
    let doc = roxmltree::Document::parse(text).expect("XML");
    doc.descendants()
        .filter(|n| n.tag_name().name() == "objects")
        .map(|o| {
            let child = |n: roxmltree::Node, name: &str| {
                n.descendants()
                    .find(|c| c.tag_name().name() == name)
                    .and_then(|c| c.text())
                    .unwrap_or("")
                    .to_string()
            };
            let prop = |name: &str| {
                o.children()
                    .find(|p| p.tag_name().name() == "propSet" && child(*p, "name") == name)
            };
            let val = |name: &str| prop(name).map(|p| child(p, "val")).unwrap_or_default();
            let hw = prop("config.hardware");
            Vm {
                moref: child(o, "obj"),
                name: val("name"),
                power: val("runtime.powerState"),
                macs: hw
                    .map(|h| {
                        h.descendants()
                            .filter(|n| n.tag_name().name() == "macAddress")
                            .filter_map(|n| n.text())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                cpus: hw.map(|h| child(h, "numCPU")).unwrap_or_default(),
                memory: hw.map(|h| child(h, "memoryMB")).unwrap_or_default(),
                boot: val("summary.runtime.bootTime"),
                pool: val("resourcePool"),
            }
        })
        .collect()
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> Option<&'a str> {
    let i = s.find(a)? + a.len();
    let j = s[i..].find(b)? + i;
    Some(&s[i..j])
}

/// Writes the config: provisioner `vs` for `sim` trusting its certificate
/// by thumbprint unless `trust` says otherwise, with `extra` keys; image
/// `img` from `source`; computer `pc1` with the test MAC.
fn config(s: &Scratch, sim: &Sim, source: &str, password: &str, trust: Option<&str>, extra: &str) {
    let trust = trust
        .map(str::to_string)
        .unwrap_or_else(|| format!("thumbprint = \"{}\"", sim.thumbprint));
    config_at(s, &sim.base, &trust, source, password, extra);
}

/// `config` with the provisioner's `url` and trust line given.
fn config_at(s: &Scratch, url: &str, trust: &str, source: &str, password: &str, extra: &str) {
    let pw = s.write("vs-password", &format!("{password}\n"));
    // A secret: `check` refuses one others can read.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod the password file");
    s.config(&format!(
        r#"
[os.none]
family = "generic"
channel = "none"
steps = []

[provisioners.vs]
kind = "vsphere"
url = "{}"
username = "{USER}"
password_file = "{}"
{trust}
{extra}

[images.img]
os = "none"
provisioner = "vs"
source = "{source}"
cpus = 2
memory = 2048

[computers.pc1]
address = "127.0.0.1"
mac = "{MAC}"
"#,
        url,
        pw.display()
    ));
}

/// `reimage load pc1 --image img --attempt 1 --of 3`.
fn load(s: &Scratch) -> Output {
    let r = Test::with(s).load("pc1", "img").attempt(1, 3).run();
    println!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        r.code, r.stdout, r.stderr
    );
    assert!(!r.stderr.contains(PASSWORD) && !r.stdout.contains(PASSWORD));
    let events =
        std::fs::read_to_string(s.path("state/computers/pc1/events.jsonl")).unwrap_or_default();
    assert!(!events.contains(PASSWORD), "password in the event log");
    r
}

fn loads_to_ready_and_reloads(model: Model) {
    let s = Scratch::new(&format!("vs-ready-{model:?}"));
    let sim = Sim::start(&s, model, None);
    let source = sim.source();
    config(&s, &sim, source, PASSWORD, None, "");
    assert!(sim.vms_named("pc1").is_empty());

    let r = load(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let vms = sim.vms_named("pc1");
    assert_eq!(vms.len(), 1, "{vms:?}");
    let first = vms[0].clone();
    assert_eq!(first.power, "poweredOn");
    assert_eq!(first.macs, [MAC], "the NIC has the computer's MAC");
    if model == Model::Esx {
        // vcsim's CloneVM_Task copies the template's hardware, so only the
        // create path can show the image's CPU and memory.
        assert_eq!((first.cpus.as_str(), first.memory.as_str()), ("2", "2048"));
    }
    let path = match model {
        Model::Vpx => "clone of DC0_H0_VM0",
        Model::Esx => "copy base disk [LocalDS_0] base/base.vmdk",
    };
    assert!(r.stderr.contains(path), "{}", r.stderr);
    sim.assert_logged_out();

    // A reload replaces the VM: a new object, still one of that name.
    let r = load(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let vms = sim.vms_named("pc1");
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert_ne!(vms[0].moref, first.moref, "the VM was made afresh");
    assert_eq!(vms[0].power, "poweredOn");
    assert_eq!(vms[0].macs, [MAC]);
    assert!(r.stderr.contains("power off VM pc1"), "{}", r.stderr);
    assert!(r.stderr.contains("destroy VM pc1"), "{}", r.stderr);
    sim.assert_logged_out();
    // The template, or the base disk's neighbours, are untouched.
    if model == Model::Vpx {
        assert_eq!(sim.vms_named("DC0_H0_VM0").len(), 1);
    }
}

#[test]
fn vpx_loads_to_ready_and_reloads() {
    loads_to_ready_and_reloads(Model::Vpx);
}

#[test]
fn esx_loads_to_ready_and_reloads() {
    loads_to_ready_and_reloads(Model::Esx);
}

/// A missing template or base disk is fatal on attempt 1, names what is
/// missing, and leaves the computer's VM as it was.
fn missing_source_is_fatal(model: Model) {
    let s = Scratch::new(&format!("vs-missing-{model:?}"));
    let sim = Sim::start(&s, model, None);
    let source = sim.source();
    config(&s, &sim, source, PASSWORD, None, "");
    assert_eq!(load(&s).code, 0);
    let before = sim.vms_named("pc1");

    let missing = match model {
        Model::Vpx => "no-such-template",
        Model::Esx => "[LocalDS_0] base/no-such-disk.vmdk",
    };
    config(&s, &sim, missing, PASSWORD, None, "");
    let r = load(&s);
    assert_eq!(r.code, 1, "fatal on attempt 1 of 3: {}", r.stderr);
    let what = match model {
        Model::Vpx => "template VM \"no-such-template\" not found",
        Model::Esx => "base disk \"[LocalDS_0] base/no-such-disk.vmdk\" not found",
    };
    assert!(r.stderr.contains(what), "{}", r.stderr);
    let after = sim.vms_named("pc1");
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].moref, before[0].moref, "the old VM was kept");
    sim.assert_logged_out();
}

#[test]
fn vpx_missing_template_is_fatal() {
    missing_source_is_fatal(Model::Vpx);
}

#[test]
fn esx_missing_base_disk_is_fatal() {
    missing_source_is_fatal(Model::Esx);
}

fn wrong_password_is_fatal(model: Model) {
    let s = Scratch::new(&format!("vs-password-{model:?}"));
    let sim = Sim::start(&s, model, None);
    config(&s, &sim, "DC0_H0_VM0", "not-the-password", None, "");
    let r = load(&s);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("fault InvalidLogin"), "{}", r.stderr);
    assert!(
        r.stderr.contains("check username and password_file"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("not-the-password"));
}

#[test]
fn vpx_wrong_password_is_fatal() {
    wrong_password_is_fatal(Model::Vpx);
}

#[test]
fn esx_wrong_password_is_fatal() {
    wrong_password_is_fatal(Model::Esx);
}

/// Waits until the event log shows a step whose message has `text`.
fn wait_for_step(s: &Scratch, text: &str) {
    let ok = common::eventually(Duration::from_secs(60), || {
        s.events_so_far("pc1")
            .iter()
            .any(|e| e["kind"] == "step" && e["message"].as_str().is_some_and(|m| m.contains(text)))
    });
    assert!(ok, "no step {text:?} in {:#?}", s.events("pc1"));
}

/// The long call of each model, held by vcsim's method delay.
fn slow(model: Model) -> (&'static str, &'static str) {
    match model {
        Model::Vpx => ("CloneVM_Task=60000", "clone of DC0_H0_VM0"),
        Model::Esx => ("CopyVirtualDisk_Task=60000", "copy base disk"),
    }
}

fn simulator_stopped_mid_task_retries(model: Model) {
    let s = Scratch::new(&format!("vs-stopped-{model:?}"));
    let (delay, step) = slow(model);
    let mut sim = Sim::start(&s, model, Some(delay));
    let source = sim.source();
    config(&s, &sim, source, PASSWORD, None, "");
    let child = Test::with(&s)
        .load("pc1", "img")
        .attempt(1, 3)
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reimage");
    wait_for_step(&s, step);
    sim.kill();
    let out = child.wait_with_output().expect("reimage ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(75), "retry: {stderr}");
}

#[test]
fn vpx_simulator_stopped_mid_task_retries() {
    simulator_stopped_mid_task_retries(Model::Vpx);
}

#[test]
fn esx_simulator_stopped_mid_task_retries() {
    simulator_stopped_mid_task_retries(Model::Esx);
}

fn sigterm_mid_task_logs_out(model: Model) {
    let s = Scratch::new(&format!("vs-sigterm-{model:?}"));
    let (delay, step) = slow(model);
    let sim = Sim::start(&s, model, Some(delay));
    let source = sim.source();
    config(&s, &sim, source, PASSWORD, None, "");
    let child = Test::with(&s)
        .load("pc1", "img")
        .attempt(1, 3)
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reimage");
    wait_for_step(&s, step);
    assert!(
        sim.session_agents()
            .iter()
            .any(|a| a.starts_with("reimage/")),
        "reimage is logged in during the task"
    );
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().expect("reimage ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    // It did not sit out the held call: the VM it would make is not there
    // yet (vcsim finishes the call after its delay, whoever waits).
    assert!(sim.vms_named("pc1").is_empty());
    sim.assert_logged_out();
}

#[test]
fn vpx_sigterm_during_clone_exits_143_and_logs_out() {
    sigterm_mid_task_logs_out(Model::Vpx);
}

#[test]
fn esx_sigterm_during_disk_copy_exits_143_and_logs_out() {
    sigterm_mid_task_logs_out(Model::Esx);
}

fn power_reset_resets_the_running_vm(model: Model) {
    let s = Scratch::new(&format!("vs-reset-{model:?}"));
    let sim = Sim::start(&s, model, None);
    let source = sim.source();
    config(&s, &sim, source, PASSWORD, None, "");
    assert_eq!(load(&s).code, 0);
    let before = sim.vms_named("pc1");
    assert_eq!(before[0].power, "poweredOn");
    // A wait that cannot succeed (nothing listens), with a reset on timeout.
    let closed = port::closed();
    let text = std::fs::read_to_string(s.path("reimage.toml")).expect("config");
    s.write(
        "reimage.toml",
        &text.replace(
            "steps = []",
            &format!(
                "steps = [{{ wait = \"port\", port = {closed}, timeout = \"1s\", reset_on_timeout = \"1s\" }}]"
            ),
        ),
    );
    let r = Test::with(&s).post_load("pc1", "img").attempt(1, 3).run();
    println!("exit {}\n{}", r.code, r.stderr);
    assert_eq!(r.code, 75, "{}", r.stderr);
    assert!(r.stderr.contains("reset VM pc1: done"), "{}", r.stderr);
    let after = sim.vms_named("pc1");
    assert_eq!(after[0].moref, before[0].moref, "the same VM");
    assert_eq!(after[0].power, "poweredOn");
    assert_ne!(after[0].boot, before[0].boot, "it booted again");
    sim.assert_logged_out();
}

#[test]
fn vpx_power_reset_resets_the_running_vm() {
    power_reset_resets_the_running_vm(Model::Vpx);
}

#[test]
fn esx_power_reset_resets_the_running_vm() {
    power_reset_resets_the_running_vm(Model::Esx);
}

#[test]
fn vpx_ended_session_logs_in_again_once() {
    let s = Scratch::new("vs-relogin");
    // The clone call is held 10 s: the session is ended while it runs,
    // however slowly this machine gets from the step event to the end.
    let sim = Sim::start(&s, Model::Vpx, Some("CloneVM_Task=10000"));
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "");
    let child = Test::with(&s)
        .load("pc1", "img")
        .attempt(1, 3)
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reimage");
    wait_for_step(&s, "clone of DC0_H0_VM0");
    // End reimage's session behind its back while the clone call runs.
    sim.session(|c| {
        let (pt, pc) = sim.manager("propertyCollector");
        let (st, sm) = sim.manager("sessionManager");
        let r = sim.soap(
            "RetrievePropertiesEx",
            &pt,
            &pc,
            &format!(
                "<specSet><propSet><type>SessionManager</type><pathSet>sessionList</pathSet></propSet>\
<objectSet><obj type=\"{st}\">{sm}</obj></objectSet></specSet><options/>"
            ),
            Some(c),
        );
        let doc = roxmltree::Document::parse(&r).expect("XML");
        let keys: Vec<String> = doc
            .descendants()
            .filter(|n| n.tag_name().name() == "UserSession")
            .filter(|n| {
                n.children()
                    .any(|c| c.tag_name().name() == "userAgent" && c.text().is_some_and(|t| t.starts_with("reimage/")))
            })
            .filter_map(|n| n.children().find(|c| c.tag_name().name() == "key")?.text().map(str::to_string))
            .collect();
        assert_eq!(keys.len(), 1, "reimage's session: {r}");
        sim.task(
            c,
            "TerminateSession",
            &st,
            &sm,
            &format!("<sessionId>{}</sessionId>", keys[0]),
        );
    });
    let out = child.wait_with_output().expect("reimage ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("logged in again once"), "{stderr}");
    assert_eq!(sim.vms_named("pc1")[0].power, "poweredOn");
    sim.assert_logged_out();
}

/// The task call each model's load waits on longest: the clone (vCenter)
/// or the disk copy (ESXi).
fn long_task(model: Model) -> &'static str {
    match model {
        Model::Vpx => "CloneVM_Task",
        Model::Esx => "CopyVirtualDisk_Task",
    }
}

/// The session ends (a restarted vCenter, an idle timeout, an admin's
/// TerminateSession) at the first `at` call after an `after` call: the
/// front ends it right before passing that call on, so the simulator
/// refuses it (NotAuthenticated). The load logs in again once and is
/// ready, not 75.
fn session_ended_at(model: Model, name: &str, after: &'static str, at: &'static str) {
    let s = Scratch::new(&format!("vs-relogin-{name}-{model:?}"));
    let sim = Sim::start(&s, model, None);
    let (mut armed, mut ended) = (false, false);
    let front = Front::start(&sim, move |method| {
        armed |= method == after;
        if method == at && armed && !ended {
            ended = true;
            return Act::EndSession;
        }
        Act::Pass
    });
    config_at(
        &s,
        &front.url,
        "",
        sim.source(),
        PASSWORD,
        "clone_timeout = \"20s\"",
    );
    let r = load(&s);
    let seen = front.seen();
    let end = seen
        .iter()
        .find(|c| c.ended.is_some())
        .unwrap_or_else(|| panic!("the front never ended the session: {seen:?}"));
    assert_eq!(end.method, at);
    assert_eq!(end.ended, Some(true), "TerminateSession worked: {seen:?}");
    assert_eq!(end.status, Some(500), "NotAuthenticated: {seen:?}");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("logged in again once"), "{}", r.stderr);
    let vms = sim.vms_named("pc1");
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert_eq!(vms[0].power, "poweredOn");
    sim.assert_logged_out();
}

/// The session ends while reimage waits for the clone (or disk copy).
/// vcsim's tasks end inside the call that starts them, and a method delay
/// holds that call, not the task; so the front ends the session at the
/// moment that matters: after the task's filter was made in the old
/// session, before the first wait on it. The new session has no filter:
/// the wait must make one anew (whose first update is the task, finished),
/// not wait on nothing until clone_timeout (which gave 75, the VM off).
fn session_ended_while_waiting_for_the_task(model: Model) {
    session_ended_at(model, "wait", long_task(model), "WaitForUpdatesEx");
}

#[test]
fn vpx_session_ended_during_the_clone_wait_still_loads() {
    session_ended_while_waiting_for_the_task(Model::Vpx);
}

#[test]
fn esx_session_ended_during_the_disk_copy_wait_still_loads() {
    session_ended_while_waiting_for_the_task(Model::Esx);
}

/// The session ends again after the one new login: retry (the next
/// attempt starts a fresh session), with nothing left open and nothing
/// (a filter's removal, a Logout) sent into the ended session.
#[test]
fn vpx_session_ended_twice_in_one_load_retries() {
    let s = Scratch::new("vs-relogin-twice");
    let sim = Sim::start(&s, Model::Vpx, None);
    let mut armed = false;
    let front = Front::start(&sim, move |method| {
        armed |= method == "CloneVM_Task";
        if method == "WaitForUpdatesEx" && armed {
            return Act::EndSession;
        }
        Act::Pass
    });
    config_at(&s, &front.url, "", "DC0_H0_VM0", PASSWORD, "");
    let r = load(&s);
    assert_eq!(r.code, 75, "retry: {}", r.stderr);
    assert!(r.stderr.contains("NotAuthenticated"), "{}", r.stderr);
    let seen = front.seen();
    assert_eq!(
        seen.iter().filter(|c| c.ended == Some(true)).count(),
        2,
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|c| c.method == "Logout" || c.method == "DestroyPropertyFilter"),
        "nothing is sent into the ended session: {seen:?}"
    );
    assert!(!r.stderr.contains("was not logged out"), "{}", r.stderr);
    sim.assert_logged_out();
}

/// A 503 whose body is well-formed XML but no SOAP envelope (what a
/// reverse proxy or a load balancer in front of a starting vCenter sends)
/// asks for a retry, like any 5xx without a fault; the session is logged
/// out, and the next attempt loads.
#[test]
fn vpx_http_503_with_xml_and_no_fault_retries() {
    let s = Scratch::new("vs-503-xml");
    let sim = Sim::start(&s, Model::Vpx, None);
    let mut answered = false;
    let front = Front::start(&sim, move |method| {
        if method == "CreateContainerView" && !answered {
            answered = true;
            return Act::Answer(
                503,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error><status>503</status>\
<message>Service Unavailable: the vpxd service is starting</message></error>"
                    .into(),
            );
        }
        Act::Pass
    });
    config_at(&s, &front.url, "", "DC0_H0_VM0", PASSWORD, "");
    let r = load(&s);
    assert_eq!(r.code, 75, "retry: {}", r.stderr);
    assert!(
        r.stderr.contains("HTTP 503 without a SOAP fault"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("no SOAP Body"), "{}", r.stderr);
    assert!(
        front
            .seen()
            .iter()
            .any(|c| c.method == "CreateContainerView" && c.status == Some(503)),
        "{:?}",
        front.seen()
    );
    assert!(sim.vms_named("pc1").is_empty());
    sim.assert_logged_out();
    let r = Test::with(&s).load("pc1", "img").attempt(2, 3).run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sim.vms_named("pc1")[0].power, "poweredOn");
}

/// SIGTERM while Login is held in the simulator (a slow identity source):
/// the session the Login then opens is logged out before reimage exits
/// 143, instead of staying open until vCenter's idle timeout.
#[test]
fn vpx_sigterm_during_login_logs_its_session_out() {
    let s = Scratch::new("vs-login-sigterm");
    let sim = Sim::start(&s, Model::Vpx, Some("Login=6000"));
    let front = Front::start(&sim, |_| Act::Pass);
    config_at(&s, &front.url, "", "DC0_H0_VM0", PASSWORD, "");
    let child = Test::with(&s)
        .load("pc1", "img")
        .attempt(1, 3)
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reimage");
    // reimage's Login reached the simulator, which holds it.
    front.wait_for("Login", |_| true);
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let out = child.wait_with_output().expect("reimage ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    // The signal came during the Login, not after it.
    assert!(!stderr.contains("vSphere: logged in to"), "{stderr}");
    assert!(stderr.contains("vSphere: logged out of"), "{stderr}");
    // The simulator has answered the Login (its session exists, or
    // existed): none of reimage's is open.
    front.wait_for("Login", |c| c.status == Some(200));
    assert!(
        front.seen().iter().any(|c| c.method == "Logout"),
        "{:?}",
        front.seen()
    );
    sim.assert_logged_out();
}

/// A `mac` vSphere cannot give the VM's NIC is a config error at the key
/// (78, file:line:col) in `check`, and a load refuses it before it calls
/// the endpoint at all; a MAC in VMware's manual range, or of a site's own
/// OUI, passes.
#[test]
fn a_mac_vsphere_refuses_is_a_config_error_before_any_call() {
    let s = Scratch::new("vs-mac");
    let sim = Sim::start(&s, Model::Vpx, None);
    let front = Front::start(&sim, |_| Act::Pass);
    let set_mac = |mac: &str| {
        config_at(&s, &front.url, "", "DC0_H0_VM0", PASSWORD, "");
        let text = std::fs::read_to_string(s.path("reimage.toml")).expect("config");
        s.write(
            "reimage.toml",
            &text.replace(&format!("mac = \"{MAC}\""), &format!("mac = \"{mac}\"")),
        );
    };
    // A MAC no NIC can have is a config error of every run (78); one
    // only vSphere refuses, a refusal of the load (fatal).
    for (mac, why, load_code) in [
        ("00:50:56:zz:00:01", "is not a MAC address", 78),
        ("00:50:56:01:02", "is not a MAC address", 78),
        ("01:00:5e:00:00:01", "is a multicast address", 78),
        ("00:50:56:80:00:01", "above its manual range", 1),
    ] {
        set_mac(mac);
        let at = format!(
            "{}:{}:1:",
            s.path("reimage.toml").display(),
            config_line(&s, "mac = ")
        );
        let r = check(&s);
        assert_eq!(r.code, 78, "{mac}: {}", r.stderr);
        assert!(r.stderr.contains(&at), "{mac}: wanted {at}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{mac}: {}", r.stderr);
        let r = load(&s);
        assert_eq!(r.code, load_code, "{mac}: {}", r.stderr);
        assert!(r.stderr.contains(why), "{mac}: {}", r.stderr);
    }
    assert!(
        front.seen().is_empty(),
        "a refused load calls nothing: {:?}",
        front.seen()
    );
    for mac in ["00:50:56:3f:ff:ff", "52:54:00:12:34:56"] {
        set_mac(mac);
        let r = check(&s);
        assert_eq!(r.code, 0, "{mac}: {}", r.stderr);
        assert!(r.stdout.contains(&format!("MAC: {mac}")), "{}", r.stdout);
    }
}

#[test]
fn tls_pin_ca_file_and_insecure() {
    let s = Scratch::new("vs-tls");
    let sim = Sim::start(&s, Model::Esx, None);
    let source = sim.source();

    // A wrong pin is fatal and says what the server's thumbprint is.
    let wrong = "AB:".repeat(31) + "AB";
    config(
        &s,
        &sim,
        source,
        PASSWORD,
        Some(&format!("thumbprint = \"{wrong}\"")),
        "",
    );
    let r = load(&s);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("thumbprint mismatch"), "{}", r.stderr);
    assert!(r.stderr.contains(&sim.thumbprint), "{}", r.stderr);

    // The system's roots do not know a self-signed certificate: fatal, with
    // the way out.
    config(&s, &sim, source, PASSWORD, Some(""), "");
    let r = load(&s);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("set thumbprint"), "{}", r.stderr);

    // The certificate as a CA file.
    let ca = format!("ca_file = \"{}\"", sim.cert.display());
    config(&s, &sim, source, PASSWORD, Some(&ca), "");
    assert_eq!(load(&s).code, 0);

    // insecure = true connects and warns.
    config(&s, &sim, source, PASSWORD, Some("insecure = true"), "");
    let r = load(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("verification is off"), "{}", r.stderr);
    sim.assert_logged_out();
}

/// Issue 24.7: without `ca_file` or `thumbprint` the system's certificate
/// store is trusted, not roots compiled into reimage: a site CA added to
/// it (here through SSL_CERT_FILE and SSL_CERT_DIR, which OpenSSL's store
/// honours too) is trusted over TLS; an empty store is said as such.
#[test]
fn a_site_ca_in_the_system_store_is_trusted() {
    let s = Scratch::new("vs-store");
    let sim = Sim::start(&s, Model::Esx, None);
    config(&s, &sim, sim.source(), PASSWORD, Some(""), "");
    // Both variables are set in every run (the environment may set them
    // already, as Debian's images do): one names the store, the other an
    // empty file or directory.
    let nothing = s.write("empty.pem", "");
    let none = s.path("nocerts");
    std::fs::create_dir_all(&none).expect("empty dir");
    let load_with = |file: &std::path::Path, dir: &std::path::Path| {
        let r = Test::with(&s)
            .load("pc1", "img")
            .attempt(1, 3)
            .env("SSL_CERT_FILE", file)
            .env("SSL_CERT_DIR", dir)
            .run();
        println!("{file:?} {dir:?}: exit {}\nstderr:\n{}", r.code, r.stderr);
        r
    };
    // A store file holding the site CA (vcsim's CA) and nothing else.
    let r = load_with(&sim.cert, &none);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A store directory with the CA.
    let dir = s.path("certs");
    std::fs::create_dir_all(&dir).expect("certs dir");
    std::fs::copy(&sim.cert, dir.join("site-ca.pem")).expect("copy the CA");
    let r = load_with(&nothing, &dir);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The system's own store does not hold it (tls_pin_ca_file_and_insecure);
    // an empty store is said as such.
    let r = load_with(&nothing, &none);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("holds no CA certificate"), "{}", r.stderr);
    sim.assert_logged_out();
}

#[test]
fn endpoint_kind_is_checked_and_check_describes_the_path() {
    let s = Scratch::new("vs-endpoint");
    let sim = Sim::start(&s, Model::Vpx, None);
    config(
        &s,
        &sim,
        "DC0_H0_VM0",
        PASSWORD,
        None,
        "endpoint = \"esxi\"",
    );
    let r = load(&s);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("but it is a vCenter"), "{}", r.stderr);
    sim.assert_logged_out();
    assert!(sim.vms_named("pc1").is_empty());

    let r = Test::with(&s).check("pc1", "img").run();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("path: ESXi host: copy base disk"),
        "{}",
        r.stdout
    );
    // With endpoint = "auto", check says what the last connection saw:
    // the failed load above connected, so the simulator's own words.
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "");
    let r = Test::with(&s).check("pc1", "img").run();
    r.code(0);
    r.stdout_has(&format!("MAC: {MAC}"));
    r.stdout_has("path: vCenter: clone template VM \"DC0_H0_VM0\" (the endpoint said it is VMware vCenter Server");
    // A state directory that never connected: decided at load.
    std::fs::remove_dir_all(s.path("state/vsphere")).expect("the record is there");
    let r = Test::with(&s).check("pc1", "img").run();
    r.stdout_has("path: decided at load");
}

#[test]
fn check_online_logs_in_and_finds_what_a_load_uses() {
    let s = Scratch::new("vs-online");
    let sim = Sim::start(&s, Model::Vpx, None);
    let online = |s: &Scratch| {
        Test::with(s)
            .args(&["check", "pc1", "--image", "img", "--online"])
            .run()
    };
    config(
        &s,
        &sim,
        "DC0_H0_VM0",
        PASSWORD,
        None,
        "datastore = \"LocalDS_0\"",
    );
    let r = online(&s);
    r.code(0);
    for line in [
        format!("ok      vSphere login to {} as {USER}: logged in", sim.base),
        "ok      vSphere datacenter DC0: found".to_string(),
        "ok      vSphere template VM DC0_H0_VM0: found".to_string(),
        "ok      vSphere network VM Network: found".to_string(),
        "ok      vSphere datastore LocalDS_0: found".to_string(),
    ] {
        r.stdout_has(&line);
    }
    sim.assert_logged_out();
    assert!(sim.vms_named("pc1").is_empty(), "read-only");

    // What is not there is a failed line each; the rest is still asked.
    config(
        &s,
        &sim,
        "no-such-template",
        PASSWORD,
        None,
        "network = \"no-such-network\"",
    );
    let r = online(&s);
    r.code(1);
    r.stdout_has("failed  vSphere template VM no-such-template: vSphere: template VM \"no-such-template\" not found");
    r.stdout_has("failed  vSphere network no-such-network:");
    sim.assert_logged_out();

    // A wrong password fails the login, and says what to check.
    config(&s, &sim, "DC0_H0_VM0", "not-the-password", None, "");
    let r = online(&s);
    r.code(1);
    r.stdout_has("failed  vSphere login to");
    r.stdout_has("check username and password_file");
    r.stdout_lacks("not-the-password");
}

#[test]
fn vpx_linked_clone_needs_a_snapshot() {
    let s = Scratch::new("vs-linked");
    let sim = Sim::start(&s, Model::Vpx, None);
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "linked = true");
    let r = load(&s);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("needs a snapshot"), "{}", r.stderr);

    let tmpl = sim.vms_named("DC0_H0_VM0").remove(0).moref;
    sim.snapshot(&tmpl);
    let r = load(&s);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("linked clone of DC0_H0_VM0"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.vms_named("pc1")[0].power, "poweredOn");
}

#[test]
fn vm_name_template_and_placement_by_cluster_and_folder() {
    let s = Scratch::new("vs-name");
    let sim = Sim::start(&s, Model::Vpx, None);
    config(
        &s,
        &sim,
        "DC0_H0_VM0",
        PASSWORD,
        None,
        "vm_name = \"lab-{computer}-{image}\"\ncluster = \"DC0_C0\"\ndatastore = \"LocalDS_0\"",
    );
    let r = load(&s);
    r.code(0);
    let vms = sim.vms_named("lab-pc1-img");
    assert_eq!(vms.len(), 1, "{:?}", sim.vms());
    assert_eq!(vms[0].macs, [MAC]);
    assert!(sim.vms_named("pc1").is_empty());
    // In the cluster's pool, not the template's (its host's).
    let template = sim.vms_named("DC0_H0_VM0").remove(0);
    assert!(!vms[0].pool.is_empty() && !template.pool.is_empty());
    assert_ne!(vms[0].pool, template.pool);
    // A folder that is not there is fatal, naming it.
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "folder = \"nope\"");
    load(&s).code(1).stderr_has("folder \"nope\" not found");
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "cluster = \"nope\"");
    load(&s).code(1).stderr_has("cluster \"nope\" not found");
}

#[test]
fn missing_network_or_datastore_is_fatal_before_anything_goes() {
    let s = Scratch::new("vs-placement");
    let sim = Sim::start(&s, Model::Esx, None);
    let source = sim.source();
    for (extra, want) in [
        (
            "network = \"No Such Net\"",
            "network \"No Such Net\" not found",
        ),
        ("datastore = \"nods\"", "datastore \"nods\" not found"),
    ] {
        config(&s, &sim, source, PASSWORD, None, extra);
        let r = load(&s);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains(want), "{}", r.stderr);
    }
    let s2 = Scratch::new("vs-placement-vpx");
    let sim = Sim::start(&s2, Model::Vpx, None);
    config(
        &s2,
        &sim,
        "DC0_H0_VM0",
        PASSWORD,
        None,
        "datacenter = \"DC9\"",
    );
    let r = load(&s2);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("datacenter \"DC9\" not found (there are: DC0)"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_example_config_checks() {
    let s = Scratch::new("vs-example");
    let example = common::site_example(&s, "vsphere.toml", &["/etc/reimage/"]);
    for (computer, image, want) in [
        (
            "win7-03",
            "win7-sysprep",
            "path: vCenter: clone template VM \"tmpl-win7-sp1-sysprep\"",
        ),
        (
            "lnx-11",
            "ubuntu-esx",
            "path: ESXi host: a child disk on base disk \"[datastore1] base/ubuntu-2204.vmdk\"",
        ),
    ] {
        let r = run(
            Command::new(common::bin())
                .arg("--config")
                .arg(&example)
                .args(["check", computer, "--image", image])
                .env_remove("REIMAGE_CONFIG")
                .env_remove("REIMAGE_STATE_DIR"),
            LIMIT,
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains("kind vsphere"), "{}", r.stdout);
        assert!(r.stdout.contains(want), "{}", r.stdout);
    }
}

#[test]
fn connection_refused_retries_until_the_last_attempt() {
    let s = Scratch::new("vs-refused");
    let mut sim = Sim::start(&s, Model::Vpx, None);
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "");
    sim.kill();
    let r = load(&s);
    r.code(75);
    r.stderr_has("connect to https://127.0.0.1:");
    Test::with(&s)
        .load("pc1", "img")
        .attempt(3, 3)
        .run()
        .code(1)
        .stderr_has("no attempts left");
}

#[test]
fn a_post_load_retry_on_the_last_attempt_is_fatal() {
    // An OS step nothing can pass, on a vSphere VM; post-load does not talk
    // to vSphere for it, so the simulator only stands there.
    let s = Scratch::new("vs-post-last");
    let sim = Sim::start(&s, Model::Vpx, None);
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "");
    let closed = port::closed();
    let text = std::fs::read_to_string(s.path("reimage.toml")).expect("config");
    s.write(
        "reimage.toml",
        &text.replace(
            "steps = []",
            &format!("steps = [{{ wait = \"port\", port = {closed}, timeout = \"300ms\" }}]"),
        ),
    );
    Test::with(&s)
        .post_load("pc1", "img")
        .attempt(3, 3)
        .run()
        .code(1)
        .stderr_has("no attempts left");
    Test::with(&s)
        .post_load("pc1", "img")
        .attempt(1, 3)
        .run()
        .code(75)
        .stderr_lacks("no attempts left");
}

// --- The VM's hardware from the image: UEFI, Secure Boot, vTPM ---------------

/// Runs `check pc1 --image img` on the scratch's config.
fn check(s: &Scratch) -> Output {
    Test::with(s).check("pc1", "img").run()
}

/// The 1-based line of the config's first line that starts with `start`.
fn config_line(s: &Scratch, start: &str) -> usize {
    std::fs::read_to_string(s.path("reimage.toml"))
        .expect("config")
        .lines()
        .position(|l| l.starts_with(start))
        .expect("the line")
        + 1
}

#[test]
fn esx_vm_gets_the_images_firmware_secure_boot_and_hardware_version() {
    let s = Scratch::new("vs-hw-esx");
    let sim = Sim::start(&s, Model::Esx, None);
    let source = sim.source();
    // The defaults: UEFI, and the host's own hardware version.
    config(&s, &sim, source, PASSWORD, None, "");
    load(&s).code(0);
    let hw = sim.hardware(&sim.vms_named("pc1")[0].moref);
    assert_eq!(hw.firmware, "efi", "{hw:?}");
    assert_eq!(hw.version, "vmx-13", "the simulated host's default: {hw:?}");
    assert!(!hw.secure_boot, "{hw:?}");
    assert_eq!(hw.guest_id, "otherGuest64");

    // Set for every image of the provisioner...
    let all = "secure_boot = true\nhardware_version = 15\nguest_id = \"windows9_64Guest\"";
    config(&s, &sim, source, PASSWORD, None, all);
    load(&s).code(0);
    let hw = sim.hardware(&sim.vms_named("pc1")[0].moref);
    assert_eq!(
        (hw.firmware.as_str(), hw.version.as_str(), hw.secure_boot),
        ("efi", "vmx-15", true),
        "{hw:?}"
    );
    assert_eq!(hw.guest_id, "windows9_64Guest");

    // ...and in the image's own table, over it.
    let image = format!(
        "{all}\n[provisioners.vs.images.img]\nfirmware = \"bios\"\nsecure_boot = false\nhardware_version = 13\nguest_id = \"windows7_64Guest\""
    );
    config(&s, &sim, source, PASSWORD, None, &image);
    let r = load(&s);
    r.code(0);
    r.stderr_has("firmware bios, Secure Boot off, hardware version vmx-13, guest windows7_64Guest");
    let hw = sim.hardware(&sim.vms_named("pc1")[0].moref);
    assert_eq!(
        (hw.firmware.as_str(), hw.version.as_str(), hw.secure_boot),
        ("bios", "vmx-13", false),
        "{hw:?}"
    );
    assert_eq!(hw.guest_id, "windows7_64Guest");
    check(&s).code(0).stdout_has(
        "ESXi VM: firmware bios, Secure Boot off, hardware version vmx-13, guest windows7_64Guest",
    );

    // A table for an image the file does not have is a config error.
    let typo = format!("{all}\n[provisioners.vs.images.imgg]\nguest_id = \"windows7_64Guest\"");
    config(&s, &sim, source, PASSWORD, None, &typo);
    let r = check(&s);
    r.code(78);
    r.stderr_has("has settings for image `imgg`, but there is no [images.imgg]");
    // And Secure Boot on BIOS, at its line.
    let bad = format!("{all}\n[provisioners.vs.images.img]\nfirmware = \"bios\"");
    config(&s, &sim, source, PASSWORD, None, &bad);
    let r = check(&s);
    r.code(78);
    r.stderr_has("`images.img.secure_boot` needs firmware = \"efi\"");
}

#[test]
fn a_vtpm_needs_a_vcenter() {
    let s = Scratch::new("vs-vtpm-esx");
    let sim = Sim::start(&s, Model::Esx, None);
    let source = sim.source();
    config(&s, &sim, source, PASSWORD, None, "vtpm = true");
    let r = load(&s);
    r.code(1);
    r.stderr_has("a vTPM needs a vCenter");
    assert!(sim.vms_named("pc1").is_empty());
    // Said of an ESXi endpoint in the config, it is a config error.
    config(
        &s,
        &sim,
        source,
        PASSWORD,
        None,
        "endpoint = \"esxi\"\nvtpm = true",
    );
    let r = check(&s);
    r.code(78);
    r.stderr_has(&format!(
        "reimage.toml:{}:1: `vtpm` needs a vCenter",
        config_line(&s, "vtpm")
    ));
}

#[test]
fn vpx_clone_keeps_the_templates_hardware_and_adds_a_vtpm() {
    let s = Scratch::new("vs-vtpm-vpx");
    let sim = Sim::start(&s, Model::Vpx, None);
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "vtpm = true");
    // The simulator's template is a BIOS VM: no vTPM on its clone.
    let r = load(&s);
    r.code(1);
    r.stderr_has("the template's firmware is bios: vSphere adds a vTPM to EFI VMs only");
    assert!(sim.vms_named("pc1").is_empty());

    // An EFI template of hardware version 14.
    let tmpl = sim.vms_named("DC0_H0_VM0").remove(0).moref;
    sim.reconfigure(&tmpl, "<version>vmx-14</version><firmware>efi</firmware>");
    assert_eq!(sim.hardware(&tmpl).firmware, "efi");
    let r = load(&s);
    r.code(0);
    r.stderr_has("the clone keeps template \"DC0_H0_VM0\"'s hardware: firmware efi, Secure Boot off, hardware version vmx-14");
    r.stderr_has("a vTPM is added");
    let pc1 = sim.vms_named("pc1").remove(0);
    assert!(sim.hardware(&pc1.moref).vtpm, "the clone has a vTPM");
    assert!(!sim.hardware(&tmpl).vtpm, "the template has none");
    check(&s).code(0).stdout_has(
        "vCenter clone: the template's firmware, Secure Boot, hardware version and guest id are kept; vTPM: added to the clone",
    );

    // A firmware set explicitly is checked against the template's, before
    // the old VM goes.
    config(
        &s,
        &sim,
        "DC0_H0_VM0",
        PASSWORD,
        None,
        "firmware = \"bios\"",
    );
    let r = load(&s);
    r.code(1);
    r.stderr_has("the template's firmware is efi, but the image asks for firmware = \"bios\"");
    assert_eq!(
        sim.vms_named("pc1")[0].moref,
        pc1.moref,
        "the old VM is kept"
    );
    check(&s)
        .code(0)
        .stdout_has("(firmware = \"bios\" is checked against the template's)");
}

// --- The golden disk is never destroyed ------------------------------------

#[test]
fn esx_never_destroys_the_directory_or_the_vm_that_holds_the_base_disk() {
    let s = Scratch::new("vs-golden-esx");
    let sim = Sim::start(&s, Model::Esx, None);
    let source = sim.source();
    assert_eq!(source, "[LocalDS_0] base/base.vmdk");

    // A VM named after the base disk's directory: a load deletes
    // `[LocalDS_0] base` before it makes the VM.
    config(&s, &sim, source, PASSWORD, None, "vm_name = \"base\"");
    let r = check(&s);
    r.code(78);
    r.stderr_has(&format!("reimage.toml:{}:1:", config_line(&s, "vm_name")));
    r.stderr_has("holds the image's base disk");
    let r = load(&s);
    r.code(1);
    r.stderr_has("refusing to load image `img` onto computer `pc1`");
    assert!(sim.disk_exists(source), "the base disk is there");
    assert!(sim.vms_named("base").is_empty());

    // The computer's old VM lives in the base disk's directory: destroying
    // it deletes that directory.
    config(&s, &sim, source, PASSWORD, None, "");
    check(&s).code(0);
    sim.create_vm("pc1", "[LocalDS_0] base/pc1.vmx", None);
    let before = sim.vms_named("pc1");
    let r = load(&s);
    r.code(1);
    r.stderr_has("refusing to destroy VM \"pc1\"");
    r.stderr_has("its directory [LocalDS_0] base holds the image's base disk");
    assert!(sim.disk_exists(source), "the base disk is there");
    assert_eq!(sim.vms_named("pc1")[0].moref, before[0].moref);

    // A VM whose own disk is the base disk.
    sim.create_vm("holder", "[LocalDS_0] holder/holder.vmx", Some(source));
    config(&s, &sim, source, PASSWORD, None, "vm_name = \"holder\"");
    let r = load(&s);
    r.code(1);
    r.stderr_has("the image's base disk \"[LocalDS_0] base/base.vmdk\" is its own disk");
    assert_eq!(sim.vms_named("holder").len(), 1);
    assert!(sim.disk_exists(source));

    // Anywhere else, the load runs.
    config(&s, &sim, source, PASSWORD, None, "vm_name = \"fresh\"");
    load(&s).code(0);
    assert!(sim.disk_exists(source));
}

#[test]
fn vpx_never_destroys_the_template_or_a_vm_on_its_disk() {
    let s = Scratch::new("vs-golden-vpx");
    let sim = Sim::start(&s, Model::Vpx, None);
    config(
        &s,
        &sim,
        "DC0_H0_VM0",
        PASSWORD,
        None,
        "vm_name = \"DC0_H0_VM0\"",
    );
    let r = check(&s);
    r.code(78);
    r.stderr_has(&format!("reimage.toml:{}:1:", config_line(&s, "vm_name")));
    r.stderr_has("is the template's");
    load(&s).code(1);
    let tmpl = sim.vms_named("DC0_H0_VM0");
    assert_eq!(tmpl.len(), 1);

    // The computer's old VM has the template's disk as its own.
    let disk = sim.hardware(&tmpl[0].moref).disks.remove(0);
    sim.create_vm("pc1", "[LocalDS_0] pc1/pc1.vmx", Some(&disk));
    config(&s, &sim, "DC0_H0_VM0", PASSWORD, None, "");
    let r = load(&s);
    r.code(1);
    r.stderr_has(&format!(
        "its disk {disk:?} is a disk of template \"DC0_H0_VM0\""
    ));
    assert_eq!(sim.vms_named("pc1").len(), 1, "the old VM is kept");
    assert_eq!(sim.vms_named("DC0_H0_VM0")[0].moref, tmpl[0].moref);
}

#[test]
fn power_off_powers_the_vm_off_and_keeps_it() {
    let s = Scratch::new("vs-off");
    let sim = Sim::start(&s, Model::Vpx, None);
    let source = sim.source();
    config(&s, &sim, source, PASSWORD, None, "");
    // No VM yet: off already.
    let r = Test::with(&s)
        .power_off("pc1")
        .args(&["--image", "img"])
        .run();
    r.code(0)
        .stderr_has("no VM named \"pc1\" in datacenter DC0: it is off");
    load(&s).code(0);
    let before = sim.vms_named("pc1");
    assert_eq!(before[0].power, "poweredOn");

    let r = Test::with(&s).power_off("pc1").run();
    r.code(0).event_log_has("VM pc1 is off");
    assert!(!r.stderr.contains(PASSWORD) && !r.event_log().contains(PASSWORD));
    let after = sim.vms_named("pc1");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].moref, before[0].moref, "the same VM, kept");
    assert_eq!(after[0].power, "poweredOff");
    sim.assert_logged_out();
    // Off already: done again, nothing powered.
    Test::with(&s)
        .power_off("pc1")
        .run()
        .code(0)
        .event_log_has("vSphere: VM pc1 is off");
}
