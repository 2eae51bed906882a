//! Tracepoint descriptions (`events/skb/kfree_skb/format`): fields, the drop-reason names of
//! `__print_symbolic`, and the kernel facts built from them with a real kernel's BTF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmtrace::kernel::tracefs::TracepointFormat;
use swarmtrace::kernel::KernelFacts;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(format) = TracepointFormat::parse(&text) else {
        return;
    };
    let names = format.symbols("reason");
    for (value, name) in &names {
        assert!(!name.contains('}'), "symbol {value} named {name:?}");
    }
    for name in ["reason", "location", "skbaddr", "rx_sk", "protocol", ""] {
        let _ = format.field(name);
        let _ = format.require(name);
    }
    for f in &format.fields {
        assert!(
            format.field(&f.name).is_some(),
            "field {:?} not found",
            f.name
        );
    }
    // The fuzzed layout with the BTF of Linux 6.18, as `KernelFacts::read` combines them.
    if let Ok(facts) = KernelFacts::from_parts("6.18.0".into(), &format, swarmtrace_fuzz::btf()) {
        let _ = facts.reasons.name(38);
        let _ = facts.reasons.value("NO_SOCKET");
    }
});
