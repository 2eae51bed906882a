//! What `host` means, once for every part of swarmtrace: the network namespace of PID 1 of the
//! `/proc` swarmtrace sees (kthreadd's, PID 2, where PID 1's link cannot be read). The default
//! interfaces are read there, `--iface IFACE` attaches there, drops there are named `host`,
//! and capture's sysctls are read there, whatever namespace swarmtrace itself runs in
//! (`ip netns exec`, a container without `--network host`).
//!
//! Everything per-namespace is read from a thread that entered it ([`super::netns::within`]):
//! netlink, ioctls and `/proc/thread-self/net` follow the thread, but `/sys/class/net` shows
//! the namespace of whoever mounted `/sys` (`ip netns exec` and container runtimes mount their
//! own), and `/proc/net` is the process's, not the thread's. Neither is read for another
//! namespace.

use std::path::{Path, PathBuf};

use super::netns::{self, within};

/// `PROC_PID_INIT_INO` (include/linux/proc_ns.h): the initial PID namespace's inode, fixed
/// since Linux 3.8. When `/proc/1/ns/pid` shows another, `/proc` belongs to a container's own
/// PID namespace and its PID 1 is not the machine's.
const INIT_PID_NS: u32 = 0xEFFF_FFFC;

/// Where `host` is, and where swarmtrace runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNs {
    /// `/proc/1/ns/net` (or `/proc/2/ns/net`); None when neither can be read (not root).
    pub file: Option<PathBuf>,
    /// Its inode.
    pub inode: Option<u32>,
    /// swarmtrace's own network namespace (the calling thread's).
    pub own: Option<u32>,
    /// The PID namespace of that process: [`INIT_PID_NS`] on the machine or with `--pid host`.
    pub pid_ns: Option<u32>,
}

impl HostNs {
    /// Reads the live `/proc`.
    pub fn locate() -> Self {
        Self::locate_in(Path::new("/proc"))
    }

    pub fn locate_in(proc_root: &Path) -> Self {
        let file = netns::host_file(proc_root);
        let pid_ns = file
            .as_ref()
            .and_then(|f| f.parent())
            .and_then(|ns| link_inode(&ns.join("pid"), "pid"));
        Self {
            inode: file.as_deref().and_then(|f| link_inode(f, "net")),
            own: link_inode(&proc_root.join("thread-self/ns/net"), "net")
                .or_else(|| link_inode(&proc_root.join("self/ns/net"), "net")),
            file,
            pid_ns,
        }
    }

    /// Whether swarmtrace runs in the host's namespace; None when it cannot be told.
    pub fn is_own(&self) -> Option<bool> {
        Some(self.own? == self.inode?)
    }

    /// Whether `/proc`'s PID 1 is the machine's; None when it cannot be told.
    pub fn proc_is_machines(&self) -> Option<bool> {
        Some(self.pid_ns? == INIT_PID_NS)
    }

    /// What to say at start, one line each: nothing when swarmtrace runs in the host's
    /// namespace with the machine's `/proc`.
    pub fn notices(&self) -> Vec<String> {
        let ns = |i: Option<u32>| i.map_or_else(|| "?".to_owned(), |i| format!("net:[{i}]"));
        let mut out = Vec::new();
        if self.proc_is_machines() == Some(false) {
            out.push(format!(
                "/proc is this container's (its own PID namespace): `host` is the network namespace of its PID 1 ({}), the machine's only if the container has the host's network (`--network host`, the stack's `host` network); namespaces outside /run/netns and /var/run/docker/netns are named by inode. `docker run --pid host` lifts both",
                ns(self.inode)
            ));
        } else if self.is_own() == Some(false) {
            out.push(format!(
                "running in network namespace {}, not the host's ({}, PID 1's): the default interfaces, `--iface IFACE` and the name `host` are the host's",
                ns(self.own),
                ns(self.inode)
            ));
        }
        out
    }
}

/// The inode in a `KIND:[N]` namespace link.
fn link_inode(path: &Path, kind: &str) -> Option<u32> {
    let link = std::fs::read_link(path).ok()?;
    link.to_str()?
        .strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Runs `f` in the host's namespace: on the calling thread when swarmtrace runs there (no
/// privilege needed), else on a thread that entered it.
pub fn in_host<T: Send>(f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let host = HostNs::locate();
    if host.is_own() == Some(true) {
        return Ok(f());
    }
    let file = host.file.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "cannot read /proc/1/ns/net or /proc/2/ns/net",
        )
    })?;
    within(&file, f)
}

/// The index of interface `name` in the calling thread's namespace (an ioctl on a socket the
/// thread makes: never `/sys/class/net`, which may be another namespace's).
pub fn ifindex(name: &str) -> std::io::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(tag: &str, pid1: Option<(&str, &str)>, own: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("swarmtrace-hostns-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let link = |pid: &str, kind: &str, to: &str| {
            let d = root.join(pid).join("ns");
            std::fs::create_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(to, d.join(kind)).unwrap();
        };
        if let Some((net, pid)) = pid1 {
            link("1", "net", net);
            link("1", "pid", pid);
        }
        link("thread-self", "net", own);
        root
    }

    #[test]
    fn on_the_host_nothing_is_said() {
        let root = fake_proc(
            "host",
            Some(("net:[4026531840]", "pid:[4026531836]")),
            "net:[4026531840]",
        );
        let h = HostNs::locate_in(&root);
        assert_eq!(h.file, Some(root.join("1/ns/net")));
        assert_eq!(
            (h.inode, h.is_own(), h.proc_is_machines()),
            (Some(4026531840), Some(true), Some(true))
        );
        assert!(h.notices().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn another_namespace_is_said_once() {
        let root = fake_proc(
            "netns",
            Some(("net:[4026531840]", "pid:[4026531836]")),
            "net:[4026532999]",
        );
        let n = HostNs::locate_in(&root).notices();
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(
            n[0].contains("net:[4026532999], not the host's (net:[4026531840]"),
            "{n:?}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A container with its own PID namespace: its PID 1 is not the machine's, whatever
    /// network namespace it has; the notice says what to do.
    #[test]
    fn a_private_proc_is_said_with_the_fix() {
        let root = fake_proc(
            "pidns",
            Some(("net:[4026532500]", "pid:[4026532501]")),
            "net:[4026532500]",
        );
        let h = HostNs::locate_in(&root);
        assert_eq!(
            (h.is_own(), h.proc_is_machines()),
            (Some(true), Some(false))
        );
        let n = h.notices();
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(
            n[0].contains("--pid host") && n[0].contains("net:[4026532500]"),
            "{n:?}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Not root: nothing is known, nothing is claimed.
    #[test]
    fn unreadable_links_claim_nothing() {
        let root = fake_proc("unreadable", None, "net:[4026532500]");
        let h = HostNs::locate_in(&root);
        assert_eq!(
            (h.file.as_ref(), h.is_own(), h.proc_is_machines()),
            (None, None, None)
        );
        assert!(h.notices().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
