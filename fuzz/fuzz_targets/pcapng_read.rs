//! pcapng files (`handshakes.pcapng` of a bundle, or any capture): every block read back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(packets) = swarmtrace::evidence::pcapng::read_packets(data) {
        for p in packets {
            assert!(p.data.len() <= data.len(), "more captured bytes than input");
            let _ = (p.interface.len(), p.ts_unix_ns, p.comment);
        }
    }
});
