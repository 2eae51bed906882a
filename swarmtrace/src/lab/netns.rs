//! Network namespaces the lab creates and always removes, and running code inside them.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// The system tool `program`, found only in the system's directories (`kernel::tool`): the
/// lab runs as root, and a `PATH` another user put a directory of theirs in must not choose
/// what it runs.
fn tool(program: &str) -> Result<std::path::PathBuf> {
    crate::kernel::tool::path(program).with_context(|| {
        format!(
            "no {program} in {}: is it installed? (scripts/setup.sh installs it)",
            crate::kernel::tool::DIRS.join(", ")
        )
    })
}

/// Runs a system tool, failing with its stderr when it fails.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let exe = tool(program)?;
    let out = Command::new(&exe)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ip(args: &[&str]) -> Result<String> {
    sh("ip", args)
}

/// A named network namespace (`ip netns add`), deleted when dropped, with everything in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace, replacing a stale one of the same name left by a killed run.
    pub fn create(name: &str) -> Result<Self> {
        if std::path::Path::new("/run/netns").join(name).exists() {
            let _ = ip(&["netns", "del", name]);
        }
        ip(&["netns", "add", name])?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a system tool inside the namespace (`args[0]`, found as `sh` finds it: `ip netns
    /// exec` would look it up through `PATH`).
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let Some((program, rest)) = args.split_first() else {
            bail!("nothing to run in {}", self.name);
        };
        let exe = tool(program)?;
        let exe = exe.to_string_lossy();
        let mut full = vec!["netns", "exec", &self.name, &exe];
        full.extend_from_slice(rest);
        ip(&full)
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.tcp_timestamps=1`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = crate::kernel::sysctl::path(key);
        let value = value.to_owned();
        self.run(move || {
            std::fs::write(&path, value).with_context(|| format!("cannot set {}", path.display()))
        })?
    }

    /// The namespace's inode, as the kernel reports it in events.
    pub fn inode(&self) -> Result<u32> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(format!("/run/netns/{}", self.name))?;
        Ok(u32::try_from(meta.ino())?)
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it makes live there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        match self.spawn(f)?.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Runs `f` on a new thread that has entered the namespace; join the handle for the
    /// result.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("namespace {} is gone", self.name))?;
        Ok(std::thread::spawn(move || -> Result<T> {
            crate::kernel::netns::enter(&file).context("setns")?;
            Ok(f())
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            log::warn!("cannot delete namespace {}: {e}", self.name);
        }
    }
}

/// A veth pair between two namespaces, both ends up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    ip(&[
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.exec(&["ip", "link", "set", a_if, "up"])?;
    b.exec(&["ip", "link", "set", b_if, "up"])?;
    Ok(())
}

/// Adds an address; IPv6 addresses skip duplicate address detection so they work at once.
pub fn addr(ns: &Netns, dev: &str, cidr: &str) -> Result<()> {
    if cidr.contains(':') {
        ns.exec(&["ip", "-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
    } else {
        ns.exec(&["ip", "addr", "add", cidr, "dev", dev])?;
    }
    Ok(())
}
