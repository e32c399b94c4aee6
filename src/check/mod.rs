//! `reimage check`: what can be found before a run. Offline (always): the
//! file as validated, every file it names there and readable (secrets
//! private), no two computers on one MAC or address, and every computer
//! and image a run could pair vetted by its provisioner (`vet`, its local
//! files); with a computer and image, the plan. Online (`--online`, in
//! `online`): read-only questions to the systems a run will drive.

mod online;

use std::path::Path;

use crate::cli::CheckArgs;
use crate::config::{self, Loaded, Plan};
use crate::error::Error;
use crate::fleet::Out;
use crate::{os, provision, report, state};

/// `reimage check [COMPUTER --image IMAGE | --all] [--online]`.
pub fn run(
    loaded: &Loaded,
    a: &CheckArgs,
    dir: &Path,
    format: report::Format,
) -> Result<i32, Error> {
    let state = state::StateDir::new(dir);
    let only = match (&a.computer, &a.image) {
        (Some(c), Some(i)) => Some((c.as_str(), i.as_str())),
        _ => None,
    };
    audit(loaded, dir, only)?;
    if a.online {
        return online::run(loaded, a, dir, format);
    }
    let (Some(computer), Some(image)) = (&a.computer, &a.image) else {
        // A state directory every run would refuse fails the check; one
        // this user cannot read (a check by another user) does not.
        if let Err(e) = state.root_dir(false)
            && e.downcast_ref::<state::Refused>().is_some()
        {
            return Err(state::setup_error(e, dir));
        }
        return summary(loaded, format);
    };
    let plan = vet_pair(loaded, computer, image, dir)?;
    let p = prepare(loaded, &plan)?;
    let lines = p.describe(&plan);
    let preload = state
        .read_preload(&plan.computer.name)
        .map_err(|e| state::setup_error(e, dir))?;
    let os_lines = os::build(&plan).describe(&plan);
    let described = plan.describe(&lines, &os_lines);
    let reuse = reuse_rule(&plan, preload.as_ref());
    let mut out = Out::new();
    match format {
        report::Format::Json => out.json(
            &serde_json::json!({
                "time": report::rfc3339(std::time::SystemTime::now()),
                "kind": "check",
                "config": loaded.path,
                "computer": plan.computer.name,
                "image": plan.image.name,
                "result": "ok",
                "code": 0,
                "plan": described.lines().collect::<Vec<_>>(),
                "reuse": reuse.lines().collect::<Vec<_>>(),
            })
            .to_string(),
        ),
        report::Format::Human => {
            out.line(described.trim_end_matches('\n'));
            out.line(reuse.trim_end_matches('\n'));
        }
    }
    out.done(0)
}

/// The whole file is fine: one line (or JSON object) that says so.
fn summary(loaded: &Loaded, format: report::Format) -> Result<i32, Error> {
    let c = &loaded.config;
    let mut out = Out::new();
    match format {
        report::Format::Json => out.json(
            &serde_json::json!({
                "time": report::rfc3339(std::time::SystemTime::now()),
                "kind": "check",
                "config": loaded.path,
                "result": "ok",
                "code": 0,
                "computers": c.computers.len(),
                "images": c.images.len(),
                "os": c.os.len(),
                "provisioners": c.provisioners.len(),
            })
            .to_string(),
        ),
        report::Format::Human => out.line(&format!(
            "{}: OK ({} computers, {} images, {} OS profiles, {} provisioners)",
            loaded.path.display(),
            c.computers.len(),
            c.images.len(),
            c.os.len(),
            c.provisioners.len()
        )),
    }
    out.done(0)
}

/// What a run would trip over and the file alone shows: two computers on
/// one MAC or address, a file the profiles and images name, and every
/// pair a run could make ([`pairs`]) vetted by its provisioner; for one
/// computer and image (`only`), that pair and the files of its profile
/// and image.
fn audit(loaded: &Loaded, dir: &Path, only: Option<(&str, &str)>) -> Result<(), Error> {
    let c = &loaded.config;
    config::duplicates(c).map_err(|e| loaded.key_error(&[], &e))?;
    let mine = |key: &[String]| match only {
        None => true,
        Some((_, image)) => {
            let os = c.images.get(image).map(|i| i.os.as_str());
            match key {
                [t, name, ..] if t == "images" => name == image,
                [t, name, ..] if t == "os" => Some(name.as_str()) == os,
                _ => true,
            }
        }
    };
    for f in config::config_files(c).into_iter().filter(|f| mine(&f.key)) {
        f.check().map_err(|e| loaded.key_error(&[], &e))?;
    }
    match only {
        Some((computer, image)) => {
            vet_pair(loaded, computer, image, dir)?;
        }
        None => {
            for (computer, image) in pairs(loaded) {
                vet_pair(loaded, computer, image, dir)?;
            }
        }
    }
    Ok(())
}

/// The computer and image pairs a run could make: the computer names no
/// provisioner and the image does, or the other way round, or both name
/// the same. A computer whose provisioner is not the image's (an xCAT
/// node, a libvirt image) is another part of the fleet; `check COMPUTER
/// --image IMAGE` vets that pair too.
pub(crate) fn pairs(loaded: &Loaded) -> Vec<(&str, &str)> {
    let c = &loaded.config;
    let mut v = Vec::new();
    for (cn, comp) in &c.computers {
        for (iname, img) in &c.images {
            let fits = match (&comp.provisioner, &img.provisioner) {
                (Some(a), Some(b)) => a == b,
                (None, None) => false,
                _ => true,
            };
            if fits {
                v.push((cn.as_str(), iname.as_str()));
            }
        }
    }
    v
}

/// The plan of `computer` and `image`, vetted by its provisioner, whose
/// local files are there.
pub(crate) fn vet_pair(
    loaded: &Loaded,
    computer: &str,
    image: &str,
    dir: &Path,
) -> Result<Plan, Error> {
    let plan = config::resolve(loaded, computer, image, dir, None)?;
    let p = prepare(loaded, &plan)?;
    // What a load would refuse (a golden disk it would destroy) is a
    // config error here, at the key to change.
    p.vet(&plan)
        .map_err(|e| Error::from(loaded.key_error(&[], &e)))?;
    // What the OS would refuse (a name Windows does not take), likewise.
    crate::os::build(&plan)
        .vet(&plan)
        .map_err(|e| Error::from(loaded.key_error(&[], &e)))?;
    for f in p.local_files(&plan) {
        f.check().map_err(|mut e| {
            e.message = format!(
                "{} (read by a load of image `{image}` onto computer `{computer}`)",
                e.message
            );
            Error::from(loaded.key_error(&[], &e))
        })?;
    }
    Ok(plan)
}

/// The plan's provisioner, decoded (its table was checked on load).
fn prepare(loaded: &Loaded, plan: &Plan) -> Result<Box<dyn provision::Provisioner>, Error> {
    provision::prepare(&plan.provisioner).map_err(|e| {
        loaded
            .key_error(&["provisioners", &plan.provisioner.name], &e)
            .into()
    })
}

/// `check`'s account of `provision --reuse` for this computer and image,
/// with its preload record now.
fn reuse_rule(plan: &Plan, preload: Option<&state::Preload>) -> String {
    let mut s = String::from(
        "reuse (provision --reservation ID --reuse):\n  skips the load only when this computer still runs a preload: a `provision`\n  without --reservation that reimage ran to ready, no run of any kind on the\n  computer since (every run ends the preload, so one handed to a reservation\n  is never reused), and now the same boot id and a passing image_check;\n  otherwise it loads as usual. The events say which way and why.\n",
    );
    match &plan.image.config.image_check {
        Some(c) => s.push_str(&format!(
            "  image check: `{}` must match /{}/\n",
            c.command.join(" "),
            c.expect
        )),
        None => s.push_str(&format!(
            "  image check: none for `{}`, so this image is never reused\n",
            plan.image.name
        )),
    }
    match preload {
        Some(p) => s.push_str(&format!(
            "  preload now: image `{}`, boot id {}, verified {}\n",
            p.image, p.boot_id, p.verified
        )),
        None => s.push_str("  preload now: none\n"),
    }
    s
}
