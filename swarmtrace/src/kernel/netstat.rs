//! TCP/IP counters of a namespace (`/proc/net/netstat` and `/proc/net/snmp`): pairs of
//! lines, a header of names and a line of values, per section (`TcpExt:`, `IpExt:`, ...).
//! With them, the namespace's conntrack statistics (`/proc/net/stat/nf_conntrack`) and the fill
//! of its conntrack table (`nf_conntrack_count` of `nf_conntrack_max`), as `Conntrack.*`.

use std::collections::BTreeMap;
use std::path::Path;

/// The counters the verdicts use to attribute silent drops.
pub const WATCHED: [&str; 15] = [
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.PAWSPassive",
    "TcpExt.PAWSActive",
    "TcpExt.PAWSEstab",
    "TcpExt.PAWSTimewait",
    "TcpExt.IPReversePathFilter",
    "Tcp.OutRsts",
    // Packets whose checksum did not match their bytes (an offload or a link broke them).
    "Tcp.InCsumErrors",
    "Udp.InCsumErrors",
    "IpExt.InCsumErrors",
    // Conntrack could not track a packet and dropped it (its table full: no room and nothing
    // to evict), made room by evicting an unconfirmed entry, or lost an insert race.
    "Conntrack.drop",
    "Conntrack.early_drop",
    "Conntrack.insert_failed",
];

/// Entries in the namespace's conntrack table at the reading (`nf_conntrack_count`).
pub const CONNTRACK_COUNT: &str = "Conntrack.count";
/// The limit of each namespace's table (`nf_conntrack_max`, the host's, one for all).
pub const CONNTRACK_MAX: &str = "Conntrack.max";

/// `/proc/net/stat/nf_conntrack` is read up to this many bytes (a row per possible CPU of
/// about 150 bytes: 1700 CPUs) and this many rows.
const CONNTRACK_STAT_MAX_BYTES: u64 = 256 * 1024;
const CONNTRACK_STAT_MAX_ROWS: usize = 4096;

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

/// Parses `/proc/net/stat/nf_conntrack`: a header of column names, then one row of hex
/// values per possible CPU. The statistics are summed over the rows as `Conntrack.NAME`
/// (`entries`, the namespace's count repeated on every row, is the largest). Rows whose
/// width is not the header's, values that are not hex, and rows past
/// [`CONNTRACK_STAT_MAX_ROWS`] are ignored.
pub fn parse_conntrack_stat(text: &str) -> Counters {
    let mut out = Counters::new();
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return out;
    };
    let names: Vec<&str> = header.split_whitespace().take(64).collect();
    let mut seen: Vec<&str> = Vec::new();
    if names.is_empty()
        || names.iter().any(|n| {
            let dup = seen.contains(n);
            seen.push(n);
            dup || !n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
    {
        return out;
    }
    for row in lines.take(CONNTRACK_STAT_MAX_ROWS) {
        let values: Option<Vec<u64>> = row
            .split_whitespace()
            .map(|v| {
                (v.len() <= 16)
                    .then(|| u64::from_str_radix(v, 16).ok())
                    .flatten()
            })
            .collect();
        let Some(values) = values.filter(|v| v.len() == names.len()) else {
            continue;
        };
        for (n, v) in names.iter().zip(values) {
            let e = out.entry(format!("Conntrack.{n}")).or_insert(0);
            *e = if *n == "entries" {
                (*e).max(v)
            } else {
                e.saturating_add(v)
            };
        }
    }
    out
}

/// The conntrack statistics and table fill of the current thread's namespace; empty where
/// conntrack is not loaded.
fn conntrack_current() -> Counters {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open("/proc/thread-self/net/stat/nf_conntrack")
        .and_then(|f| f.take(CONNTRACK_STAT_MAX_BYTES).read_to_string(&mut text));
    let mut out = match read {
        Ok(_) => parse_conntrack_stat(&text),
        Err(_) => Counters::new(),
    };
    if let Some((count, max)) = super::sysctl::conntrack_fill() {
        out.insert(CONNTRACK_COUNT.to_owned(), count);
        out.insert(CONNTRACK_MAX.to_owned(), max);
    }
    out
}

/// Reads the counters of the current thread's namespace.
pub fn read_current() -> std::io::Result<Counters> {
    let mut text = std::fs::read_to_string("/proc/thread-self/net/netstat")?;
    text.push('\n');
    text.push_str(&std::fs::read_to_string("/proc/thread-self/net/snmp")?);
    let mut out = parse(&text);
    out.extend(conntrack_current());
    Ok(out)
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
    fn parses_conntrack_statistics_of_every_cpu() {
        // 6.18 (this host), a table with entries and drops on two CPUs.
        let c = parse_conntrack_stat(&fixture("nf_conntrack_stat"));
        assert_eq!(c["Conntrack.entries"], 0x105);
        assert_eq!(c["Conntrack.drop"], 0x11 + 0x2);
        assert_eq!(c["Conntrack.early_drop"], 0);
        assert_eq!(c["Conntrack.insert_failed"], 1);
        assert_eq!(c["Conntrack.search_restart"], 0x30);
        // 5.10's header (searched, delete_list) parses the same way.
        let c = parse_conntrack_stat(
            "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
             00000009  00000000 00000000 00000000 00000003 00000000 00000000 00000000 00000000 00000000 0000000a 00000000 00000000  00000000 00000000 00000000 00000000\n",
        );
        assert_eq!((c["Conntrack.entries"], c["Conntrack.drop"]), (9, 10));
        let before = c.clone();
        let mut after = c;
        after.insert("Conntrack.drop".into(), 14);
        assert_eq!(rises(&before, &after)["Conntrack.drop"], 4);
    }

    #[test]
    fn hostile_conntrack_statistics_are_bounded_and_malformed_rows_ignored() {
        assert!(parse_conntrack_stat("").is_empty());
        // A header that is not names, a repeated name: nothing.
        assert!(parse_conntrack_stat("entries 1x drop\n1 2 3\n").is_empty());
        assert!(parse_conntrack_stat("drop drop\n1 2\n").is_empty());
        let c = parse_conntrack_stat(
            "entries drop\n\
             0000000a 00000001\n\
             0000000b\n\
             zz 00000005\n\
             00000001 00000002 00000003\n\
             00000001 -0000002\n\
             00000001 11111111111111111111\n\
             00000001 ffffffffffffffff\n\
             00000001 00000004\n",
        );
        assert_eq!(c["Conntrack.entries"], 0xa);
        // Sums saturate.
        assert_eq!(c["Conntrack.drop"], u64::MAX);
        // A flood of rows: only the first CONNTRACK_STAT_MAX_ROWS count.
        let mut text = "entries drop\n".to_owned();
        for _ in 0..CONNTRACK_STAT_MAX_ROWS + 100 {
            text.push_str("00000000 00000001\n");
        }
        assert_eq!(
            parse_conntrack_stat(&text)["Conntrack.drop"],
            CONNTRACK_STAT_MAX_ROWS as u64
        );
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
