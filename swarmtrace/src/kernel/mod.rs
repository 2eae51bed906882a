//! Everything swarmtrace reads from the running kernel goes through this module: tracepoint
//! layouts, drop-reason names, structure offsets, code symbols, namespace names, addresses,
//! routes, sysctls and counters (`run`, `capture` and `doctor` alike).
//! Each reader takes a path, so the unit tests run on fixture files from real kernels.

pub mod btf;
pub mod hostns;
pub mod iptables_save;
pub mod ipvs;
pub mod kallsyms;
pub mod namespaces;
pub mod netns;
pub mod netstat;
pub mod routes;
pub mod rtnl;
pub mod sysctl;
pub mod tool;
pub mod tracefs;

use crate::name::Name;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use swarmtrace_common::KernelOffsets;

use self::btf::Btf;
use self::tracefs::TracepointFormat;

/// Where the kernel's facts are read from. `live()` is the running kernel; tests point these at
/// fixture directories.
#[derive(Debug, Clone)]
pub struct Sources {
    pub kfree_skb_format: PathBuf,
    pub btf: PathBuf,
    pub kallsyms: PathBuf,
    pub osrelease: PathBuf,
}

impl Sources {
    pub fn live(tracefs: &Path) -> Self {
        Self {
            kfree_skb_format: tracefs.join("events/skb/kfree_skb/format"),
            btf: PathBuf::from("/sys/kernel/btf/vmlinux"),
            kallsyms: PathBuf::from("/proc/kallsyms"),
            osrelease: PathBuf::from("/proc/sys/kernel/osrelease"),
        }
    }
}

/// Names of `enum skb_drop_reason`, without the `SKB_DROP_REASON_` prefix.
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    /// Shared, so that every drop carries its reason without a copy.
    names: BTreeMap<u32, Name>,
}

impl DropReasons {
    pub fn from_names(names: BTreeMap<u32, String>) -> Self {
        Self {
            names: names
                .into_iter()
                .map(|(v, n)| (v, Name::intern(&n)))
                .collect(),
        }
    }

    pub fn name(&self, value: u32) -> String {
        self.shared_name(value).to_string()
    }

    /// [`Self::name`] without copying it (once per drop): only a value this kernel does not
    /// name costs an allocation.
    pub fn shared_name(&self, value: u32) -> Name {
        // Every drop of a kernel without drop reasons is one of these two.
        const TCP_DROP: Name = Name::from_static("TCP_DROP");
        const UNKNOWN: Name = Name::from_static("UNKNOWN");
        if value == swarmtrace_common::REASON_TCP_DROP {
            return TCP_DROP.clone();
        }
        match self.names.get(&value) {
            Some(n) => n.clone(),
            None if self.names.is_empty() => UNKNOWN.clone(),
            None => format!("REASON_{value}").into(),
        }
    }

    pub fn value(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find_map(|(v, n)| (&**n == name).then_some(*v))
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// The facts the kernel programs and the decoder need, read from one kernel.
#[derive(Debug, Clone)]
pub struct KernelFacts {
    pub release: String,
    pub offsets: KernelOffsets,
    pub reasons: DropReasons,
    /// False before 5.17: kfree_skb carries no reason; drops are named by location only.
    pub has_drop_reasons: bool,
}

impl KernelFacts {
    /// Reads the tracepoint format and BTF; kallsyms is read separately (it is large and only
    /// user space needs it).
    pub fn read(src: &Sources) -> Result<Self> {
        let format = TracepointFormat::read(&src.kfree_skb_format).with_context(|| {
            format!(
                "cannot read the skb:kfree_skb tracepoint description ({})",
                src.kfree_skb_format.display()
            )
        })?;
        let btf = Btf::from_file(&src.btf).with_context(|| {
            format!(
                "cannot read the kernel's BTF ({}); swarmtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.8 or later)",
                src.btf.display()
            )
        })?;
        let release = release(&src.osrelease).unwrap_or_else(|| "unknown".to_owned());
        Self::from_parts(release, &format, &btf)
    }

    pub fn from_parts(release: String, format: &TracepointFormat, btf: &Btf) -> Result<Self> {
        let tp = |name: &str| -> Result<u32> { Ok(format.require(name)?.offset) };
        let optional = |name: &str| format.field(name).map_or(u32::MAX, |f| f.offset);
        let field = |ty: &str, path: &str| -> Result<u32> {
            let f = btf
                .field(ty, path)
                .with_context(|| format!("BTF has no {ty}.{path}"))?;
            Ok(f.offset)
        };
        let skb_nh = btf.field("sk_buff", "network_header")?;
        if skb_nh.size != 2 {
            bail!(
                "sk_buff.network_header is {} bytes, expected 2",
                skb_nh.size
            );
        }
        let offsets = KernelOffsets {
            tp_skbaddr: tp("skbaddr")?,
            tp_location: tp("location")?,
            tp_reason: optional("reason"),
            tp_rx_sk: optional("rx_sk"),
            skb_head: field("sk_buff", "head")?,
            skb_network_header: skb_nh.offset,
            skb_dev: field("sk_buff", "dev")?,
            skb_sk: field("sk_buff", "sk")?,
            dev_ifindex: field("net_device", "ifindex")?,
            dev_name: field("net_device", "name")?,
            dev_nd_net: field("net_device", "nd_net.net")?,
            net_inum: field("net", "ns.inum")?,
            sk_net: field("sock", "__sk_common.skc_net.net")?,
            reason_consumed: u32::MAX,
            tp_layout: u32::MAX,
            skb_hdr_window: u32::MAX,
            dev_window: u32::MAX,
            dev_window_len: 0,
        }
        .with_fast_paths(format.record_end());
        let has_drop_reasons = offsets.tp_reason != u32::MAX;
        // The tracepoint's own list is what the kernel prints; BTF is the fallback.
        let mut names = format.symbols("reason");
        if names.is_empty() && has_drop_reasons {
            names = btf_drop_reasons(btf);
        }
        let mut offsets = offsets;
        // Not in the tracepoint's symbol list (it is not a drop); BTF knows it.
        offsets.reason_consumed = btf
            .enum_variants("skb_drop_reason")
            .ok()
            .and_then(|v| v.into_iter().find(|(n, _)| n == "SKB_CONSUMED"))
            .and_then(|(_, v)| u32::try_from(v).ok())
            .unwrap_or(u32::MAX);
        Ok(Self {
            release,
            offsets,
            reasons: DropReasons::from_names(names),
            has_drop_reasons,
        })
    }
}

/// `enum skb_drop_reason` from BTF, without the `SKB_DROP_REASON_` prefix and without `MAX`
/// (a bound, not a reason; the tracepoint's list leaves it out too). Empty when the kernel
/// has no such enum (before 5.17).
pub fn btf_drop_reasons(btf: &Btf) -> BTreeMap<u32, String> {
    btf.enum_variants("skb_drop_reason")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(n, v)| {
            let n = n.strip_prefix("SKB_DROP_REASON_")?;
            (n != "MAX").then_some((u32::try_from(v).ok()?, n.to_owned()))
        })
        .collect()
}

/// The kernel's release (`/proc/sys/kernel/osrelease`).
pub fn release(osrelease: &Path) -> Option<String> {
    std::fs::read_to_string(osrelease)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `6.18.44-foo` -> (6, 18).
pub fn version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// The signals this kernel lacks, each with what degrades; empty on a recent kernel.
pub fn lacking(facts: &KernelFacts, kallsyms: &kallsyms::Kallsyms, tcx: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !facts.has_drop_reasons {
        out.push("drop reasons (5.17+): drops are named by their code location".to_owned());
    }
    if facts.reasons.value("TCP_RFC7323_TW_PAWS").is_none() {
        out.push("the TCP_RFC7323_TW_PAWS reason (6.16+): PAWS drops are told from the TIME_WAIT drop path and the PAWS counters".to_owned());
    }
    if !tcx {
        out.push("TCX (6.6+): the classifiers hang off a clsact qdisc, removed at exit".to_owned());
    }
    if !facts.has_drop_reasons && !kallsyms.has("tcp_drop") {
        out.push(
            "a tcp_drop symbol (inlined here): TCP drops that skip kfree_skb are not seen"
                .to_owned(),
        );
    }
    out
}

/// The output of a tool that reads the kernel for us (`ip`, `iptables-save`): None when it is
/// not installed in the system's directories, its stderr when it fails. Bounded in output and
/// time ([`tool::run`]).
pub fn run_tool(program: &str, args: &[&str]) -> Option<Result<String, String>> {
    tool::run(program, args)
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted (as inside
/// `ip netns exec`, which remounts /sys).
pub fn tracefs() -> Result<PathBuf> {
    if let Some(p) = tracefs::usable() {
        return Ok(p);
    }
    let target = tracefs::CANDIDATES[0];
    let rc = mount_tracefs(target);
    if rc.is_ok() && Path::new(target).join("events").is_dir() {
        log::info!("mounted tracefs at {target}");
        return Ok(PathBuf::from(target));
    }
    bail!(
        "tracefs is not mounted and mounting it failed ({}): run `mount -t tracefs tracefs /sys/kernel/tracing` as root, then retry",
        rc.err().map_or_else(|| "no events directory".to_owned(), |e| e.to_string())
    )
}

fn mount_tracefs(target: &str) -> std::io::Result<()> {
    let src = c"tracefs";
    let target = std::ffi::CString::new(target)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::io::Read;
    use std::path::PathBuf;

    pub fn dir(kernel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(kernel)
    }

    /// The fixture BTF blobs are stored gzipped.
    pub fn btf(kernel: &str) -> Vec<u8> {
        let f = std::fs::File::open(dir(kernel).join("vmlinux.btf.gz")).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(f)
            .read_to_end(&mut out)
            .unwrap();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_6_18() {
        let dir = fixtures::dir("linux-6.18");
        let format = TracepointFormat::read(&dir.join("kfree_skb.format")).unwrap();
        let btf = Btf::parse(&fixtures::btf("linux-6.18")).unwrap();
        let facts = KernelFacts::from_parts("6.18".into(), &format, &btf).unwrap();
        let o = facts.offsets;
        assert_eq!(
            (o.tp_skbaddr, o.tp_location, o.tp_rx_sk, o.tp_reason),
            (8, 16, 24, 36)
        );
        assert!(facts.has_drop_reasons);
        assert_eq!(facts.reasons.name(3), "NO_SOCKET");
        assert_eq!(facts.reasons.value("TCP_RFC7323_TW_PAWS"), Some(38));
        assert_eq!(facts.reasons.name(999), "REASON_999");
        // Cross-checked against the fixture's BTF by an independent parser (see btf.rs tests).
        assert_eq!(o.skb_dev, btf.field("sk_buff", "dev").unwrap().offset);
        assert!(o.skb_network_header > o.skb_dev);
        assert_eq!(o.dev_name, btf.field("net_device", "name").unwrap().offset);
    }

    /// A layout the program was not compiled for is read field by field, never guessed.
    #[test]
    fn unknown_layouts_take_the_general_path() {
        let known = KernelOffsets {
            tp_skbaddr: 8,
            tp_reason: 36,
            skb_head: 192,
            skb_network_header: 180,
            ..Default::default()
        }
        .with_fast_paths(40);
        assert_eq!((known.tp_layout, known.skb_hdr_window), (2, 176));
        // A record that ends before the reason's last byte: never read with plain loads.
        assert_eq!(known.with_fast_paths(38).tp_layout, u32::MAX);
        let moved = KernelOffsets {
            tp_reason: 40,
            skb_head: 240,
            ..known
        }
        .with_fast_paths(44);
        assert_eq!(
            (moved.tp_layout, moved.skb_hdr_window),
            (u32::MAX, u32::MAX)
        );
        // `head` before the window's start, or not 8-aligned: two reads.
        for head in [168, 188] {
            let o = KernelOffsets {
                skb_head: head,
                ..known
            }
            .with_fast_paths(40);
            assert_eq!(o.skb_hdr_window, u32::MAX, "head at {head}");
        }
    }

    /// The device window holds `ifindex` and `name` whole and is no larger than the program's
    /// scratch space; `nd_net` is in it or wholly outside it (read apart).
    fn assert_device_window(o: &KernelOffsets, k: &str) {
        let (start, end) = (o.dev_window, o.dev_window + o.dev_window_len);
        assert!(o.dev_window_len <= swarmtrace_common::DEV_WINDOW, "{k}");
        let inside = |at: u32, n: u32| at >= start && at + n <= end;
        assert!(inside(o.dev_ifindex, 4) && inside(o.dev_name, 16), "{k}");
        let net_outside = o.dev_nd_net + 8 <= start || o.dev_nd_net >= end;
        assert!(inside(o.dev_nd_net, 8) || net_outside, "{k}");
    }

    /// `ifindex` and `name` too far apart for the window: a read each; `nd_net` too far from
    /// them: the window without it.
    #[test]
    fn device_windows_of_moved_layouts() {
        let near = KernelOffsets {
            dev_ifindex: 224,
            dev_name: 280,
            dev_nd_net: 264,
            ..Default::default()
        };
        let w = |o: KernelOffsets| {
            let o = o.with_fast_paths(40);
            (o.dev_window, o.dev_window_len)
        };
        assert_eq!(w(near), (224, 72));
        // nd_net before both, still near.
        assert_eq!(
            w(KernelOffsets {
                dev_nd_net: 176,
                ..near
            }),
            (176, 120)
        );
        // 16 bytes earlier the whole would not fit: the window without it.
        assert_eq!(
            w(KernelOffsets {
                dev_nd_net: 160,
                ..near
            }),
            (224, 72)
        );
        let far_net = KernelOffsets {
            dev_nd_net: 1264,
            ..near
        };
        assert_eq!(w(far_net), (224, 72));
        assert_device_window(&far_net.with_fast_paths(40), "far nd_net");
        // 5.10's and 6.1's layouts, and name after a far ifindex.
        for (ifindex, name) in [(256, 0), (216, 0), (16, 600)] {
            let o = KernelOffsets {
                dev_ifindex: ifindex,
                dev_name: name,
                ..near
            };
            assert_eq!(w(o), (u32::MAX, 0), "ifindex {ifindex} name {name}");
        }
        // Exactly DEV_WINDOW: still one read; a byte more: none.
        let edge = KernelOffsets {
            dev_ifindex: 0,
            dev_name: 112,
            dev_nd_net: 2000,
            ..near
        };
        assert_eq!(w(edge), (0, 128));
        assert_eq!(
            w(KernelOffsets {
                dev_name: 113,
                ..edge
            }),
            (u32::MAX, 0)
        );
    }

    /// Every kernel we have fixtures from (the host and Debian's 5.10, 6.1 and 6.12 guests):
    /// the facts the programs need are found, and what a kernel lacks is reported as such.
    #[test]
    fn facts_of_four_kernels() {
        // (fixture, has reasons, has TW_PAWS, has rx_sk, reason field offset, record layout,
        // net_device window: start and length)
        let kernels = [
            (
                "linux-5.10",
                false,
                false,
                false,
                u32::MAX,
                0,
                (u32::MAX, 0),
            ),
            ("linux-6.1", true, false, false, 28, 1, (u32::MAX, 0)),
            ("linux-6.12", true, false, true, 36, 2, (224, 96)),
            ("linux-6.18", true, true, true, 36, 2, (224, 72)),
        ];
        for (k, reasons, tw_paws, rx_sk, reason_off, layout, dev_window) in kernels {
            let dir = fixtures::dir(k);
            let format = TracepointFormat::read(&dir.join("kfree_skb.format")).unwrap();
            let btf = Btf::parse(&fixtures::btf(k)).unwrap();
            let facts = KernelFacts::from_parts(k.into(), &format, &btf)
                .unwrap_or_else(|e| panic!("{k}: {e:#}"));
            let o = facts.offsets;
            assert_eq!(facts.has_drop_reasons, reasons, "{k}");
            assert_eq!(o.tp_reason, reason_off, "{k}");
            assert_eq!(o.tp_rx_sk != u32::MAX, rx_sk, "{k}");
            // The program's fast paths: the record read with plain loads, `head` and
            // `network_header` in one read.
            assert_eq!(o.tp_layout, layout, "{k}");
            assert_eq!(
                swarmtrace_common::TP_LAYOUTS[layout as usize],
                (o.tp_skbaddr, o.tp_reason),
                "{k}"
            );
            // The program reads no further than the record goes (the kernel checks it at
            // attach; 5.10's and 6.1's records end at 26 and 32 bytes).
            assert!(
                swarmtrace_common::tp_layout_end(layout as usize) <= format.record_end(),
                "{k}"
            );
            assert_eq!(o.skb_hdr_window, o.skb_network_header & !7, "{k}");
            assert!(
                o.skb_head + 8 - o.skb_hdr_window <= swarmtrace_common::SKB_HDR_WINDOW,
                "{k}"
            );
            // `ifindex`, `name` and `nd_net` in one read of `net_device` (6.12, 6.18); a
            // read each where `name` is 200 bytes and more from `ifindex` (5.10, 6.1).
            assert_eq!((o.dev_window, o.dev_window_len), dev_window, "{k}");
            if o.dev_window != u32::MAX {
                assert_device_window(&o, k);
            }
            assert_eq!(
                facts.reasons.value("TCP_RFC7323_TW_PAWS").is_some(),
                tw_paws,
                "{k}"
            );
            // SKB_CONSUMED came in 6.2; the numbers differ between kernels (NO_SOCKET is 2
            // on 6.1, 3 later), which is why they are read, never written down.
            assert_eq!(o.reason_consumed != u32::MAX, k >= "linux-6.12", "{k}");
            if reasons {
                assert!(facts.reasons.value("NO_SOCKET").is_some(), "{k}");
                assert_eq!(
                    facts
                        .reasons
                        .name(facts.reasons.value("NO_SOCKET").unwrap()),
                    "NO_SOCKET"
                );
                assert!(facts.reasons.value("NETFILTER_DROP").is_some(), "{k}");
            } else {
                assert!(facts.reasons.is_empty(), "{k}");
                assert_eq!(facts.reasons.name(0), "UNKNOWN", "{k}");
            }
            // The structure offsets are inside their structures and distinct.
            let skb = btf.struct_size("sk_buff").unwrap();
            for off in [o.skb_head, o.skb_network_header, o.skb_dev, o.skb_sk] {
                assert!(off < skb, "{k}: {off} >= sizeof(sk_buff) {skb}");
            }
            assert!(o.dev_name < btf.struct_size("net_device").unwrap(), "{k}");
            assert!(o.net_inum < btf.struct_size("net").unwrap(), "{k}");
            // Code locations, also in modules (nft_do_chain is in nf_tables on Debian).
            let ks = kallsyms::Kallsyms::read(&dir.join("kallsyms.excerpt")).unwrap();
            let text = std::fs::read_to_string(dir.join("kallsyms.excerpt")).unwrap();
            for sym in ["tcp_v4_rcv", "nft_do_chain"] {
                let addr = text
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.get(2) == Some(&sym)).then(|| u64::from_str_radix(f[0], 16).unwrap())
                    })
                    .unwrap_or_else(|| panic!("{k}: no {sym} in the excerpt"));
                assert_eq!(ks.symbolize(addr + 0x10), format!("{sym}+0x10"), "{k}");
            }
            // The counters the verdicts read.
            let c = netstat::parse(
                &(std::fs::read_to_string(dir.join("netstat")).unwrap()
                    + &std::fs::read_to_string(dir.join("snmp")).unwrap()),
            );
            for key in [
                "TcpExt.ListenOverflows",
                "TcpExt.ListenDrops",
                "TcpExt.PAWSEstab",
                "TcpExt.IPReversePathFilter",
                "Tcp.OutRsts",
            ] {
                assert!(c.contains_key(key), "{k}: {key}");
            }
            assert_eq!(
                c.contains_key("TcpExt.PAWSTimewait"),
                k == "linux-6.18",
                "{k}"
            );
        }
    }

    #[test]
    fn reasons_fall_back_to_btf() {
        let dir = fixtures::dir("linux-6.18");
        let mut format = TracepointFormat::read(&dir.join("kfree_skb.format")).unwrap();
        format.print_fmt = "\"no symbols here\"".into();
        let btf = Btf::parse(&fixtures::btf("linux-6.18")).unwrap();
        let facts = KernelFacts::from_parts("6.18".into(), &format, &btf).unwrap();
        assert_eq!(facts.reasons.name(12), "NETFILTER_DROP");
        assert_eq!(facts.reasons.name(38), "TCP_RFC7323_TW_PAWS");
        assert_eq!(facts.reasons.value("MAX"), None);
        assert_eq!(facts.reasons.len(), btf_drop_reasons(&btf).len());
        assert!(btf_drop_reasons(&Btf::parse(&fixtures::btf("linux-5.10")).unwrap()).is_empty());
    }

    #[test]
    fn versions() {
        assert_eq!(version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(version("5.4.0"), Some((5, 4)));
        assert_eq!(version("weird"), None);
    }
}
