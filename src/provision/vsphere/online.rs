//! `check --online` for vSphere: log in as a load does, then look up (read
//! only) each object a load will use: the datacenter, the template VM (or
//! the base disk's datastore on an ESXi host), the network, the datastore,
//! the folder, the resource pool or cluster; log out.

use super::config::Endpoint;
use super::esxi::split_ds_path;
use super::soap::MoRef;
use super::{Load, Vsphere, dc_ref};
use crate::config::Plan;
use crate::outcome::Outcome;
use crate::provision::Checked;
use crate::report::{Format, Reporter, Verbosity};

impl Vsphere {
    /// The login, then one line per object a load looks up.
    pub(super) fn online_checks(&self, plan: &Plan) -> Vec<Checked> {
        let cfg = &self.config;
        let login = format!("vSphere login to {} as {}", cfg.url, cfg.username);
        // Only warnings reach the screen (insecure = true); the lines are
        // the checks.
        let report = Reporter::new(
            &plan.computer.name,
            &plan.image.name,
            None,
            Format::Human,
            Verbosity::Quiet,
        );
        let mut found = Vec::new();
        let attempt = plan.attempt(1, plan.max_attempts);
        let outcome = self.with_session(plan, attempt, &report, |l| {
            found = l.online(plan);
            Ok(())
        });
        match outcome.error() {
            None => {
                found.insert(0, Checked::new(login, true, "logged in (and out)"));
                found
            }
            // Only connecting and logging in fail the session: the
            // lookups are lines of their own.
            Some(e) => {
                found.insert(0, Checked::new(login, false, format!("{e:#}")));
                found
            }
        }
    }
}

impl Load<'_> {
    /// Looks up every object a load of `plan` uses; a lookup that fails
    /// is a failed line, and the rest are still asked.
    fn online(&self, plan: &Plan) -> Vec<Checked> {
        let cfg = self.cfg;
        let mut v = Vec::new();
        let dc = match self.datacenter() {
            Ok(dc) => {
                v.push(Checked::new(
                    format!("vSphere datacenter {}", dc.name()),
                    true,
                    "found",
                ));
                dc
            }
            Err(o) => {
                v.push(failed("vSphere datacenter", &o));
                return v;
            }
        };
        let (Ok(vm_folder), Ok(host_folder)) = (dc_ref(&dc, "vmFolder"), dc_ref(&dc, "hostFolder"))
        else {
            v.push(Checked::new(
                "vSphere datacenter folders",
                false,
                "the datacenter has no vmFolder or hostFolder",
            ));
            return v;
        };
        let source = plan.image.source.as_str();
        let mut ask = |container: &MoRef, kind: &str, name: &str, what: &str| {
            let line = format!("vSphere {what} {name}");
            v.push(match self.one(container, kind, name, &[], what) {
                Ok(_) => Checked::new(line, true, "found"),
                Err(o) => failed(&line, &o),
            });
        };
        match (self.path, split_ds_path(source)) {
            (Endpoint::Vcenter, _) => ask(&vm_folder, "VirtualMachine", source, "template VM"),
            (_, Some((ds, _))) => ask(&dc.moref, "Datastore", ds, "datastore of the base disk"),
            (_, None) => {}
        }
        ask(&dc.moref, "Network", &cfg.network, "network");
        if let Some(d) = &cfg.datastore {
            ask(&dc.moref, "Datastore", d, "datastore");
        }
        if let Some(f) = &cfg.folder {
            ask(&vm_folder, "Folder", f, "folder");
        }
        if let Some(p) = &cfg.resource_pool {
            ask(&host_folder, "ResourcePool", p, "resource pool");
        }
        if let Some(c) = &cfg.cluster {
            ask(&host_folder, "ClusterComputeResource", c, "cluster");
        }
        if let Some(h) = &cfg.host {
            ask(&host_folder, "HostSystem", h, "host");
        }
        v
    }
}

/// A failed line from a lookup's outcome.
fn failed(what: &str, o: &Outcome) -> Checked {
    let why = o
        .error()
        .map(|e| format!("{e:#}"))
        .unwrap_or_else(|| "failed".into());
    Checked::new(what, false, why)
}
