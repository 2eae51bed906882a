//! Ring-buffer records (`swarmtrace::trace::event::Event::try_from`), then what the live run does with
//! a decoded one: name the drop (reason, code location, namespace), render it (NDJSON and
//! text), count it in the summary, track its handshake, render the handshake, judge it and
//! write it as pcapng.
#![no_main]

use std::cell::RefCell;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use swarmtrace::evidence::format::Recorded;
use swarmtrace::kernel::netns::NetnsNames;
use swarmtrace::present::records::handshake_line;
use swarmtrace::trace::drops::{Namer, Summary};
use swarmtrace::trace::event::Event;
use swarmtrace::trace::hops::HopNames;
use swarmtrace::trace::observe::HandshakeRecord;
use swarmtrace::trace::session::handshake_totals;
use swarmtrace::trace::tracer::Totals;
use swarmtrace::trace::tracker::Tracker;
use swarmtrace_fuzz as common;

thread_local! {
    // Built once per process: parsing the fixtures per input would dominate the run.
    static NAMER: RefCell<Namer> = RefCell::new(Namer {
        reasons: common::reasons(),
        kallsyms: common::kallsyms(),
        // No namespace has a name here: no file system scan depends on the input.
        netns: NetnsNames::with_roots(Path::new("/nonexistent"), vec![]),
        clock: common::clock(),
    });
}

fuzz_target!(|data: &[u8]| {
    let Ok(event) = Event::try_from(data) else {
        return;
    };
    let clock = common::clock();
    let hops = HopNames::from_entries(&[
        (0, 1, "host".into(), "eth0".into()),
        (4026532300, 7, "ingress_sbox".into(), "eth1".into()),
    ]);
    let mut tracker = Tracker::new(1_000_000_000);
    let mut summary = Summary::default();
    let mut totals = Totals::default();
    match event {
        Event::Drop(raw) => {
            totals.drops = 1;
            totals.drops_by_reason = vec![(raw.reason, 1)];
            let d = NAMER.with(|n| n.borrow_mut().name(raw));
            common::render(&d.to_json());
            let _ = d.to_line();
            summary.add(&d);
            tracker.on_drop(&d);
        }
        Event::Handshake(s) => {
            let _ = hops.name(&s.hop);
            tracker.on_sighting(&s);
        }
    }
    for id in tracker.flush() {
        let h = tracker.get(&id).expect("flushed handshakes are tracked");
        let unix_ns = clock.to_unix_ns(h.first_ns);
        let rec = HandshakeRecord::new(h, &hops, h.first_hop, unix_ns);
        common::render(&serde_json::to_value(&rec).expect("a handshake record serializes"));
        let _ = handshake_line(&rec);
    }
    let ctx = common::context();
    let verdicts = swarmtrace::verdict::verdicts(tracker.handshakes(), &ctx);
    for v in &verdicts {
        common::render(&v.to_json());
        let _ = v.to_text();
    }
    let reasons = NAMER.with(|n| n.borrow().reasons.clone());
    let mut sum = summary.finish(&totals, &reasons, 1.5);
    sum.handshakes = handshake_totals(&tracker);
    let _ = swarmtrace::present::summary::summary_text(&sum, &verdicts);
    let hs = Recorded {
        handshakes: tracker.handshakes().cloned().collect(),
        hops: hops.entries(),
        forgotten: 0,
        clock,
    };
    common::pcapng_round_trip(&hs, &ctx);
});
