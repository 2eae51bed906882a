//! TCP/IP counters of a namespace (`/proc/net/netstat` and `/proc/net/snmp`): pairs of
//! lines, a header of names and a line of values, per section (`TcpExt:`, `IpExt:`, ...).

use std::collections::BTreeMap;
use std::path::Path;

/// The counters the verdicts use to attribute silent drops.
pub const WATCHED: [&str; 9] = [
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.PAWSPassive",
    "TcpExt.PAWSActive",
    "TcpExt.PAWSEstab",
    "TcpExt.PAWSTimewait",
    "TcpExt.IPReversePathFilter",
    "Tcp.OutRsts",
];

/// `Section.Name` -> value.
pub type Counters = BTreeMap<String, u64>;

/// Parses netstat/snmp text; malformed pairs are skipped, not fatal. A header line is
/// paired with the next line of the same section, so blank or stray lines cannot shift the
/// pairing.
pub fn parse(text: &str) -> Counters {
    let mut out = Counters::new();
    let mut header: Option<(&str, &str)> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((sec, rest)) = line.split_once(':') else {
            header = None;
            continue;
        };
        match header {
            Some((hsec, names)) if hsec == sec => {
                for (n, v) in names.split_whitespace().zip(rest.split_whitespace()) {
                    // Some snmp values are signed (Tcp.MaxConn -1); keep what parses as u64.
                    if let Ok(v) = v.parse::<u64>() {
                        out.insert(format!("{sec}.{n}"), v);
                    }
                }
                header = None;
            }
            _ => header = Some((sec, rest)),
        }
    }
    out
}

/// Reads the counters of the current thread's namespace.
pub fn read_current() -> std::io::Result<Counters> {
    let mut text = std::fs::read_to_string("/proc/thread-self/net/netstat")?;
    text.push('\n');
    text.push_str(&std::fs::read_to_string("/proc/thread-self/net/snmp")?);
    Ok(parse(&text))
}

/// Reads the counters of the namespace in `ns_file`.
pub fn read_in(ns_file: &Path) -> std::io::Result<Counters> {
    super::netns::within(ns_file, read_current)?
}

/// The watched counters that rose between two readings.
pub fn rises(before: &Counters, after: &Counters) -> BTreeMap<String, u64> {
    WATCHED
        .iter()
        .filter_map(|k| {
            let b = before.get(*k).copied().unwrap_or(0);
            let a = after.get(*k)?;
            let d = a.saturating_sub(b);
            (d > 0).then(|| (k.to_string(), d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(crate::kernel::fixtures::dir("linux-6.18").join(name)).unwrap()
    }

    #[test]
    fn parses_6_18_netstat_and_snmp() {
        let c = parse(&(fixture("netstat") + &fixture("snmp")));
        for k in [
            "TcpExt.ListenOverflows",
            "TcpExt.PAWSTimewait",
            "TcpExt.IPReversePathFilter",
            "Tcp.OutRsts",
            "IpExt.InOctets",
        ] {
            assert!(c.contains_key(k), "{k} missing");
        }
        // Gone since tcp_tw_recycle was removed (4.12): whichever the kernel has.
        assert!(!c.contains_key("TcpExt.PAWSPassive"));
    }

    #[test]
    fn rises_only_watched_and_positive() {
        let before = parse("TcpExt: ListenOverflows ListenDrops SyncookiesSent\nTcpExt: 1 1 0\n");
        let after = parse("TcpExt: ListenOverflows ListenDrops SyncookiesSent\nTcpExt: 4 1 9\n");
        let r = rises(&before, &after);
        assert_eq!(r.len(), 1);
        assert_eq!(r["TcpExt.ListenOverflows"], 3);
    }

    #[test]
    fn malformed_is_skipped() {
        let c = parse("TcpExt: A B\nIpExt: 1 2\nTcpExt: C\nTcpExt: x\nTcp: D\nTcp: 5\n");
        assert_eq!(c.len(), 1);
        assert_eq!(c["Tcp.D"], 5);
        // A blank line between files (netstat + snmp read together) does not shift pairs.
        let c = parse("TcpExt: A\nTcpExt: 1\n\nTcp: RetransSegs\nTcp: 3\n");
        assert_eq!(c["TcpExt.A"], 1);
        assert_eq!(c["Tcp.RetransSegs"], 3);
    }
}
