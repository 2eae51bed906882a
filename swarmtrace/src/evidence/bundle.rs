//! The postmortem bundle: a directory (0700, files 0600) or a `.tar.gz` of one, written
//! through `safe_fs` (no link followed, no planted file reused).
//!
//! | file | what |
//! | --- | --- |
//! | `events.ndjson` | the live NDJSON stream (docs/json.md), the summary last |
//! | `handshakes.json` | every handshake the tracker held, and the hop names |
//! | `system.json` | kernel, facts used, sysctls, namespaces (addresses, routes, counters before and after), Docker, the verdicts' context |
//! | `handshakes.pcapng` | the dropped and unanswered handshake packets, with their verdict in each comment |
//! | `report.md` | the rendered report |
//!
//! Both JSON files are written and read through `format` (versioned structs of their own).
//! `report` recomputes the verdicts from `handshakes.json` and `system.json`'s context with
//! the same code as the live run; reading a bundle back is `read` (within `limits`).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::evidence::format::{self, v2};
use crate::safe_fs;
use crate::trace::hops::HopNames;
use crate::trace::tracker::Handshake;
use crate::verdict;

mod limits;
mod read;

pub use crate::evidence::format::{Recorded, FORMAT};
pub use limits::{Budget, Hit, Limits};
pub use read::Bundle;

pub const FILES: [&str; 6] = [
    "events.ndjson",
    "handshakes.json",
    "system.json",
    "handshakes.pcapng",
    "report.md",
    PARTIAL,
];

/// Where a capture writes, prepared (and proven writable) before anything is attached.
///
/// The directory is made by us (or is an empty one the user running swarmtrace owns) and held
/// as a descriptor; every file is created in it with `O_EXCL | O_NOFOLLOW`, mode 0600
/// (`safe_fs`). A `.tar.gz` is created the same way at the start and stays open to the end;
/// its files are staged in a private directory beside it.
#[derive(Debug)]
pub struct BundleOut {
    /// The directory the files go to (a private staging one next to a `.tar.gz`).
    dir: safe_fs::Dir,
    /// Whether we made `dir` (an operator's empty directory is left in place).
    made_dir: bool,
    tarball: Option<Tarball>,
    /// The files created so far, in order.
    created: std::cell::RefCell<Vec<&'static str>>,
}

#[derive(Debug)]
struct Tarball {
    path: PathBuf,
    /// Open since `prepare`: never reopened by name.
    file: File,
    /// The archive's directory, holding the staging directory `stage`.
    parent: safe_fs::Dir,
    stage: std::ffi::OsString,
}

/// Written into a bundle that a failure cut short.
pub const PARTIAL: &str = "PARTIAL.txt";

pub fn is_tarball(p: &Path) -> bool {
    let s = p.to_string_lossy();
    s.ends_with(".tar.gz") || s.ends_with(".tgz")
}

impl BundleOut {
    pub fn prepare(path: &Path) -> Result<Self> {
        Self::prepare_at(path)
            .with_context(|| format!("cannot create the bundle {}", path.display()))
    }

    fn prepare_at(path: &Path) -> Result<Self> {
        if is_tarball(path) {
            let (parent, file) = safe_fs::create_new_file(path)?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("bundle");
            let stage = std::ffi::OsString::from(format!(".{name}.tmp-{}", std::process::id()));
            let stage_path = parent.path().join(&stage);
            let dir = match parent.make_private(&stage, &stage_path) {
                Ok(d) => d,
                Err(e) => {
                    let _ = parent.remove_file(name);
                    return Err(e.into());
                }
            };
            return Ok(Self {
                dir,
                made_dir: true,
                tarball: Some(Tarball {
                    path: path.to_owned(),
                    file,
                    parent,
                    stage,
                }),
                created: Default::default(),
            });
        }
        let existed = std::fs::symlink_metadata(path).is_ok();
        let dir = safe_fs::Dir::create_private(path)?;
        Ok(Self {
            dir,
            made_dir: !existed,
            tarball: None,
            created: Default::default(),
        })
    }

    /// Where the bundle ends up.
    pub fn path(&self) -> &Path {
        match &self.tarball {
            Some(t) => &t.path,
            None => self.dir.path(),
        }
    }

    /// Creates one of the bundle's files (it must not exist yet).
    pub fn create(&self, name: &'static str) -> Result<File> {
        let f = self.dir.create_file(name)?;
        self.created.borrow_mut().push(name);
        Ok(f)
    }

    /// Writes one whole file; a file that could not be written whole is removed, and the
    /// error names it.
    pub fn write(&self, name: &'static str, bytes: &[u8]) -> Result<()> {
        let mut f = self.create(name)?;
        let done = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = done {
            drop(f);
            let _ = self.dir.remove_file(name);
            self.created.borrow_mut().retain(|n| *n != name);
            return Err(e)
                .with_context(|| format!("cannot write {}", self.dir.path().join(name).display()));
        }
        Ok(())
    }

    /// Reads back a file written earlier.
    pub fn open(&self, name: &str) -> Result<File> {
        Ok(self.dir.open_file(name)?)
    }

    /// Whether anything was recorded: a failure after that keeps the bundle (`keep_partial`).
    pub fn recorded_anything(&self) -> bool {
        self.dir
            .open_file("events.ndjson")
            .ok()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.len() > 0)
    }

    /// Packs the staged files into the archive (if any) and removes the staging directory.
    pub fn finish(mut self) -> Result<PathBuf> {
        self.dir
            .sync()
            .with_context(|| format!("cannot sync {}", self.dir.path().display()))?;
        let Some(tarball) = self.tarball.take() else {
            if !self.dir.still_at_path() {
                anyhow::bail!(
                    "{} was {} during the capture: the bundle's files are in the directory that was there (refusing to follow what is there now)",
                    self.dir.path().display(),
                    safe_fs::describe(self.dir.path())
                );
            }
            return Ok(self.dir.path().to_owned());
        };
        let ours =
            safe_fs::stat_of(&tarball.file).is_ok_and(|st| safe_fs::same_file(&st, &tarball.path));
        if !ours {
            anyhow::bail!(
                "{} was {} during the capture: refusing to write through it; the recorded files are kept in {}",
                tarball.path.display(),
                safe_fs::describe(&tarball.path),
                self.dir.path().display()
            );
        }
        if let Err(e) = self.pack(&tarball) {
            return Err(e.context(format!(
                "cannot write {}; the recorded files are kept in {}",
                tarball.path.display(),
                self.dir.path().display()
            )));
        }
        for name in self.created.borrow().iter() {
            let _ = self.dir.remove_file(name);
        }
        tarball
            .parent
            .remove_dir(&tarball.stage)
            .with_context(|| format!("cannot remove {}", self.dir.path().display()))?;
        Ok(tarball.path)
    }

    fn pack(&self, tarball: &Tarball) -> Result<()> {
        let gz = flate2::write::GzEncoder::new(&tarball.file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let top = tarball
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| {
                n.trim_end_matches(".tar.gz")
                    .trim_end_matches(".tgz")
                    .to_owned()
            })
            .unwrap_or_else(|| "bundle".to_owned());
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for name in self.created.borrow().iter() {
            let f = self.dir.open_file(name)?;
            let len = f.metadata()?.len();
            let mut h = tar::Header::new_gnu();
            h.set_size(len);
            h.set_mode(0o600);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, format!("{top}/{name}"), f.take(len))
                .with_context(|| format!("{name}: cannot add it to the archive"))?;
        }
        tar.into_inner()?.finish()?;
        tarball.file.sync_all()?;
        Ok(())
    }

    /// After a failure once something was recorded: says in the bundle why it is partial,
    /// packs what there is, and returns where it is.
    pub fn keep_partial(self, why: &anyhow::Error) -> Result<PathBuf> {
        let note = format!(
            "This bundle is partial: the capture failed before it was complete.\n\nerror: {why:#}\n"
        );
        // Best effort: on a full filesystem even this may not fit.
        let _ = self.write(PARTIAL, note.as_bytes());
        self.finish()
    }

    /// Removes what was made, after a failure before anything was recorded.
    pub fn abandon(self) {
        for name in self.created.borrow().iter() {
            let _ = self.dir.remove_file(name);
        }
        if let Some(t) = &self.tarball {
            let _ = t.parent.remove_dir(&t.stage);
            if let Some(name) = t.path.file_name().and_then(|n| n.to_str()) {
                let _ = t.parent.remove_file(name);
            }
        } else if self.made_dir {
            if let Ok((parent, name)) = safe_fs::split(self.dir.path()) {
                if let Ok(p) = safe_fs::Dir::open(&parent) {
                    let _ = p.remove_dir(&name);
                }
            }
        }
    }
}

/// The dropped and unanswered handshake packets as pcapng, each with its verdict in the
/// comment. Headers are rebuilt from what the kernel programs reported: addresses, ports,
/// sequence numbers, flags and timestamps are the real ones; options other than the
/// timestamp are typical values, and there is no payload.
pub fn pcapng(hs: &Recorded, ctx: &verdict::Context) -> std::io::Result<Vec<u8>> {
    use crate::evidence::pcapng::{PcapngWriter, TcpPacket, TCP_SYN};
    use crate::trace::event::PacketKind;
    use crate::trace::tracker::Outcome;
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

/// `system.json`, in the current format.
pub fn system_json(
    result: &crate::trace::session::RunResult,
    context: &verdict::Context,
    duration_s: f64,
) -> v2::System {
    use crate::clock::WallClock;
    let facts = &result.facts;
    let o = &facts.offsets;
    let namespaces = result
        .after
        .namespaces
        .iter()
        .map(|(name, file)| {
            let (addresses, routes) = crate::kernel::namespaces::describe(file);
            v2::Namespace {
                name: name.clone(),
                inode: crate::kernel::netns::inode_of_file(file),
                addresses,
                routes,
                counters_before: result.before.counters.get(name).cloned(),
                counters_after: result.after.counters.get(name).cloned(),
            }
        })
        .collect();
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .ok()
    };
    v2::System {
        format: FORMAT,
        swarmtrace: env!("CARGO_PKG_VERSION"),
        captured_at: crate::clock::rfc3339_micros(
            WallClock::sample().to_unix_ns(WallClock::monotonic_now_ns()),
        ),
        duration_s,
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: json!({
            "release": facts.release,
            "version": read("/proc/version"),
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
                // The fast paths' reads as found on this kernel (null: the general path, a
                // read per field): which record layout the drop program reads in place, and
                // the windows of `sk_buff` and `net_device` read at once.
                "kfree_skb.layout": (o.tp_layout != u32::MAX).then_some(o.tp_layout),
                "sk_buff.header_window": (o.skb_hdr_window != u32::MAX)
                    .then_some([o.skb_hdr_window, swarmtrace_common::SKB_HDR_WINDOW]),
                "net_device.window": (o.dev_window != u32::MAX)
                    .then_some([o.dev_window, o.dev_window_len]),
            },
        }),
        capabilities: read("/proc/self/status")
            .and_then(|s| crate::privileges::cap_eff(&s).map(str::to_owned)),
        sysctls: crate::kernel::namespaces::sysctls(),
        namespaces,
        docker: crate::docker::facts(&crate::docker::socket_path()),
        verdict_context: format::VerdictContext::from(context),
    }
}
