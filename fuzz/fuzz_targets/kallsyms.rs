//! `/proc/kallsyms` lines, then drop locations (code addresses) named from them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmtrace::kernel::kallsyms::Kallsyms;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let syms = Kallsyms::parse(&text);
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
        u64::from_le_bytes(w)
    };
    // Addresses from the input itself: its first and last 8 bytes, and each address it
    // lists, just before and after.
    let mut addrs = vec![
        0,
        1,
        u64::MAX,
        0xffff_ffff_8203_39c0 + 0x1f3,
        word(data),
        word(&data[data.len().saturating_sub(8)..]),
    ];
    for line in text.lines().take(16) {
        if let Some(a) = line
            .split_whitespace()
            .next()
            .and_then(|a| u64::from_str_radix(a, 16).ok())
        {
            addrs.extend([a.wrapping_sub(1), a, a.wrapping_add(1)]);
        }
    }
    for a in addrs {
        let named = syms.symbolize(a);
        if let Some((name, off)) = syms.lookup(a) {
            assert!(off <= a, "{name}+{off:#x} for {a:#x}");
            assert!(named.starts_with(name), "{named} for {name}");
        }
    }
    let _ = syms.has("tcp_drop");
    let _ = syms.len();
});
