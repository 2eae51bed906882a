//! Where tracefs is, and the tracefs description of a tracepoint: field offsets of its record
//! and the symbolic names it prints (for `skb:kfree_skb`, the drop reasons of the running
//! kernel).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where tracefs is usually mounted, in order of preference.
pub const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Whether and where tracefs is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracefs {
    Mounted(PathBuf),
    /// The kernel has tracefs but it is not mounted (`swarmtrace run` mounts it).
    NotMounted,
    Unsupported,
}

impl Tracefs {
    /// The running kernel's tracefs. Without root, the usual mount points are mounted but not
    /// readable: the mount table says where tracefs is then.
    pub fn live() -> Self {
        if let Some(p) = usable().or_else(|| {
            mount_point(&std::fs::read_to_string("/proc/self/mounts").unwrap_or_default())
        }) {
            return Self::Mounted(p);
        }
        if in_kernel(&std::fs::read_to_string("/proc/filesystems").unwrap_or_default()) {
            Self::NotMounted
        } else {
            Self::Unsupported
        }
    }
}

/// The first of [`CANDIDATES`] whose events this process can list.
pub fn usable() -> Option<PathBuf> {
    CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// The first tracefs mount point in a mounts table (/proc/self/mounts).
pub fn mount_point(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "tracefs").then(|| PathBuf::from(point.replace("\\040", " ")))
    })
}

/// Whether /proc/filesystems lists tracefs.
pub fn in_kernel(filesystems: &str) -> bool {
    filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("tracefs"))
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("line {line}: malformed field description: {text:?}")]
    BadField { line: usize, text: String },
    #[error("the tracepoint has no field `{0}`")]
    MissingField(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    /// The C type as written, e.g. `void *` or `enum skb_drop_reason`.
    pub c_type: String,
    pub offset: u32,
    pub size: u32,
}

/// A parsed `events/<category>/<name>/format` file.
#[derive(Debug, Clone)]
pub struct TracepointFormat {
    pub fields: Vec<FormatField>,
    pub print_fmt: String,
}

impl TracepointFormat {
    pub fn read(path: &Path) -> Result<Self, FormatError> {
        let text = std::fs::read_to_string(path).map_err(|source| FormatError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let mut fields = Vec::new();
        let mut print_fmt = String::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("print fmt:") {
                print_fmt = rest.trim().to_owned();
            } else if line.starts_with("field:") {
                fields.push(parse_field(line).ok_or_else(|| FormatError::BadField {
                    line: i + 1,
                    text: line.to_owned(),
                })?);
            }
        }
        Ok(Self { fields, print_fmt })
    }

    pub fn field(&self, name: &str) -> Option<&FormatField> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The end of the record's last field: the kernel refuses to attach a program that reads
    /// further (the record may be padded beyond it, never shorter).
    pub fn record_end(&self) -> u32 {
        self.fields
            .iter()
            .map(|f| f.offset + f.size)
            .max()
            .unwrap_or(0)
    }

    pub fn require(&self, name: &str) -> Result<&FormatField, FormatError> {
        self.field(name)
            .ok_or_else(|| FormatError::MissingField(name.to_owned()))
    }

    /// The `{ value, "NAME" }` pairs of the `__print_symbolic(REC->field, ...)` call in the print
    /// format, or an empty map when the format has none for that field.
    pub fn symbols(&self, field: &str) -> BTreeMap<u32, String> {
        let mut out = BTreeMap::new();
        let needle = format!("__print_symbolic(REC->{field},");
        let Some(start) = self.print_fmt.find(&needle) else {
            return out;
        };
        let mut rest = &self.print_fmt[start + needle.len()..];
        // Pairs look like `{ 2, "NOT_SPECIFIED" }`; the list ends at the call's closing `)`.
        while let Some(open) = rest.find('{') {
            if rest[..open].contains(')') {
                break;
            }
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let pair = &rest[open + 1..open + close];
            if let Some((num, name)) = pair.split_once(',') {
                let name = name.trim().trim_matches('"');
                let num = num.trim();
                let value = match num.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => num.parse().ok(),
                };
                if let Some(v) = value {
                    out.insert(v, name.to_owned());
                }
            }
            rest = &rest[open + close + 1..];
        }
        out
    }
}

/// `field:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;`
fn parse_field(line: &str) -> Option<FormatField> {
    let mut decl = None;
    let mut offset = None;
    let mut size = None;
    for part in line.split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim());
        } else if let Some(o) = part.strip_prefix("offset:") {
            offset = o.trim().parse().ok();
        } else if let Some(s) = part.strip_prefix("size:") {
            size = s.trim().parse().ok();
        }
    }
    let decl = decl?;
    // The name is the last identifier; an array keeps its `[N]` on the name.
    let split = decl.rfind([' ', '*'])?;
    let (c_type, name) = decl.split_at(split + 1);
    let name = name.split('[').next()?.trim();
    if name.is_empty() {
        return None;
    }
    Some(FormatField {
        name: name.to_owned(),
        c_type: c_type.trim().to_owned(),
        offset: offset?,
        size: size?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(kernel: &str) -> TracepointFormat {
        let path = format!(
            "{}/../tests/fixtures/{kernel}/kfree_skb.format",
            env!("CARGO_MANIFEST_DIR")
        );
        TracepointFormat::read(Path::new(&path)).unwrap()
    }

    #[test]
    fn finds_tracefs_mounts() {
        let m = "sysfs /sys sysfs rw,nosuid 0 0\ntracefs /sys/kernel/tracing tracefs rw,nosuid,nodev,noexec,relatime 0 0\n";
        assert_eq!(mount_point(m), Some(PathBuf::from("/sys/kernel/tracing")));
        assert_eq!(mount_point("sysfs /sys sysfs rw 0 0\n"), None);
        assert_eq!(
            mount_point("none /mnt/my\\040trace tracefs rw 0 0\n"),
            Some(PathBuf::from("/mnt/my trace"))
        );
        assert!(in_kernel("nodev\tsysfs\nnodev\ttracefs\n\text4\n"));
        assert!(!in_kernel("nodev\tsysfs\n\text4\n"));
    }

    #[test]
    fn kfree_skb_fields_on_6_18() {
        let f = fixture("linux-6.18");
        let at = |n: &str| {
            let f = f.require(n).unwrap();
            (f.offset, f.size)
        };
        assert_eq!(at("skbaddr"), (8, 8));
        assert_eq!(at("location"), (16, 8));
        assert_eq!(at("rx_sk"), (24, 8));
        assert_eq!(at("protocol"), (32, 2));
        assert_eq!(at("reason"), (36, 4));
        assert_eq!(f.require("reason").unwrap().c_type, "enum skb_drop_reason");
        assert_eq!(f.require("common_pid").unwrap().offset, 4);
    }

    #[test]
    fn drop_reason_names_on_6_18() {
        let names = fixture("linux-6.18").symbols("reason");
        assert_eq!(names.get(&2).unwrap(), "NOT_SPECIFIED");
        assert_eq!(names.get(&3).unwrap(), "NO_SOCKET");
        assert_eq!(names.get(&12).unwrap(), "NETFILTER_DROP");
        assert_eq!(names.get(&16).unwrap(), "IP_RPFILTER");
        assert_eq!(names.get(&38).unwrap(), "TCP_RFC7323_TW_PAWS");
        assert_eq!(names.get(&58).unwrap(), "NEIGH_FAILED");
        assert_eq!(names.len(), 127);
    }

    #[test]
    fn missing_field_and_no_symbols() {
        let f = TracepointFormat::parse(
            "name: x\nformat:\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\nprint fmt: \"%p\", REC->skbaddr\n",
        )
        .unwrap();
        assert!(matches!(
            f.require("reason"),
            Err(FormatError::MissingField(_))
        ));
        assert!(f.symbols("reason").is_empty());
    }

    #[test]
    fn malformed_field_is_an_error() {
        let err = TracepointFormat::parse("format:\n\tfield:;offset:x;\n").unwrap_err();
        assert!(
            matches!(err, FormatError::BadField { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn array_fields_and_hex_symbols() {
        let f = TracepointFormat::parse(
            "\tfield:char name[16];\toffset:12;\tsize:16;\tsigned:0;\nprint fmt: \"%s\", __print_symbolic(REC->kind, { 0x10, \"SIXTEEN\" }, { 1, \"ONE\" }), __print_symbolic(REC->other, { 5, \"NOT_MINE\" })\n",
        )
        .unwrap();
        assert_eq!(f.require("name").unwrap().offset, 12);
        let s = f.symbols("kind");
        assert_eq!(s.get(&16).unwrap(), "SIXTEEN");
        assert_eq!(s.get(&1).unwrap(), "ONE");
        assert!(!s.contains_key(&5));
    }
}
