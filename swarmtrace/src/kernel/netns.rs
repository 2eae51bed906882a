//! Network namespace inode -> a name a human recognises: `host`, the name under
//! `/run/netns` (`ip netns`) or `/var/run/docker/netns` (`ingress_sbox`, `lb_*`, sandbox ids),
//! else the first process living in it.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Directories of bind-mounted namespace files, in order of preference.
pub const NAMED_DIRS: [&str; 2] = ["/run/netns", "/var/run/docker/netns"];

#[derive(Debug)]
pub struct NetnsNames {
    proc_root: PathBuf,
    dirs: Vec<PathBuf>,
    /// Shared, so that every drop in a namespace carries its name without a copy.
    names: HashMap<u32, Arc<str>>,
    scanned: Option<Instant>,
    /// The Docker Engine API socket, when there is one.
    docker_socket: Option<PathBuf>,
    /// Docker's netns file name -> container or network name.
    docker: HashMap<String, String>,
    /// Files Docker could not name (asked once).
    docker_unnamed: std::collections::HashSet<String>,
}

/// Rescans at most this often when an unknown namespace shows up.
const RESCAN_EVERY: Duration = Duration::from_millis(500);

impl NetnsNames {
    pub fn live() -> Self {
        let sock = crate::docker::socket_path();
        let mut s = Self::with_roots(
            Path::new("/proc"),
            NAMED_DIRS.iter().map(PathBuf::from).collect(),
        );
        if sock.exists() {
            s.docker_socket = Some(sock);
            s.rescan();
        }
        s
    }

    pub fn with_roots(proc_root: &Path, dirs: Vec<PathBuf>) -> Self {
        let mut s = Self {
            proc_root: proc_root.to_owned(),
            dirs,
            names: HashMap::new(),
            scanned: None,
            docker_socket: None,
            docker: HashMap::new(),
            docker_unnamed: Default::default(),
        };
        s.rescan();
        s
    }

    /// The name of namespace `inode`, rescanning (rate-limited) when it is not known yet.
    pub fn name(&mut self, inode: u32) -> Option<String> {
        self.shared_name(inode).map(|n| n.to_string())
    }

    /// [`Self::name`] without copying it (once per drop).
    pub fn shared_name(&mut self, inode: u32) -> Option<Arc<str>> {
        if inode == 0 {
            return None;
        }
        if !self.names.contains_key(&inode)
            && self.scanned.is_none_or(|t| t.elapsed() >= RESCAN_EVERY)
        {
            self.rescan();
        }
        self.names.get(&inode).cloned()
    }

    /// The inode of a named namespace (`host`, or a name under one of the directories).
    pub fn inode_of(&self, name: &str) -> Option<u32> {
        if name == "host" {
            return self.host_inode();
        }
        self.dirs.iter().find_map(|d| ns_inode(&d.join(name)))
    }

    /// Docker names for the files under Docker's netns directory, asked again only when the
    /// set of files changed (each container costs an API call).
    fn refresh_docker(&mut self) {
        let Some(sock) = &self.docker_socket else {
            return;
        };
        let files: Vec<String> = self
            .dirs
            .iter()
            .filter(|d| d.ends_with("docker/netns"))
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|e| {
                e.flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            })
            .collect();
        if files.is_empty()
            || files
                .iter()
                .all(|f| self.docker.contains_key(f) || self.docker_unnamed.contains(f))
        {
            return;
        }
        self.docker = crate::docker::netns_names(sock);
        self.docker_unnamed = files
            .into_iter()
            .filter(|f| !self.docker.contains_key(f))
            .collect();
    }

    /// The initial namespace: init's, or kthreadd's (pid 2, a kernel thread, always in the
    /// initial namespace) where init's link cannot be read, as in some sandboxes.
    pub fn host_inode(&self) -> Option<u32> {
        ns_inode(&self.proc_root.join("1/ns/net"))
            .or_else(|| ns_inode(&self.proc_root.join("2/ns/net")))
    }

    pub fn rescan(&mut self) {
        self.refresh_docker();
        let mut names = HashMap::new();
        // Processes first, so that the explicit names below win.
        if let Ok(entries) = std::fs::read_dir(&self.proc_root) {
            for e in entries.flatten() {
                let pid = e.file_name();
                let Some(pid) = pid
                    .to_str()
                    .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                let Some(ino) = ns_inode(&e.path().join("ns/net")) else {
                    continue;
                };
                names.entry(ino).or_insert_with(|| {
                    let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                    format!("pid:{pid}({})", comm.trim()).into()
                });
            }
        }
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                if let (Some(ino), Some(name)) = (ns_inode(&e.path()), e.file_name().to_str()) {
                    // Docker's sandbox ids mean little to a human: use the container's (or
                    // the network's) name from the Engine API when it is there.
                    let name = match self.docker.get(name) {
                        Some(d) => format!("{d} [{name}]"),
                        None => name.to_owned(),
                    };
                    names.insert(ino, name.into());
                }
            }
        }
        if let Some(ino) = self.host_inode() {
            names.insert(ino, "host".into());
        }
        self.names = names;
        self.scanned = Some(Instant::now());
    }
}

/// The inode of a namespace file (`/proc/PID/ns/net` or a bind mount of one). A plain file
/// that is not a namespace has a small inode on its own filesystem; namespace inodes live in
/// nsfs, whose device differs, which we check through the `net:[N]` link where we can.
fn ns_inode(path: &Path) -> Option<u32> {
    if let Ok(link) = std::fs::read_link(path) {
        let s = link.to_str()?;
        return s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok();
    }
    let meta = std::fs::metadata(path).ok()?;
    // Bind-mounted nsfs files have st_dev of nsfs; an unmounted placeholder file is empty
    // and lives on the parent's device.
    let parent_dev = path.parent().and_then(|p| std::fs::metadata(p).ok())?.dev();
    if meta.dev() == parent_dev {
        return None;
    }
    u32::try_from(meta.ino()).ok()
}

/// Where a namespace named `name` lives: `host`, a name under the named directories, or a
/// path to a namespace file.
pub fn ns_file(name: &str) -> Option<PathBuf> {
    if name == "host" {
        for pid in ["1", "2"] {
            let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if std::fs::read_link(&p).is_ok() {
                return Some(p);
            }
        }
        return None;
    }
    if name.starts_with('/') {
        return Path::new(name).exists().then(|| PathBuf::from(name));
    }
    NAMED_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// The inode of the namespace in a namespace file.
pub fn inode_of_file(path: &Path) -> Option<u32> {
    ns_inode(path).or_else(|| {
        let meta = std::fs::metadata(path).ok()?;
        u32::try_from(meta.ino()).ok()
    })
}

/// Runs `f` on a thread that has entered the namespace in `ns_file`; sockets, netlink
/// requests and child processes it makes belong to that namespace.
pub fn within<T: Send>(ns_file: &Path, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(ns_file)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a valid namespace fd; setns changes only this thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_proc_links() {
        let root = std::env::temp_dir().join(format!("swarmtrace-netns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (pid, ino, comm) in [("1", 4026531840u32, "init"), ("42", 4026532300, "nginx")] {
            let ns = root.join(pid).join("ns");
            std::fs::create_dir_all(&ns).unwrap();
            std::os::unix::fs::symlink(format!("net:[{ino}]"), ns.join("net")).unwrap();
            std::fs::write(root.join(pid).join("comm"), format!("{comm}\n")).unwrap();
        }
        std::fs::create_dir_all(root.join("self")).unwrap();
        let mut n = NetnsNames::with_roots(&root, vec![root.join("none")]);
        assert_eq!(n.name(4026531840).as_deref(), Some("host"));
        assert_eq!(n.name(4026532300).as_deref(), Some("pid:42(nginx)"));
        assert_eq!(n.name(7), None);
        assert_eq!(n.name(0), None);
        assert_eq!(n.inode_of("host"), Some(4026531840));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
