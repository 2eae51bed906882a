//! `/proc/net/netstat` and `/proc/net/snmp` (header line, value line, per section), and the
//! rises between two readings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmtrace::kernel::netstat;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let all = netstat::parse(&text);
    // Two readings: the input's halves (split on a character boundary).
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid -= 1;
    }
    let (before, after) = text.split_at(mid);
    let before = netstat::parse(before);
    let after = netstat::parse(after);
    for (k, v) in netstat::rises(&before, &after) {
        assert!(v > 0, "{k} rose by 0");
    }
    let _ = netstat::rises(&all, &all);
});
