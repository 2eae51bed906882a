//! The kernel's own word on drops, without eBPF: the `skb:kfree_skb` tracepoint recorded into a
//! private tracefs instance (its own ring buffer, so it disturbs no other tracing user), read
//! back as text. Used to check what the lab produces, independently of the tool under test.
//!
//! The tracepoint carries no namespace: a drop is attributed by its reason, its code location and
//! its time, so callers pair it with a counter read in the namespace they expect it in. Drops of
//! other activity on the machine (other tests running at the same time) are recorded as well.
//!
//! The instance is removed on drop (also on panic); tracefs is mounted only if it was not, and
//! unmounted again then. The instance's clock is `mono`, so `KernelDrop::time` compares with
//! [`now`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const TRACEFS: &str = "/sys/kernel/tracing";
const INSTANCE_PREFIX: &str = "swarmtrace-lab-";

/// Watchers alive in this process, and whether tracefs was mounted by one of them.
static MOUNT: Mutex<(usize, bool)> = Mutex::new((0, false));

/// One `kfree_skb` record.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelDrop {
    /// CLOCK_MONOTONIC seconds.
    pub time: f64,
    pub cpu: u32,
    /// `protocol=` of the record: 2048 for IPv4.
    pub protocol: u32,
    /// `tcp_v4_rcv+0x91/0x13f0`.
    pub location: String,
    /// `NO_SOCKET`, `NETFILTER_DROP`...
    pub reason: String,
}

impl KernelDrop {
    /// The function of the location: `tcp_v4_rcv`.
    pub fn function(&self) -> &str {
        self.location.split('+').next().unwrap_or(&self.location)
    }

    /// Parses one line of a tracefs `trace` file; None for anything but a kfree_skb record.
    pub fn parse(line: &str) -> Option<Self> {
        let (head, body) = line.split_once(": kfree_skb: ")?;
        let time = head.split_whitespace().last()?.parse().ok()?;
        let cpu = head
            .split_once('[')?
            .1
            .split_once(']')?
            .0
            .trim()
            .parse()
            .ok()?;
        let (fields, reason) = body.split_once(" reason: ")?;
        let field = |name: &str| {
            fields
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        };
        Some(Self {
            time,
            cpu,
            protocol: field("protocol")?.parse().ok()?,
            location: field("location")?.to_owned(),
            reason: reason.trim().to_owned(),
        })
    }
}

/// CLOCK_MONOTONIC now, in seconds: the clock of [`KernelDrop::time`].
pub fn now() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A tracefs instance recording IPv4 `kfree_skb` events from the moment it starts.
#[derive(Debug)]
pub struct DropWatch {
    dir: PathBuf,
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("cannot write {value:?} to {path:?}"))
}

fn remove_instance(dir: &Path) {
    let _ = std::fs::write(dir.join("events/skb/kfree_skb/enable"), "0");
    if let Err(e) = std::fs::remove_dir(dir) {
        log::warn!("cannot remove tracefs instance {}: {e}", dir.display());
    }
}

/// Removes the instances of processes that are gone (killed before their watch was dropped).
fn remove_orphans(instances: &Path) {
    let Ok(entries) = std::fs::read_dir(instances) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(INSTANCE_PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            remove_instance(&entry.path());
        }
    }
}

impl DropWatch {
    /// Starts recording into the instance `swarmtrace-lab-{pid}-{name}`, first removing the
    /// instances of processes that no longer exist. `name`: letters, digits, `_`, `-`.
    pub fn start(name: &str) -> Result<Self> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("bad tracefs instance name {name:?}");
        }
        {
            let mut m = MOUNT.lock().unwrap_or_else(|p| p.into_inner());
            if m.0 == 0 && !Path::new(TRACEFS).join("instances").exists() {
                super::sh("mount", &["-t", "tracefs", "tracefs", TRACEFS])
                    .context("tracefs is not mounted and cannot be")?;
                m.1 = true;
            }
            m.0 += 1;
        }
        // From here on, Drop undoes the mount count.
        let instances = Path::new(TRACEFS).join("instances");
        let watch = Self {
            dir: instances.join(format!("{INSTANCE_PREFIX}{}-{name}", std::process::id())),
        };
        remove_orphans(&instances);
        if watch.dir.exists() {
            remove_instance(&watch.dir);
        }
        std::fs::create_dir(&watch.dir)
            .with_context(|| format!("cannot create {}", watch.dir.display()))?;
        let _ = write(&watch.dir.join("buffer_size_kb"), "512");
        write(&watch.dir.join("trace_clock"), "mono")?;
        let event = watch.dir.join("events/skb/kfree_skb");
        write(&event.join("filter"), "protocol == 2048")?;
        write(&event.join("enable"), "1")?;
        Ok(watch)
    }

    /// Every drop recorded so far (the buffer is not consumed).
    pub fn drops(&self) -> Result<Vec<KernelDrop>> {
        let path = self.dir.join("trace");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(text.lines().filter_map(KernelDrop::parse).collect())
    }

    /// Waits (polling, at most `timeout`) until a recorded drop satisfies `pred`, and returns it.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&KernelDrop) -> bool,
    ) -> Result<Option<KernelDrop>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(d) = self.drops()?.into_iter().find(&pred) {
                return Ok(Some(d));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if self.dir.exists() {
            remove_instance(&self.dir);
        }
        let mut m = MOUNT.lock().unwrap_or_else(|p| p.into_inner());
        m.0 = m.0.saturating_sub(1);
        if m.0 == 0 && m.1 {
            if let Err(e) = super::sh("umount", &[TRACEFS]) {
                log::warn!("cannot unmount the tracefs this lab mounted: {e}");
            }
            m.1 = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_trace_line() {
        let line = "          <idle>-0       [001] ..s1.   977.005917: kfree_skb: \
            skbaddr=00000000d4797dba rx_sk=0000000000000000 protocol=2048 \
            location=neigh_invalidate+0x7e/0x140 reason: NEIGH_FAILED";
        let d = KernelDrop::parse(line).unwrap();
        assert_eq!(d.cpu, 1);
        assert!((d.time - 977.005917).abs() < 1e-9);
        assert_eq!(d.protocol, 2048);
        assert_eq!(d.function(), "neigh_invalidate");
        assert_eq!(d.reason, "NEIGH_FAILED");
        assert!(KernelDrop::parse("# tracer: nop").is_none());
    }
}
