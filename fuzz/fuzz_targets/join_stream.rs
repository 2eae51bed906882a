//! `swarmtrace join`'s input: any bytes as lines of several nodes' NDJSON streams. Nothing may
//! panic, and the tables stay within their bounds whatever the lines say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmtrace::commands::join::{text, Joiner};

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let mut j = Joiner::new(64);
    for (i, line) in input.lines().enumerate() {
        for rec in j.line(line, if i % 2 == 0 { "a" } else { "b" }) {
            let _ = text(&rec);
        }
    }
    for rec in j.due(std::time::Duration::ZERO) {
        let _ = text(&rec);
    }
    let s = j.stats();
    assert!(s.keys <= 64, "{} keys held", s.keys);
    assert!(s.nodes <= 256);
});
