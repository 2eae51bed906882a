//! The postmortem bundle: a directory (0700, files 0600) or a `.tar.gz` of one.
//!
//! | file | what |
//! | --- | --- |
//! | `events.ndjson` | the live NDJSON stream (docs/json.md), the summary last |
//! | `handshakes.json` | every handshake as the tracker held it, and the hop names |
//! | `system.json` | kernel, facts used, sysctls, namespaces (addresses, routes, counters before and after), Docker, the verdicts' context |
//! | `handshakes.pcapng` | the dropped and unanswered handshake packets, with their verdict in each comment |
//! | `report.md` | the rendered report |
//!
//! `report` recomputes the verdicts from `handshakes.json` and `system.json`'s context with
//! the same code as the live run; reading a bundle back is `read` (within `limits`).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::run::HopNames;
use crate::tracker::Handshake;
use crate::verdict;

mod limits;
mod read;

pub use limits::{Budget, Hit, Limits};
pub use read::Bundle;

pub const FORMAT: &str = "swarmtrace-bundle/1";
pub const FILES: [&str; 5] = [
    "events.ndjson",
    "handshakes.json",
    "system.json",
    "handshakes.pcapng",
    "report.md",
];

/// `handshakes.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HandshakesFile {
    pub format: String,
    pub handshakes: Vec<Handshake>,
    /// (netns inode, ifindex, namespace name, interface name) of the watched interfaces.
    pub hops: Vec<(u32, u32, String, String)>,
    pub forgotten: u64,
    /// Kernel (monotonic) to wall-clock time, for the handshakes' `*_ns` fields.
    pub clock: crate::clock::WallClock,
}

/// Where a capture writes, prepared (and proven writable) before anything is attached.
#[derive(Debug)]
pub struct BundleOut {
    /// The directory the files go to (a temporary one next to a `.tar.gz`).
    pub dir: PathBuf,
    /// The `.tar.gz` to pack the directory into at the end.
    pub tarball: Option<PathBuf>,
}

pub fn is_tarball(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.ends_with(".tar.gz") || s.ends_with(".tgz")
}

impl BundleOut {
    pub fn prepare(path: &Path) -> Result<Self> {
        if is_tarball(path) {
            // Create the archive now (refusing to overwrite) so an unwritable path fails first.
            File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("bundle");
            let dir = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
            if let Err(e) = DirBuilder::new().mode(0o700).create(&dir) {
                let _ = std::fs::remove_file(path);
                return Err(e).with_context(|| format!("cannot create {}", dir.display()));
            }
            return Ok(Self {
                dir,
                tarball: Some(path.to_owned()),
            });
        }
        if path.exists() {
            let empty = std::fs::read_dir(path)
                .with_context(|| {
                    format!("{} exists and is not a readable directory", path.display())
                })?
                .next()
                .is_none();
            if !empty {
                bail!(
                    "{} exists and is not empty: choose a new path",
                    path.display()
                );
            }
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        } else {
            DirBuilder::new()
                .mode(0o700)
                .create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        // Prove the directory is writable.
        let probe = path.join(".write-test");
        File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&probe)
            .with_context(|| format!("cannot write in {}", path.display()))?;
        std::fs::remove_file(&probe)?;
        Ok(Self {
            dir: path.to_owned(),
            tarball: None,
        })
    }

    pub fn create(&self, name: &str) -> Result<File> {
        let p = self.dir.join(name);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("cannot write {}", p.display()))
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut f = self.create(name)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    }

    /// Packs the directory into the tarball (if any) and removes it.
    pub fn finish(self) -> Result<PathBuf> {
        let Some(tarball) = self.tarball.clone() else {
            return Ok(self.dir.clone());
        };
        let file = File::options()
            .write(true)
            .truncate(true)
            .open(&tarball)
            .with_context(|| format!("cannot write {}", tarball.display()))?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let top = tarball
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| {
                n.trim_end_matches(".tar.gz")
                    .trim_end_matches(".tgz")
                    .to_owned()
            })
            .unwrap_or_else(|| "bundle".to_owned());
        for name in FILES {
            let p = self.dir.join(name);
            if p.exists() {
                tar.append_path_with_name(&p, format!("{top}/{name}"))?;
            }
        }
        tar.into_inner()?.finish()?.sync_all()?;
        std::fs::remove_dir_all(&self.dir)?;
        Ok(tarball)
    }

    /// Removes what was made, after a failure.
    pub fn abandon(self) {
        if let Some(t) = &self.tarball {
            let _ = std::fs::remove_dir_all(&self.dir);
            let _ = std::fs::remove_file(t);
        }
    }
}

/// The dropped and unanswered handshake packets as pcapng, each with its verdict in the
/// comment. Headers are rebuilt from what the kernel programs reported: addresses, ports,
/// sequence numbers, flags and timestamps are the real ones; options other than the
/// timestamp are typical values, and there is no payload.
pub fn pcapng(hs: &HandshakesFile, ctx: &verdict::Context) -> std::io::Result<Vec<u8>> {
    use crate::event::PacketKind;
    use crate::pcapng::{PcapngWriter, TcpPacket, TCP_SYN};
    use crate::tracker::Outcome;
    let hops = HopNames::from_entries(&hs.hops);
    let mut w = PcapngWriter::new(
        Vec::new(),
        concat!("swarmtrace ", env!("CARGO_PKG_VERSION")),
    )?;
    let mut failed: Vec<&Handshake> = hs
        .handshakes
        .iter()
        .filter(|h| h.outcome() != Outcome::Answered)
        .collect();
    failed.sort_by_key(|h| h.first_ns);
    for h in failed {
        let verdict = h.outcome().as_str();
        let cause = verdict::classify(h, ctx)
            .map(|c| format!(" cause={}", c.id()))
            .unwrap_or_default();
        let who = format!("client={} service={}", h.client, h.service);
        // The SYN as first seen, before any NAT (one per transmission we saw).
        for key in &h.keys {
            w.write(&TcpPacket {
                ts_unix_ns: hs.clock.to_unix_ns(h.first_ns),
                src: h.client,
                dst: h.service,
                seq: key.isn,
                ack: 0,
                flags: TCP_SYN,
                tsval: (key.tsval != 0).then_some(key.tsval),
                tsecr: None,
                comment: format!(
                    "verdict={verdict}{cause} as first seen, {who} syns={}",
                    h.syns
                ),
                interface: h
                    .first_hop
                    .map(|x| hops.name(&x))
                    .unwrap_or_else(|| "unknown".to_owned()),
            })?;
        }
        for d in &h.drops {
            let p = &d.packet;
            let ns = d.netns_label();
            w.write(&TcpPacket {
                ts_unix_ns: hs.clock.to_unix_ns(d.ts_ns),
                src: p.src,
                dst: p.dst,
                seq: p.seq,
                ack: p.ack,
                flags: p.flags,
                tsval: p.tsval,
                tsecr: p.tsecr.filter(|_| p.kind != PacketKind::Syn),
                comment: format!(
                    "verdict={verdict}{cause} dropped {} reason={} at {} in {ns}, {who}",
                    p.kind.as_str(),
                    d.reason,
                    d.location
                ),
                interface: format!("{ns}:{}", d.ifname.as_deref().unwrap_or("-")),
            })?;
        }
    }
    w.finish()
}

/// The `system.json` object.
pub fn system_json(result: &crate::run::RunResult, duration_s: f64) -> Value {
    let facts = &result.facts;
    let o = &facts.offsets;
    let namespaces: Vec<Value> = result
        .after
        .namespaces
        .iter()
        .map(|(name, file)| {
            let (addrs, routes) = crate::kernel::namespaces::describe(file);
            json!({
                "name": name,
                "inode": crate::kernel::netns::inode_of_file(file),
                "addresses": addrs,
                "routes": routes,
                "counters_before": result.before.counters.get(name),
                "counters_after": result.after.counters.get(name),
            })
        })
        .collect();
    json!({
        "format": FORMAT,
        "swarmtrace": env!("CARGO_PKG_VERSION"),
        "captured_at": crate::clock::rfc3339_micros(crate::clock::WallClock::sample().to_unix_ns(crate::clock::WallClock::monotonic_now_ns())),
        "duration_s": duration_s,
        "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).ok(),
        "kernel": {
            "release": facts.release,
            "version": std::fs::read_to_string("/proc/version").map(|s| s.trim().to_owned()).ok(),
            "has_drop_reasons": facts.has_drop_reasons,
            "drop_reasons": facts.reasons.len(),
            "tw_paws_reason": facts.reasons.value("TCP_RFC7323_TW_PAWS").is_some(),
            "offsets": {
                "kfree_skb.skbaddr": o.tp_skbaddr, "kfree_skb.location": o.tp_location,
                "kfree_skb.reason": (o.tp_reason != u32::MAX).then_some(o.tp_reason),
                "kfree_skb.rx_sk": (o.tp_rx_sk != u32::MAX).then_some(o.tp_rx_sk),
                "sk_buff.head": o.skb_head, "sk_buff.network_header": o.skb_network_header,
                "sk_buff.dev": o.skb_dev, "sk_buff.sk": o.skb_sk,
                "net_device.ifindex": o.dev_ifindex, "net_device.name": o.dev_name,
                "net_device.nd_net": o.dev_nd_net, "net.ns.inum": o.net_inum,
                "sock.skc_net": o.sk_net,
                "SKB_CONSUMED": (o.reason_consumed != u32::MAX).then_some(o.reason_consumed),
            },
        },
        "capabilities": std::fs::read_to_string("/proc/self/status").ok().and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned()))),
        "sysctls": crate::kernel::namespaces::sysctls(),
        "namespaces": namespaces,
        "docker": crate::docker::facts(&crate::docker::socket_path()),
        "verdict_context": result.context,
    })
}
