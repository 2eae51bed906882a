//! Privileged tests: two swarmtrace instances on one interface. A `run` (A) traces the lab's
//! docker_gwbridge; a `capture` (B) on the same interface starts and ends; A must keep seeing
//! new handshakes throughout, its netlink filters and the clsact qdisc must stay, and once A
//! ends nothing of either is left. Run as root (`sudo cargo xtask test`); skipped otherwise.
//!
//! The netlink tests force `--tc-attach netlink`, which kernels before 6.6 use by default.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use swarmtrace::lab::mesh::{MeshLab, Scenario};
use swarmtrace::lab::traffic::Outcome;
use swarmtrace_tests::{ns_name, require_privileged, Tracer};

/// One lab at a time: each test drives traffic and counts what its tracer reports.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const IFACE: &str = "docker_gwbridge";

/// A swarmtrace filter as `tc filter show` lists it: (direction, pref, handle, name).
type TcFilter = (&'static str, String, String, String);

/// The swarmtrace filters on the lab host's docker_gwbridge, both directions.
fn swarmtrace_filters(lab: &MeshLab) -> BTreeSet<TcFilter> {
    let mut out = BTreeSet::new();
    for dir in ["ingress", "egress"] {
        let text = lab
            .host()
            .exec(&["tc", "filter", "show", "dev", IFACE, dir])
            .unwrap_or_default();
        for line in text.lines().filter(|l| l.contains(" handle ")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |w: &str, n: usize| {
                words
                    .iter()
                    .position(|x| *x == w)
                    .and_then(|i| words.get(i + n))
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            };
            // `filter protocol all pref 49152 bpf chain 0 handle 0x1 swarmtrace_in ...`
            let name = after("handle", 2);
            if name.starts_with("swarmtrace_") {
                out.insert((dir, after("pref", 1), after("handle", 1), name));
            }
        }
    }
    out
}

fn has_clsact(lab: &MeshLab) -> bool {
    lab.host()
        .exec(&["tc", "qdisc", "show", "dev", IFACE])
        .unwrap_or_default()
        .contains("clsact")
}

/// The owner tokens (abstract sockets) held in the lab host's namespace.
fn owner_tokens(lab: &MeshLab) -> Vec<String> {
    lab.host()
        .exec(&["cat", "/proc/net/unix"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|p| p.starts_with("@swarmtrace-tc/"))
        .map(str::to_owned)
        .collect()
}

/// Drives healthy requests through the mesh and waits until `a` reports a handshake of
/// every client that connected; panics naming `when` otherwise.
fn a_sees_new_handshakes(a: &Tracer, seen: &mut Vec<Value>, lab: &mut MeshLab, when: &str) {
    let d = lab.drive(Scenario::Healthy).unwrap();
    let clients: Vec<SocketAddr> = d
        .attempts
        .iter()
        .filter(|t| t.outcome == Outcome::Connected)
        .map(|t| t.client)
        .collect();
    assert!(!clients.is_empty(), "{when}: the mesh answered no request");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let missing: Vec<String> = clients
            .iter()
            .map(|c| c.to_string())
            .filter(|c| {
                !seen
                    .iter()
                    .any(|v| v["type"] == "handshake" && v["client"] == c.as_str())
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            let near: Vec<&Value> = seen
                .iter()
                .filter(|v| {
                    v["type"] != "handshake"
                        || v["client"].as_str().is_some_and(|c| {
                            missing
                                .iter()
                                .any(|m| m.split(':').next() == c.split(':').next())
                        })
                })
                .collect();
            panic!(
                "{when}: the first instance reported no handshake of {missing:?} ({} of {} clients); its stderr:\n{}\nwhat it reported of those clients, and other than handshakes: {near:?}\nthe drive: {:?}",
                missing.len(),
                clients.len(),
                a.stderr(),
                d.attempts
            );
        };
        a.wait_for(seen, left, |v| {
            v["type"] == "handshake"
                && v["client"]
                    .as_str()
                    .is_some_and(|c| missing.iter().any(|m| m == c))
        });
    }
}

/// The capture's bundle, removed when the test ends, passed or not.
struct Bundle(std::path::PathBuf);

impl Bundle {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "swarmtrace-coexist-{}-{tag}.tar.gz",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        Self(p)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A `run` (A) and a `capture` (B) on the same interface in `mode`.
fn run_and_capture(mode: &str, tag: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let netlink = mode == "netlink";
    let mut lab = MeshLab::build(&ns_name(tag)).unwrap();
    let iface = format!("{}:{IFACE}", lab.host().name());
    let a = Tracer::start(&["--tc-attach", mode, "--iface", &iface]).unwrap();
    let mut seen = Vec::new();
    a_sees_new_handshakes(&a, &mut seen, &mut lab, "before the capture");
    let a_filters = swarmtrace_filters(&lab);
    if netlink {
        assert_eq!(a_filters.len(), 2, "{a_filters:?}");
        assert!(has_clsact(&lab));
    }

    let out = Bundle::new(tag);
    let b = Tracer::spawn(&[
        "capture",
        "--tc-attach",
        mode,
        "--iface",
        &iface,
        "--duration",
        "10s",
        "-o",
        out.0.to_str().unwrap(),
    ])
    .unwrap();
    a_sees_new_handshakes(&a, &mut seen, &mut lab, "while the capture runs");
    if netlink {
        let now = swarmtrace_filters(&lab);
        assert!(
            a_filters.is_subset(&now),
            "the capture removed the first instance's filters: had {a_filters:?}, now {now:?}"
        );
        assert_eq!(now.len(), 4, "{now:?}");
        assert!(
            b.stderr().contains("another swarmtrace instance (pid "),
            "the capture did not say another instance is attached: {}",
            b.stderr()
        );
    }
    let (status, b_err) = b.wait(Duration::from_secs(40)).unwrap();
    assert!(status.success(), "capture failed: {b_err}");
    if netlink {
        assert_eq!(
            swarmtrace_filters(&lab),
            a_filters,
            "after the capture, only the first instance's filters should be there"
        );
        assert!(
            has_clsact(&lab),
            "the capture removed the clsact qdisc under the first instance"
        );
    }
    a_sees_new_handshakes(&a, &mut seen, &mut lab, "after the capture ended");
    if netlink {
        // A's filters carry its handle, and the token of that handle is held while A lives.
        let handle = &a_filters.first().unwrap().2;
        let tokens = owner_tokens(&lab);
        assert!(
            tokens.iter().any(|t| t.ends_with(&format!(
                "/{:08x}",
                u32::from_str_radix(handle.trim_start_matches("0x"), 16).unwrap()
            ))),
            "no owner token for handle {handle}: {tokens:?}"
        );
    }
    let a_err = a.stderr();
    assert!(
        !a_err.contains("re-attached"),
        "the first instance had to re-attach: {a_err}"
    );
    a.stop(seen).unwrap();
    if netlink {
        assert_eq!(swarmtrace_filters(&lab), BTreeSet::new());
        assert!(!has_clsact(&lab), "the clsact qdisc was left behind");
        assert_eq!(owner_tokens(&lab), Vec::<String>::new());
    }
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn netlink_run_keeps_working_through_a_capture() {
    require_privileged("netlink_run_keeps_working_through_a_capture");
    run_and_capture("netlink", "cxn");
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn tcx_run_keeps_working_through_a_capture() {
    require_privileged("tcx_run_keeps_working_through_a_capture");
    if !swarmtrace::trace::tracer::has_tcx() {
        eprintln!("SKIPPED tcx_run_keeps_working_through_a_capture: this kernel has no TCX (6.6+)");
        return;
    }
    run_and_capture("tcx", "cxt");
}

/// A killed run's filters are stale: the next run removes them, and nothing is left after
/// it ends.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn netlink_filters_of_a_killed_run_are_removed() {
    require_privileged("netlink_filters_of_a_killed_run_are_removed");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = MeshLab::build(&ns_name("cxk")).unwrap();
    let iface = format!("{}:{IFACE}", lab.host().name());
    let args = ["--tc-attach", "netlink", "--iface", &iface];
    let killed = Tracer::start(&args).unwrap();
    let (_, _, _) = killed.signal(libc::SIGKILL, Vec::new()).unwrap();
    let stale = swarmtrace_filters(&lab);
    assert_eq!(stale.len(), 2, "a killed run leaves its filters: {stale:?}");
    assert!(owner_tokens(&lab).is_empty());

    let next = Tracer::start(&args).unwrap();
    let err = next.stderr();
    assert!(
        err.contains("removed a stale swarmtrace_in filter")
            && err.contains("removed a stale swarmtrace_out filter"),
        "{err}"
    );
    let now = swarmtrace_filters(&lab);
    assert_eq!(now.len(), 2, "stale {stale:?}, now {now:?}");
    next.stop(Vec::new()).unwrap();
    assert_eq!(swarmtrace_filters(&lab), BTreeSet::new());
    assert!(
        !has_clsact(&lab),
        "the clsact qdisc of the killed run was left behind"
    );
}
