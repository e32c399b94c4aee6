//! What an xCAT image's `source` names: an osimage (`nodeset NODE
//! osimage=NAME`), or the node's nodetype attributes, the way Apache VCL's
//! xCAT.pm loads an image (`_edit_nodetype` sets nodetype.os, arch and
//! profile, then `nodeset NODE install`): `os=rhels8.6,arch=x86_64,
//! profile=compute`, with `provmethod=netboot` or `statelite` for a
//! diskless image. xCAT up to 2.13.7 builds the boot state from those
//! attributes (`install OS-ARCH-PROFILE`); 2.13.8 and later refuse
//! `nodeset NODE install` and take osimages only (destiny.pm).

use super::answers::Destiny;

/// What a load sets the node's network boot to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An osimage object, by name.
    Osimage(String),
    /// Nodetype attributes set with chdef, then `nodeset NODE PROVMETHOD`.
    Nodetype(Nodetype),
}

/// The nodetype attributes of an image, and how nodeset boots it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodetype {
    /// nodetype.os, e.g. `rhels8.6`.
    pub os: String,
    /// nodetype.arch, e.g. `x86_64`.
    pub arch: String,
    /// nodetype.profile, e.g. `compute`.
    pub profile: String,
    /// `install` (diskful), `netboot` or `statelite` (diskless).
    pub provmethod: Destiny,
}

/// The keys a nodetype source has, in the order they are written.
const KEYS: [&str; 4] = ["os", "arch", "profile", "provmethod"];

/// Why `s` is a disk image file (a path, a qcow2), which the qemu or
/// libvirt provisioners load and xCAT cannot: an osimage name holds no
/// `/` (xCAT's object names are table keys, not paths).
fn disk_file(s: &str) -> Option<String> {
    const DISKS: [&str; 7] = [".qcow2", ".qcow", ".img", ".raw", ".vmdk", ".vdi", ".iso"];
    let lower = s.to_ascii_lowercase();
    (s.contains('/') || DISKS.iter().any(|e| lower.ends_with(e))).then(|| {
        format!(
            "`source` {s:?} is a disk image file, which xCAT does not load: an xCAT image's source is an osimage name (`lsdef -t osimage` lists them) or nodetype attributes (\"os=rhels8.6,arch=x86_64,profile=compute\"); a disk image is for the qemu or libvirt provisioners"
        )
    })
}

impl Target {
    /// Reads a source: with an `=`, nodetype attributes; else an osimage
    /// name. `Err` says what is wrong and what to write.
    pub fn parse(source: &str) -> Result<Target, String> {
        let s = source.trim();
        if s.is_empty() {
            return Err("an xCAT image's `source` is an osimage name or nodetype attributes (\"os=rhels8.6,arch=x86_64,profile=compute\"), not empty".into());
        }
        if !s.contains('=') {
            if let Some(why) = disk_file(s) {
                return Err(why);
            }
            if s.contains(char::is_whitespace) || s.contains(',') {
                return Err(format!(
                    "`source` {s:?} is no osimage name (osimage names hold no blanks or commas); for nodetype attributes write \"os=OS,arch=ARCH,profile=PROFILE\""
                ));
            }
            return Ok(Target::Osimage(s.to_string()));
        }
        let mut found: [Option<String>; 4] = Default::default();
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`source` {s:?}: `{}` is not KEY=VALUE", part.trim()))?;
            let (k, v) = (k.trim(), v.trim());
            let i = KEYS.iter().position(|x| *x == k).ok_or_else(|| {
                format!(
                    "`source` {s:?}: `{k}` is no nodetype attribute reimage sets (os, arch, profile, provmethod)"
                )
            })?;
            if v.is_empty() || v.contains(char::is_whitespace) || v.contains('=') {
                return Err(format!("`source` {s:?}: `{k}` needs one word as its value"));
            }
            if found[i].replace(v.to_string()).is_some() {
                return Err(format!("`source` {s:?}: `{k}` is given twice"));
            }
        }
        let [os, arch, profile, provmethod] = found;
        let need = |v: Option<String>, k: &str| {
            v.ok_or_else(|| {
                format!(
                    "`source` {s:?} lacks `{k}`: nodetype attributes are \"os=OS,arch=ARCH,profile=PROFILE\" (nodeset builds the boot state OS-ARCH-PROFILE from them)"
                )
            })
        };
        let (os, arch, profile) = (
            need(os, "os")?,
            need(arch, "arch")?,
            need(profile, "profile")?,
        );
        let provmethod = match provmethod.as_deref() {
            None => Destiny::Install,
            Some(p) => match Destiny::of(p) {
                Some(d @ (Destiny::Install | Destiny::Netboot | Destiny::Statelite))
                    if d.name() == p =>
                {
                    d
                }
                _ => {
                    return Err(format!(
                        "`source` {s:?}: provmethod is install, netboot or statelite, not {p:?}"
                    ));
                }
            },
        };
        Ok(Target::Nodetype(Nodetype {
            os,
            arch,
            profile,
            provmethod,
        }))
    }

    /// In words, for the load's first message and `reimage check`.
    pub fn words(&self) -> String {
        match self {
            Target::Osimage(o) => format!("osimage `{o}`"),
            Target::Nodetype(n) => format!(
                "nodetype os={}, arch={}, profile={} (chdef, then `nodeset NODE {}`)",
                n.os,
                n.arch,
                n.profile,
                n.provmethod.name()
            ),
        }
    }

    /// nodeset's argument: `osimage=NAME`, or the provmethod.
    pub fn nodeset_arg(&self) -> String {
        match self {
            Target::Osimage(o) => format!("osimage={o}"),
            Target::Nodetype(n) => n.provmethod.name().to_string(),
        }
    }
}

impl Nodetype {
    /// chdef's attribute arguments.
    pub fn chdef_args(&self) -> [String; 3] {
        [
            format!("os={}", self.os),
            format!("arch={}", self.arch),
            format!("profile={}", self.profile),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osimage_names_and_nodetype_attributes() {
        assert_eq!(
            Target::parse("rhels7.9-x86_64-install-compute"),
            Ok(Target::Osimage("rhels7.9-x86_64-install-compute".into()))
        );
        let t = Target::parse("os=rhels8.6,arch=x86_64,profile=compute").expect("nodetype");
        assert_eq!(
            t,
            Target::Nodetype(Nodetype {
                os: "rhels8.6".into(),
                arch: "x86_64".into(),
                profile: "compute".into(),
                provmethod: Destiny::Install,
            })
        );
        assert_eq!(t.nodeset_arg(), "install");
        let t = Target::parse(" profile=vclimg , arch=x86, os=image, provmethod=netboot ")
            .expect("any order, blanks around");
        assert_eq!(t.nodeset_arg(), "netboot");
        assert!(t.words().contains("os=image, arch=x86, profile=vclimg"));
        let Target::Nodetype(n) = t else {
            panic!("nodetype")
        };
        assert_eq!(n.chdef_args(), ["os=image", "arch=x86", "profile=vclimg"]);
    }

    #[test]
    fn bad_sources_say_what_to_write() {
        for (s, want) in [
            ("os=rhels8.6,arch=x86_64", "lacks `profile`"),
            (
                "os=a,arch=b,profile=c,flavour=d",
                "`flavour` is no nodetype attribute",
            ),
            ("os=a,arch=b,profile=c,os=d", "given twice"),
            ("os=a,arch=b,profile=c,provmethod=boot", "not \"boot\""),
            ("os=a,arch=b,profile=", "one word"),
            ("os=a,arch,profile=c", "not KEY=VALUE"),
            ("two words", "no osimage name"),
            ("", "not empty"),
            (
                "/var/lib/libvirt/images/rocky9.qcow2",
                "is a disk image file",
            ),
            ("rocky9.qcow2", "is a disk image file"),
        ] {
            let e = Target::parse(s).expect_err(s);
            assert!(e.contains(want), "{s:?}: {e}");
        }
    }
}
