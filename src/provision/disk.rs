//! Local disk files, for the guards that keep a load from overwriting the
//! image's own base (the golden disk): whether two paths are one file, and
//! what `qemu-img info --backing-chain` says an image stands on.

use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// True when `a` and `b` are one file: the same device and inode when both
/// exist (symbolic and hard links included), else the same path once each
/// one's directory is resolved.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return ma.dev() == mb.dev() && ma.ino() == mb.ino();
    }
    resolved(a) == resolved(b)
}

/// `p` absolute, its directory's symbolic links resolved where it exists.
fn resolved(p: &Path) -> PathBuf {
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (p.parent(), p.file_name()) {
        (Some(d), Some(f)) => std::fs::canonicalize(d)
            .map(|d| d.join(f))
            .unwrap_or_else(|_| p.clone()),
        _ => p,
    }
}

/// An image and what it stands on, from `qemu-img info --backing-chain
/// --output=json` (a JSON array, the image first; a single object when
/// there is no chain option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The image's own format (`qcow2`, `raw`, ...).
    pub format: String,
    /// Every file of the chain, the image first.
    pub files: Vec<PathBuf>,
}

impl Chain {
    /// Reads qemu-img's JSON; `None` when it is not what qemu-img prints.
    pub fn parse(json: &str) -> Option<Chain> {
        let v: Value = serde_json::from_str(json).ok()?;
        let items = match v {
            Value::Array(a) => a,
            o @ Value::Object(_) => vec![o],
            _ => return None,
        };
        let format = items.first()?.get("format")?.as_str()?.to_string();
        let files = items
            .iter()
            .filter_map(|i| i.get("filename").and_then(Value::as_str))
            .map(PathBuf::from)
            .collect();
        Some(Chain { format, files })
    }

    /// The file of the chain that is `target`, if one is.
    pub fn holds(&self, target: &Path) -> Option<&Path> {
        self.files
            .iter()
            .find(|f| same_file(f, target))
            .map(PathBuf::as_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_by_inode_or_by_path() {
        let dir = std::env::temp_dir().join(format!("reimage-disk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("dir");
        let f = dir.join("base.qcow2");
        std::fs::write(&f, b"x").expect("file");
        std::os::unix::fs::symlink(&f, dir.join("link.qcow2")).expect("symlink");
        std::fs::hard_link(&f, dir.join("hard.qcow2")).expect("hard link");
        assert!(same_file(&f, &dir.join("link.qcow2")));
        assert!(same_file(&f, &dir.join("hard.qcow2")));
        assert!(same_file(&f, &dir.join("sub/../base.qcow2")));
        assert!(!same_file(&f, &dir.join("sub/base.qcow2")));
        // Neither exists: the same path.
        assert!(same_file(
            &dir.join("sub/new.qcow2"),
            &dir.join("./sub/new.qcow2")
        ));
        assert!(!same_file(
            &dir.join("sub/new.qcow2"),
            &dir.join("new.qcow2")
        ));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn reads_qemu_imgs_chain() {
        let json = r#"[{"virtual-size": 16777216, "filename": "/i/golden.qcow2", "format": "qcow2",
            "backing-filename": "/d/vm1.qcow2", "full-backing-filename": "/d/vm1.qcow2"},
            {"virtual-size": 16777216, "filename": "/d/vm1.qcow2", "format": "raw"}]"#;
        let c = Chain::parse(json).expect("parses");
        assert_eq!(c.format, "qcow2");
        assert_eq!(
            c.files,
            [
                PathBuf::from("/i/golden.qcow2"),
                PathBuf::from("/d/vm1.qcow2")
            ]
        );
        assert_eq!(
            c.holds(Path::new("/d/vm1.qcow2")),
            Some(Path::new("/d/vm1.qcow2"))
        );
        assert_eq!(c.holds(Path::new("/d/vm2.qcow2")), None);
        let one = Chain::parse(r#"{"filename": "/b.img", "format": "raw"}"#).expect("object");
        assert_eq!(one.format, "raw");
        assert_eq!(Chain::parse("not json"), None);
        assert_eq!(Chain::parse("[]"), None);
    }
}
