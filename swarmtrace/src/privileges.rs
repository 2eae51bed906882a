//! Checks, before touching the kernel, that we may load and attach eBPF programs.

use anyhow::{bail, Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The `CapEff:` field of a /proc/PID/status, as the kernel writes it (16 hex digits): what a
/// bundle records, and what [`effective_caps`] reads.
pub fn cap_eff(status: &str) -> Option<&str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
}

/// The effective capability set of this process, from /proc/self/status.
fn effective_caps(status: &str) -> Option<u64> {
    cap_eff(status).and_then(|v| u64::from_str_radix(v, 16).ok())
}

pub fn missing_for_tracing(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) {
        return vec![];
    }
    let mut missing = vec![];
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

/// Fails with what to do when the process cannot load and attach the programs.
pub fn require_tracing() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(caps) = effective_caps(&status) else {
        return Ok(()); // cannot tell; let the kernel answer
    };
    let missing = missing_for_tracing(caps);
    if !missing.is_empty() {
        bail!(
            "swarmtrace needs root to load its kernel programs (missing {}): run it with sudo; {}",
            missing.join(", "),
            GROUP_ADVICE
        );
    }
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        if let Some(warning) = world_runnable_with_caps(&exe) {
            log::warn!("{warning}");
            eprintln!("swarmtrace: warning: {warning}");
        }
    }
    Ok(())
}

/// The file capabilities a run by a non-root member of the group needs (the .deb of
/// `cargo xtask dist` gives the same, checked by its tests): BPF, PERFMON, NET_ADMIN and
/// SYS_ADMIN load, attach and enter Docker's namespaces; DAC_READ_SEARCH reads tracefs (mode
/// 0700); SYS_PTRACE reads other processes' `/proc/PID/ns/net`; SYSLOG reads code locations
/// from `/proc/kallsyms`; SYS_RESOURCE raises RLIMIT_MEMLOCK for the maps before Linux 5.11.
macro_rules! file_caps {
    () => {
        "cap_bpf,cap_perfmon,cap_net_admin,cap_sys_admin,cap_dac_read_search,cap_sys_ptrace,cap_syslog,cap_sys_resource+ep"
    };
}
pub const FILE_CAPS: &str = file_caps!();

/// How to let operators run swarmtrace without sudo, and no one else: capabilities on a copy
/// of the binary that only a dedicated group may execute. Capabilities on a binary everyone
/// may run (`+ep` on a 0755 file) let every local user trace every handshake on the host.
pub const GROUP_ADVICE: &str = concat!(
    "to run it without sudo, give the capabilities to a copy only a dedicated group may run: \
groupadd --system swarmtrace && \
install -o root -g swarmtrace -m 0750 \"$(command -v swarmtrace)\" /usr/local/sbin/swarmtrace && \
setcap ",
    file_caps!(),
    " /usr/local/sbin/swarmtrace, \
then add operators to the group (usermod -aG swarmtrace NAME); never setcap a binary every user may run"
);

/// A warning when `exe` carries file capabilities and others (not owner, not group) may run it.
pub fn world_runnable_with_caps(exe: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(exe).ok()?.permissions().mode();
    if mode & 0o001 == 0 || !has_file_caps(exe) {
        return None;
    }
    Some(format!(
        "{} has file capabilities and every local user may run it (mode {:o}): anyone can trace every handshake on this host; restrict it: chgrp swarmtrace {} && chmod 0750 {}",
        exe.display(),
        mode & 0o7777,
        exe.display(),
        exe.display()
    ))
}

fn has_file_caps(exe: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(exe.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a NULL buffer of size 0 asks for the size only.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_caps() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff(status), Some("000001ffffffffff"));
        assert_eq!(effective_caps(status), Some(0x1ffffffffff));
        assert_eq!(cap_eff("Name:\tx\n"), None);
        assert!(missing_for_tracing(0x1ffffffffff).is_empty());
        assert_eq!(
            missing_for_tracing(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        let bpf_only = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN);
        assert!(missing_for_tracing(bpf_only).is_empty());
    }

    #[test]
    fn advice_never_puts_capabilities_on_a_binary_everyone_runs() {
        assert!(GROUP_ADVICE.contains("-m 0750"), "{GROUP_ADVICE}");
        assert!(GROUP_ADVICE.contains("-g swarmtrace"), "{GROUP_ADVICE}");
        // The only setcap names the group-only copy.
        let setcap = GROUP_ADVICE.split("setcap ").nth(1).unwrap();
        assert!(
            setcap.split(',').next().unwrap().contains("cap_bpf")
                && setcap.contains("+ep /usr/local/sbin/swarmtrace"),
            "{GROUP_ADVICE}"
        );
        assert!(!GROUP_ADVICE.contains("$(which swarmtrace))"));
    }

    #[test]
    #[ignore = "privileged: needs root and setcap; `sudo cargo xtask test` runs it"]
    fn warns_about_capabilities_on_a_world_runnable_binary() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
        let f = std::env::temp_dir().join(format!("st-caps-{}", std::process::id()));
        std::fs::copy("/bin/true", &f).unwrap();
        std::fs::set_permissions(&f, PermissionsExt::from_mode(0o755)).unwrap();
        assert_eq!(world_runnable_with_caps(&f), None, "no capabilities yet");
        let st = std::process::Command::new("setcap")
            .arg("cap_bpf+ep")
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success());
        let w = world_runnable_with_caps(&f).expect("0755 with capabilities");
        assert!(
            w.contains("every local user") && w.contains("chmod 0750"),
            "{w}"
        );
        std::fs::set_permissions(&f, PermissionsExt::from_mode(0o750)).unwrap();
        assert_eq!(world_runnable_with_caps(&f), None, "group-only is fine");
        std::fs::remove_file(&f).unwrap();
    }
}
