//! Sysctls by their sysctl(8) name, read from `/proc/sys` of the namespace the thread is in.

use std::path::{Path, PathBuf};

/// `/proc/sys`: the sysctls of the calling thread's network namespace.
pub const LIVE: &str = "/proc/sys";

/// The file of sysctl `name` under `root`. A dot inside an interface name is written `/`
/// (`net.ipv4.conf.eth0/100.rp_filter`), as sysctl(8) does.
pub fn path_in(root: &Path, name: &str) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in name.split('.') {
        p.push(part.replace('/', "."));
    }
    p
}

/// [`path_in`] of the live `/proc/sys`.
pub fn path(name: &str) -> PathBuf {
    path_in(Path::new(LIVE), name)
}

/// The value of a sysctl, trimmed; None when it does not exist or cannot be read.
pub fn read_in(root: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(path_in(root, name))
        .ok()
        .map(|s| s.trim().to_owned())
}

pub fn read(name: &str) -> Option<String> {
    read_in(Path::new(LIVE), name)
}

/// The entries of a sysctl directory, sorted (`net.ipv4.conf` -> `all`, `default`, `lo`, ...).
pub fn entries_in(root: &Path, name: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(path_in(root, name))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn entries(name: &str) -> Vec<String> {
    entries_in(Path::new(LIVE), name)
}

/// nf_conntrack_count and nf_conntrack_max; None when conntrack is not loaded.
pub fn conntrack_fill_in(root: &Path) -> Option<(u64, u64)> {
    let num = |n: &str| read_in(root, n)?.parse().ok();
    Some((
        num("net.netfilter.nf_conntrack_count")?,
        num("net.netfilter.nf_conntrack_max")?,
    ))
}

pub fn conntrack_fill() -> Option<(u64, u64)> {
    conntrack_fill_in(Path::new(LIVE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_sysctl_tree() {
        let root = std::env::temp_dir().join(format!("swarmtrace-sysctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (file, v) in [
            ("net/ipv4/conf/all/rp_filter", "1\n"),
            ("net/ipv4/conf/eth0.100/rp_filter", "2\n"),
            ("net/ipv4/conf/lo/rp_filter", "0\n"),
            ("net/netfilter/nf_conntrack_count", "12\n"),
            ("net/netfilter/nf_conntrack_max", "262144\n"),
        ] {
            let p = root.join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        }
        assert_eq!(
            path("net.ipv4.conf.eth0/100.rp_filter"),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/rp_filter")
        );
        assert_eq!(
            read_in(&root, "net.ipv4.conf.eth0/100.rp_filter").as_deref(),
            Some("2")
        );
        assert_eq!(read_in(&root, "net.ipv4.tcp_tw_recycle"), None);
        assert_eq!(
            entries_in(&root, "net.ipv4.conf"),
            ["all", "eth0.100", "lo"]
        );
        assert_eq!(conntrack_fill_in(&root), Some((12, 262144)));
        std::fs::remove_file(root.join("net/netfilter/nf_conntrack_max")).unwrap();
        assert_eq!(conntrack_fill_in(&root), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
