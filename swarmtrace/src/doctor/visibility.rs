//! What `swarmtrace run` can see on this kernel: BTF, tracefs, the ring buffer, drop reasons,
//! TCP_RFC7323_TW_PAWS and TCX.

use super::report::{Finding, Severity};
use super::KernelView;
use crate::kernel::tracefs::{Tracefs, TracepointFormat};

pub(super) fn kernel(k: &KernelView, root: bool, f: &mut Vec<Finding>) {
    let version = k.release.as_deref().and_then(crate::kernel::version);
    let at_least = |v: (u32, u32)| version.map(|have| have >= v);
    f.push(Finding::new(
        "kernel",
        Severity::Info,
        format!(
            "Linux {}",
            k.release.as_deref().unwrap_or("(release unknown)")
        ),
    ));
    if !root {
        f.push(
            Finding::new("privileges", Severity::Info, "`swarmtrace run` needs root")
                .detail("Or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (and CAP_SYS_ADMIN to enter Docker's namespaces)."),
        );
    }
    f.push(if k.btf {
        Finding::new("btf", Severity::Ok, "BTF present (/sys/kernel/btf/vmlinux)")
    } else {
        Finding::new("btf", Severity::Warning, "no BTF (/sys/kernel/btf/vmlinux): `swarmtrace run` cannot start")
            .detail("swarmtrace reads structure offsets for its kernel programs from the kernel's BTF.")
            .fix("Use a kernel built with CONFIG_DEBUG_INFO_BTF=y (distribution kernels since about 5.8 are).")
    });
    f.push(match &k.tracefs {
        Tracefs::Mounted(p) => Finding::new("tracefs", Severity::Ok, format!("tracefs mounted at {}", p.display())),
        Tracefs::NotMounted => Finding::new("tracefs", Severity::Info, "tracefs is not mounted (`swarmtrace run` mounts it at /sys/kernel/tracing)"),
        Tracefs::Unsupported => Finding::new("tracefs", Severity::Warning, "no tracefs in this kernel: `swarmtrace run` cannot attach to skb:kfree_skb")
            .detail("Without the tracepoint no drop is seen; only unanswered handshakes and counters remain.")
            .fix("Use a kernel with CONFIG_FTRACE/tracefs."),
    });
    f.push(match at_least((5, 8)) {
        Some(true) => Finding::new(
            "ring-buffer",
            Severity::Ok,
            "BPF ring buffer available (5.8+)",
        ),
        Some(false) => Finding::new(
            "ring-buffer",
            Severity::Warning,
            "kernel older than 5.8: no BPF ring buffer, `swarmtrace run` cannot start",
        )
        .fix("Upgrade to Linux 5.8 or later."),
        None => Finding::new(
            "ring-buffer",
            Severity::Info,
            "kernel release unknown: BPF ring buffer (5.8+) not checked",
        ),
    });

    // Drop reasons: the live tracepoint format, else BTF, else the version.
    let format = k
        .kfree_skb_format
        .as_deref()
        .and_then(|t| TracepointFormat::parse(t).ok());
    let (has_reason, names, source): (Option<bool>, Option<Vec<String>>, &str) = match &format {
        Some(fmt) => (
            Some(fmt.field("reason").is_some()),
            Some(fmt.symbols("reason").into_values().collect()),
            "the kfree_skb tracepoint",
        ),
        None => match &k.btf_drop_reasons {
            Some(n) if !n.is_empty() => (Some(true), Some(n.clone()), "BTF"),
            _ => (at_least((5, 17)), None, "the kernel version"),
        },
    };
    let count = names.as_ref().map(|n| n.len()).unwrap_or(0);
    f.push(match has_reason {
        Some(true) => Finding::new(
            "drop-reasons",
            Severity::Ok,
            if count > 0 {
                format!("kfree_skb carries drop reasons ({count} names, from {source})")
            } else {
                format!("kfree_skb carries drop reasons (from {source})")
            },
        ),
        Some(false) => Finding::new("drop-reasons", Severity::Warning, "kfree_skb carries no drop reason (before Linux 5.17)")
            .detail("`swarmtrace run` still sees every drop, but names it by code location only (e.g. tcp_v4_rcv, nft_do_chain), and its verdicts lean on the counters.")
            .fix("Linux 5.17 or later for drop reasons; 6.16+ for TCP_RFC7323_TW_PAWS."),
        None => Finding::new("drop-reasons", Severity::Info, "drop reasons not checked (kernel release unknown, tracepoint format unreadable)"),
    });
    let paws = match &names {
        Some(n) if !n.is_empty() => Some(n.iter().any(|n| n == "TCP_RFC7323_TW_PAWS")),
        _ => at_least((6, 16)),
    };
    f.push(match paws {
        Some(true) => Finding::new("tw-paws-reason", Severity::Ok, "the TCP_RFC7323_TW_PAWS drop reason exists (6.16+)"),
        Some(false) => Finding::new("tw-paws-reason", Severity::Info, "no TCP_RFC7323_TW_PAWS drop reason (it came in Linux 6.16)")
            .detail("A SYN dropped by PAWS against a TIME_WAIT socket shows as NOT_SPECIFIED in the TIME_WAIT path; `swarmtrace run` then bases the paws-timestamps verdict on that drop path and the PAWSTimewait/PAWSEstab counters."),
        None => Finding::new("tw-paws-reason", Severity::Info, "TCP_RFC7323_TW_PAWS not checked (kernel release unknown)"),
    });
    f.push(match at_least((6, 6)) {
        Some(true) => Finding::new("tcx", Severity::Ok, "TCX available (6.6+): classifiers attach without a qdisc"),
        Some(false) => Finding::new("tcx", Severity::Info, "no TCX (before 6.6): classifiers hang off a clsact qdisc")
            .detail("`swarmtrace run` adds a clsact qdisc on the watched interfaces (and leaves other qdiscs alone); it works the same."),
        None => Finding::new("tcx", Severity::Info, "TCX (6.6+) not checked (kernel release unknown)"),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::fake::*;

    #[test]
    fn kernel_capabilities() {
        let r = Fake::plain().run(&[]);
        for id in [
            "btf",
            "tracefs",
            "ring-buffer",
            "drop-reasons",
            "tw-paws-reason",
            "tcx",
        ] {
            assert_eq!(worst(&r, id), Severity::Ok, "{id}");
        }
        assert!(r
            .by_id("drop-reasons")
            .next()
            .unwrap()
            .title
            .contains("127 names"));

        // 5.15: no reasons in the tracepoint, ring buffer yes, TCX no.
        let mut h = Fake::plain();
        h.kernel.release = Some("5.15.0-91-generic".into());
        h.kernel.kfree_skb_format = Some(
            "name: kfree_skb\nformat:\n\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\nprint fmt: \"skbaddr=%p protocol=%u location=%p\", REC->skbaddr, REC->protocol, REC->location\n".into(),
        );
        let r = h.run(&[]);
        assert_eq!(worst(&r, "drop-reasons"), Severity::Warning);
        assert_eq!(worst(&r, "tw-paws-reason"), Severity::Info);
        assert_eq!(worst(&r, "tcx"), Severity::Info);
        assert_eq!(worst(&r, "ring-buffer"), Severity::Ok);
        assert_eq!(r.serious(), 0);

        // 6.8, tracefs not mounted, names from BTF without the PAWS reason.
        let mut h = Fake::plain();
        h.kernel.release = Some("6.8.0".into());
        h.kernel.tracefs = Tracefs::NotMounted;
        h.kernel.kfree_skb_format = None;
        h.kernel.btf_drop_reasons = Some(vec!["NOT_SPECIFIED".into(), "NO_SOCKET".into()]);
        let r = h.run(&[]);
        assert_eq!(worst(&r, "tracefs"), Severity::Info);
        assert!(r
            .by_id("drop-reasons")
            .next()
            .unwrap()
            .title
            .contains("from BTF"));
        assert_eq!(worst(&r, "tw-paws-reason"), Severity::Info);
        assert_eq!(worst(&r, "tcx"), Severity::Ok);

        // Nothing readable: the version decides.
        h.kernel.btf_drop_reasons = None;
        h.kernel.release = Some("6.15.1".into());
        let r = h.run(&[]);
        assert!(r
            .by_id("drop-reasons")
            .next()
            .unwrap()
            .title
            .contains("from the kernel version"));
        assert_eq!(worst(&r, "tw-paws-reason"), Severity::Info);
        h.kernel.release = Some("6.16.0".into());
        assert_eq!(worst(&h.run(&[]), "tw-paws-reason"), Severity::Ok);

        // An old, bare kernel.
        let mut h = Fake::plain();
        h.kernel = KernelView {
            release: Some("4.19.0".into()),
            btf: false,
            tracefs: Tracefs::Unsupported,
            kfree_skb_format: None,
            btf_drop_reasons: None,
        };
        let r = h.run(&[]);
        for id in ["btf", "tracefs", "ring-buffer", "drop-reasons"] {
            assert_eq!(worst(&r, id), Severity::Warning, "{id}");
        }
        assert_eq!(r.serious(), 0, "what run can see never fails doctor");
    }

    #[test]
    fn not_root_is_said() {
        let mut h = Fake::plain();
        h.scope.root = false;
        h.scope.initial = None;
        h.scope.note = Some("entering them needs root".into());
        let r = h.run(&[]);
        assert_eq!(worst(&r, "scope"), Severity::Info);
        assert!(r
            .by_id("scope")
            .next()
            .unwrap()
            .detail
            .contains("entering them needs root"));
        assert_eq!(worst(&r, "privileges"), Severity::Info);
    }
}
