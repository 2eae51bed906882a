//! Capture bundles (`swarmtrace report`): the input is split at NUL bytes into a bundle
//! directory's `handshakes.json`, `system.json`, `events.ndjson` and `handshakes.pcapng` (a
//! missing part is a missing file), loaded, judged and rendered in every format, joined with
//! itself, and its packets written as pcapng and read back. The raw input is also loaded as a
//! `.tar.gz` bundle.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use swarmtrace::evidence::bundle::Bundle;

/// Bundle files in the order the input's NUL-separated parts fill them.
const PARTS: [&str; 4] = [
    "handshakes.json",
    "system.json",
    "events.ndjson",
    "handshakes.pcapng",
];
const SEPARATOR: u8 = 0;

/// This process's scratch space, made once and reused for every input.
struct Scratch {
    root: PathBuf,
    dir: PathBuf,
    tarball: PathBuf,
}

static SCRATCH: OnceLock<Scratch> = OnceLock::new();

extern "C" fn remove_scratch() {
    if let Some(s) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(&s.root);
    }
}

fn scratch() -> &'static Scratch {
    SCRATCH.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("swarmtrace-fuzz-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("bundle");
        std::fs::create_dir_all(&dir).expect("cannot create the scratch bundle directory");
        // SAFETY: registers a plain extern "C" function with no preconditions; it runs at a
        // normal exit (libFuzzer's -runs/-max_total_time end), not after a crash, where the
        // directory is left for the caller (cargo xtask fuzz points TMPDIR at its own).
        unsafe { libc::atexit(remove_scratch) };
        Scratch {
            tarball: root.join("bundle.tar.gz"),
            root,
            dir,
        }
    })
}

fn follow(bundles: &[Bundle]) {
    for b in bundles {
        let verdicts = b.verdicts();
        let mut sum = b.summary().clone();
        sum["verdicts"] = verdicts.iter().map(|v| v.to_json()).collect();
        swarmtrace_fuzz::render(&sum);
        // As `report` reads it: typed, or refused.
        if let Ok(typed) = swarmtrace::trace::summary::RunSummary::from_json(b.summary()) {
            let _ = swarmtrace::present::summary::summary_text(&typed, &verdicts);
            let _ = swarmtrace::present::summary::summary_markdown(
                &typed,
                &verdicts,
                &b.system,
                &b.handshake_events(),
            );
        }
        let hops = b.hop_names();
        for h in &b.handshakes.handshakes {
            if let Some(hop) = h.first_hop {
                let _ = hops.name(&hop);
            }
        }
        swarmtrace_fuzz::pcapng_round_trip(&b.handshakes, &b.context);
        if let Some(p) = &b.pcapng {
            let _ = swarmtrace::evidence::pcapng::read_packets(p);
        }
    }
    if bundles.len() > 1 {
        swarmtrace_fuzz::render(&swarmtrace::commands::report::join(bundles));
    }
}

fn load(path: &Path) -> Option<Bundle> {
    Bundle::load(path).ok()
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    let mut parts = data.splitn(PARTS.len(), |&b| b == SEPARATOR);
    for name in PARTS {
        let path = s.dir.join(name);
        match parts.next() {
            Some(bytes) => std::fs::write(&path, bytes).expect("cannot write a bundle file"),
            None => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot remove {}: {e}", path.display()),
            },
        }
    }
    if let Some(first) = load(&s.dir) {
        // Loading is deterministic: a second load must succeed too (and joins with the first).
        let second = load(&s.dir).expect("the same bundle loaded once, then failed");
        follow(&[first, second]);
    }
    std::fs::write(&s.tarball, data).expect("cannot write the tarball");
    if let Some(b) = load(&s.tarball) {
        follow(&[b]);
    }
});
