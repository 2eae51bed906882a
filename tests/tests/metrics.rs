//! `swarmtrace run --metrics`: the Prometheus endpoint seen from outside, over HTTP, while real
//! handshakes (one answered, one to a closed port) go through namespaces; the body is linted
//! by `promtool check metrics`. Privileged (`sudo cargo xtask test`); skipped otherwise.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use swarmtrace::lab::{addr, traffic, veth, Netns};
use swarmtrace_tests::{binary, ns_name, require_privileged, test_port, Tracer};

const CLIENT4: &str = "10.203.0.2";
const SERVER4: &str = "10.203.0.1";
const CLIENTS: &str = "10.203.0.0/24";

fn pair(tag: &str) -> (Netns, Netns) {
    let c = Netns::create(&ns_name(&format!("{tag}c"))).unwrap();
    let s = Netns::create(&ns_name(&format!("{tag}s"))).unwrap();
    veth(&c, "eth0", &s, "eth0").unwrap();
    addr(&c, "eth0", &format!("{CLIENT4}/24")).unwrap();
    addr(&s, "eth0", &format!("{SERVER4}/24")).unwrap();
    (c, s)
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

/// A port of the host's loopback that is free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP response: status code, headers (lower-case names), body.
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

fn http(addr: SocketAddr, request: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

fn get(addr: SocketAddr, path: &str) -> Response {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: swarmtrace-test\r\nAccept: text/plain\r\n\r\n"),
    )
    .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// `series -> value` of an exposition body.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            (
                series.to_owned(),
                value.parse().unwrap_or_else(|_| panic!("{l}")),
            )
        })
        .collect()
}

/// Lints `body` with `promtool check metrics` (a failure without promtool).
fn promtool_check(body: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            panic!(
                "promtool is missing ({e}): `apt-get install prometheus` (scripts/setup.sh) provides it"
            );
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_handshake_to(v: &Value, service: &SocketAddr) -> bool {
    v["type"] == "handshake" && v["service"] == service.to_string()
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn metrics_endpoint_counts_handshakes_drops_and_health() {
    require_privileged("metrics_endpoint_counts_handshakes_drops_and_health");
    let (c, s) = pair("m");
    let open = sock(SERVER4, test_port(21));
    let closed = sock(SERVER4, test_port(22));
    let listener = s
        .run(move || std::net::TcpListener::bind(open))
        .unwrap()
        .unwrap();
    let server = s.spawn(move || traffic::serve(listener, 1)).unwrap();
    let metrics = sock("127.0.0.1", free_port());
    let watch = format!("{}:eth0", s.name());
    let tracer = Tracer::start(&[
        "--metrics",
        &metrics.to_string(),
        "--iface",
        &watch,
        "--client",
        CLIENTS,
    ])
    .unwrap();

    // Up before any traffic, with the health at zero and no handshake series.
    let first = get(metrics, "/metrics");
    assert_eq!(first.status, 200, "{}", first.body);
    let m = samples(&first.body);
    assert_eq!(m["swarmtrace_up"], 1.0, "{}", first.body);
    assert!(
        !m.keys()
            .any(|k| k.starts_with("swarmtrace_handshakes_total{")),
        "{}",
        first.body
    );

    let (_, answer) = c
        .run(move || traffic::request(sock(CLIENT4, 0), open, Duration::from_secs(3)))
        .unwrap()
        .unwrap();
    assert_eq!(answer, "ok\n");
    assert_eq!(server.join().unwrap().unwrap().unwrap(), 1);
    let (_, outcome) = c
        .run(move || traffic::connect(sock(CLIENT4, 0), closed, Duration::from_secs(3)))
        .unwrap();
    assert_eq!(outcome, traffic::Outcome::Refused);

    // Both handshakes decided (the refused one after --syn-timeout) and the drop reported.
    let mut seen = Vec::new();
    for service in [open, closed] {
        assert!(
            tracer.wait_for(&mut seen, Duration::from_secs(10), |v| is_handshake_to(
                v, &service
            )),
            "no handshake to {service}: {seen:?}; stderr: {}",
            tracer.stderr()
        );
    }
    assert!(
        tracer.wait_for(&mut seen, Duration::from_secs(5), |v| v["type"] == "drop"
            && v["service"] == closed.to_string()),
        "no drop for {closed}: {seen:?}"
    );
    let answered = seen.iter().find(|v| is_handshake_to(v, &open)).unwrap();
    assert_eq!(answered["verdict"], "answered", "{answered}");
    let latency_us = answered["latency_us"].as_u64().unwrap();
    let refused = seen.iter().find(|v| is_handshake_to(v, &closed)).unwrap();
    assert_eq!(refused["verdict"], "dropped", "{refused}");
    let json_drops: Vec<&Value> = seen.iter().filter(|v| v["type"] == "drop").collect();

    // The health arrives once a second: wait until it has seen both SYNs and the drops.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = get(metrics, "/metrics");
        let m = samples(&r.body);
        let at = |k: &str| m.get(k).copied().unwrap_or(0.0);
        if (at("swarmtrace_syns_total") >= 2.0
            && at("swarmtrace_kernel_drops_total") >= json_drops.len() as f64)
            || Instant::now() > deadline
        {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        r.headers.get("content-length"),
        Some(&r.body.len().to_string())
    );
    let m = samples(&r.body);
    let at = |k: &str| -> f64 { *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{}", r.body)) };

    // Handshakes: exactly those of the NDJSON output, by service and verdict.
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for v in seen.iter().filter(|v| v["type"] == "handshake") {
        *want
            .entry(format!(
                r#"swarmtrace_handshakes_total{{service="{}",verdict="{}"}}"#,
                v["service"].as_str().unwrap(),
                v["verdict"].as_str().unwrap()
            ))
            .or_default() += 1.0;
    }
    // A failed handshake's series also names its cause (compared apart, below).
    let without_cause = |k: &str| match k.find(",cause=\"") {
        Some(i) => format!("{}}}", &k[..i]),
        None => k.to_owned(),
    };
    let mut got: BTreeMap<String, f64> = BTreeMap::new();
    for (k, v) in m
        .iter()
        .filter(|(k, _)| k.starts_with("swarmtrace_handshakes_total{"))
    {
        *got.entry(without_cause(k)).or_default() += *v;
    }
    assert_eq!(got, want, "{}", r.body);
    assert_eq!(
        at(&format!(
            r#"swarmtrace_handshakes_total{{service="{open}",verdict="answered"}}"#
        )),
        1.0
    );
    assert_eq!(
        at(&format!(
            r#"swarmtrace_handshakes_total{{service="{closed}",verdict="dropped",cause="no-listener"}}"#
        )),
        1.0
    );

    // Drops: the refused SYN, NO_SOCKET in the server's namespace, charged to the service.
    let drops_key = format!(
        r#"swarmtrace_handshake_drops_total{{service="{closed}",reason="NO_SOCKET",netns="{}"}}"#,
        s.name()
    );
    let json_no_socket = json_drops
        .iter()
        .filter(|d| {
            d["service"] == closed.to_string()
                && d["reason"] == "NO_SOCKET"
                && d["netns_name"] == s.name()
        })
        .count();
    assert!(json_no_socket >= 1, "{json_drops:?}");
    assert_eq!(at(&drops_key), json_no_socket as f64, "{}", r.body);
    let all_drops: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("swarmtrace_handshake_drops_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(all_drops, json_drops.len() as f64, "{}", r.body);

    // Latency: one answered handshake, in the bucket that holds its latency_us.
    let lat = |suffix: &str, extra: &str| {
        at(&format!(
            r#"swarmtrace_handshake_latency_seconds_{suffix}{{service="{open}"{extra}}}"#
        ))
    };
    assert_eq!(lat("count", ""), 1.0);
    assert_eq!(lat("bucket", r#",le="+Inf""#), 1.0);
    assert!((lat("sum", "") - latency_us as f64 / 1e6).abs() < 1e-9);
    for (le, bound_us) in [
        ("0.0001", 100u64),
        ("0.001", 1_000),
        ("0.1", 100_000),
        ("5", 5_000_000),
    ] {
        let want = if latency_us <= bound_us { 1.0 } else { 0.0 };
        assert_eq!(
            lat("bucket", &format!(r#",le="{le}""#)),
            want,
            "le={le}, {latency_us} us"
        );
    }
    assert!(
        !r.body
            .contains(&format!(r#"latency_seconds_count{{service="{closed}"}}"#)),
        "{}",
        r.body
    );

    // Health: the kernel's exact totals and the watched interface.
    assert_eq!(at("swarmtrace_syns_total"), 2.0, "{}", r.body);
    assert_eq!(at("swarmtrace_synacks_total"), 1.0, "{}", r.body);
    assert_eq!(
        at("swarmtrace_kernel_drops_total"),
        json_drops.len() as f64,
        "{}",
        r.body
    );
    assert_eq!(at("swarmtrace_lost_events_total"), 0.0);
    assert_eq!(
        at(&format!(
            r#"swarmtrace_interface_attached{{interface="{watch}"}}"#
        )),
        1.0
    );
    assert_eq!(at("swarmtrace_interfaces_watched"), 1.0);
    assert!(at("swarmtrace_tracked_handshakes") >= 0.0);
    assert_eq!(at("swarmtrace_up"), 1.0);
    assert_eq!(at("swarmtrace_metrics_series_dropped_total"), 0.0);
    assert_eq!(
        at(&format!(
            r#"swarmtrace_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    for name in [
        "swarmtrace_handshakes_total counter",
        "swarmtrace_handshake_drops_total counter",
        "swarmtrace_handshake_latency_seconds histogram",
        "swarmtrace_kernel_drops_total counter",
        "swarmtrace_lost_events_total counter",
        "swarmtrace_syns_total counter",
        "swarmtrace_interface_attached gauge",
        "swarmtrace_interfaces_watched gauge",
        "swarmtrace_tracked_handshakes gauge",
        "swarmtrace_up gauge",
        "swarmtrace_build_info gauge",
    ] {
        assert!(
            r.body.contains(&format!("\n# TYPE {name}\n")),
            "no TYPE {name}"
        );
        let metric = name.split(' ').next().unwrap();
        assert!(
            r.body.contains(&format!("# HELP {metric} ")),
            "no HELP {metric}"
        );
    }
    promtool_check(&r.body);

    // Anything else is 404; many scrapers at once are all served.
    assert_eq!(get(metrics, "/").status, 404);
    assert_eq!(get(metrics, "/metrics/x").status, 404);
    let scrapers: Vec<_> = (0..32)
        .map(|_| std::thread::spawn(move || get(metrics, "/metrics")))
        .collect();
    for t in scrapers {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.contains("\nswarmtrace_up 1\n"));
    }

    // Ends cleanly, and the endpoint with it.
    let out = tracer.stop(seen).unwrap();
    assert_eq!(out.last().unwrap()["type"], "summary");
    assert!(
        TcpStream::connect_timeout(&metrics, Duration::from_secs(1)).is_err(),
        "{metrics} still listening after exit"
    );
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn a_taken_metrics_port_fails_clearly_before_attaching() {
    require_privileged("a_taken_metrics_port_fails_clearly_before_attaching");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let started = Instant::now();
    let out = Command::new(binary())
        .args([
            "run",
            "--json",
            "--metrics",
            &addr.to_string(),
            "--port",
            &test_port(23).to_string(),
            "--duration",
            "10s",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(8), "{err}");
    assert!(
        err.contains(&addr.to_string()) && err.contains("already in use"),
        "{err}"
    );
    assert!(
        !err.contains("tracing TCP handshakes"),
        "attached before failing: {err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(taken);
}

#[test]
fn a_bad_metrics_address_is_a_usage_error() {
    // No root needed: the address is checked while parsing the command line.
    for bad in ["nonsense", "0", "10.0.0.1", "::1:9100"] {
        let out = Command::new(binary())
            .args(["run", "--metrics", bad])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("--metrics") && err.contains(bad),
            "{bad}: {err}"
        );
    }
}
