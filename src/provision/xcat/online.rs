//! `check --online` for xCAT: the questions a load asks first, read-only
//! (`lsdef`): is the node defined, and the osimage the image names.

use super::Xcat;
use super::target::Target;
use crate::config::Plan;
use crate::exec::{Cmd, excerpt};
use crate::provision::Checked;

impl Xcat {
    /// `lsdef -t node -o NODE`, and for an osimage source `lsdef -t
    /// osimage -o NAME`: each bounded by `command_timeout`.
    pub(super) fn online_checks(&self, plan: &Plan) -> Vec<Checked> {
        let node = plan.computer.node.as_str();
        let mut v = vec![self.lsdef("node", node)];
        if let Ok(Target::Osimage(img)) = Target::parse(&plan.image.source) {
            v.push(self.lsdef("osimage", &img));
        }
        v
    }

    /// `lsdef -t TYPE -o NAME`: defined, not defined, or xCAT did not answer.
    fn lsdef(&self, kind: &str, name: &str) -> Checked {
        let what = format!("xCAT {kind} {name}");
        let lsdef = self.config.command("lsdef");
        let argv = [
            lsdef.to_string_lossy().into_owned(),
            "-t".into(),
            kind.into(),
            "-o".into(),
            name.into(),
        ];
        let cmd = Cmd::new(&argv, self.config.command_timeout);
        let shown = cmd.display();
        match cmd.run() {
            Ok(out) if out.success() && out.stdout.contains(&format!("Object name: {name}")) => {
                Checked::new(what, true, "defined")
            }
            Ok(out) if out.text().contains("Could not find an object named") => Checked::new(
                what,
                false,
                format!(
                    "not defined (`{shown}`: {}): define it in xCAT, or fix the {}",
                    excerpt(&out.text(), 2),
                    if kind == "node" {
                        "computer's `node`"
                    } else {
                        "image's `source`"
                    }
                ),
            ),
            Ok(out) => Checked::new(
                what,
                false,
                format!(
                    "`{shown}` exited {}: {}",
                    out.status,
                    excerpt(&out.text(), 3)
                ),
            ),
            Err(e) => Checked::new(what, false, format!("`{shown}`: {e}")),
        }
    }
}
