//! The xCAT STAND-IN (tests/standins/xcat/xcatclient: xCAT's client
//! commands, daemon, tables and hardware, written from xcat-core and Apache
//! VCL's xCAT module; no real xCAT runs here), installed as an xCAT root
//! the way a stock xCAT lays out its commands, with a state directory of
//! its own.

use std::path::{Path, PathBuf};

/// A stand-in xCAT under one directory.
pub struct Xcat {
    /// The xCAT root ($XCATROOT): bin/ and sbin/ as a stock xCAT has them.
    pub root: PathBuf,
    /// The stand-in's state ($XCAT_STANDIN_DIR): nodes, osimages, how the
    /// hardware behaves, and what was called.
    pub dir: PathBuf,
}

impl Xcat {
    /// Installs the stand-in under `base`: `base/opt-xcat` as the xCAT
    /// root (bin/xcatclient with bin/rpower, bin/rsetboot, bin/rnetboot,
    /// bin/nodestat, bin/lsdef, bin/chdef and sbin/nodeset linked to it, as
    /// xCAT-client.spec installs them) and `base/xcat` as its state.
    pub fn install(base: &Path) -> Xcat {
        let root = base.join("opt-xcat");
        let dir = base.join("xcat");
        for d in [root.join("bin"), root.join("sbin"), dir.join("nodes")] {
            std::fs::create_dir_all(&d).expect("create the stand-in's dirs");
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../standins/xcat/xcatclient");
        let client = root.join("bin/xcatclient");
        std::fs::copy(&script, &client).expect("copy the xCAT stand-in");
        use std::os::unix::fs::{PermissionsExt, symlink};
        std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for c in [
            "rpower", "rsetboot", "rnetboot", "nodestat", "lsdef", "chdef",
        ] {
            symlink("xcatclient", root.join("bin").join(c)).expect("link");
        }
        symlink("../bin/xcatclient", root.join("sbin/nodeset")).expect("link");
        Xcat { root, dir }
    }

    /// The stand-in [`Xcat::install`] put under `base`.
    pub fn at(base: &Path) -> Xcat {
        Xcat {
            root: base.join("opt-xcat"),
            dir: base.join("xcat"),
        }
    }

    /// Writes `text` to `rel` in the stand-in's state.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create parent");
        }
        std::fs::write(&p, text).expect("write the stand-in's state");
    }

    /// A node xCAT knows, with a MAC and an IPMI BMC (mgt=ipmi), on and
    /// booted into its old system.
    pub fn node(&self, name: &str) {
        self.write(&format!("nodes/{name}/mac"), "42:00:00:00:00:01\n");
        self.write(&format!("nodes/{name}/mgt"), "ipmi\n");
        self.write(&format!("nodes/{name}/status"), "booted\n");
    }

    /// The xCAT version the stand-in answers as (default 2.16.5): up to
    /// 2.13.7 nodeset takes `install` from the nodetype attributes.
    pub fn version(&self, v: &str) {
        self.write("version", &format!("{v}\n"));
    }

    /// An osimage: `definition` is "PROVMETHOD OS ARCH PROFILE".
    pub fn osimage(&self, name: &str, definition: &str) {
        self.write(&format!("osimages/{name}"), &format!("{definition}\n"));
    }

    /// How every node's hardware and installer behave (KEY=VALUE lines).
    pub fn behaviour(&self, text: &str) {
        self.write("behaviour", text);
    }

    /// The environment a run of reimage (or an admin's command) needs:
    /// the stand-in's state and the xCAT root.
    pub fn env(&self) -> [(&'static str, &Path); 2] {
        [("XCAT_STANDIN_DIR", &self.dir), ("XCATROOT", &self.root)]
    }

    /// Every command line the stand-in was called with, one a line.
    pub fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls")).unwrap_or_default()
    }

    /// The stand-in's log of installs started and ended, in order.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// A file of a node's state (power, currstate, status ...), trimmed.
    pub fn node_file(&self, node: &str, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("nodes/{node}/{file}")))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}
