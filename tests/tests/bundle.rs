//! Capture bundles: recorded in the lab's PAWS scenario, read offline by `report` as a normal
//! user with the verdicts of the live run, the pcapng read by tshark; damaged bundles fail
//! cleanly, naming the bad file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use swarmtrace::lab::mesh::{MeshLab, Scenario};
use swarmtrace_tests::{binary, docker_stub, ns_name, require_privileged, Tracer};

/// Lab tests one at a time: kfree_skb sees every namespace, so one lab's drops would be
/// evidence in the other's capture.
static ONE_LAB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("swarmtrace-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn report(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .arg("report")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn verdict_keys(v: &Value) -> Vec<(String, u64, Vec<String>)> {
    v["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["cause"].as_str().unwrap().to_owned(),
                x["count"].as_u64().unwrap(),
                x["clients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn capture_in_the_paws_lab_then_report_offline() {
    require_privileged("capture_in_the_paws_lab_then_report_offline");
    let _one = one_lab();
    let dir = tmpdir("cap");
    let tarball = dir.join("incident.tar.gz");
    let mut lab = MeshLab::build(&ns_name("cap")).unwrap();
    lab.apply(Scenario::Paws).unwrap();
    let mut args = vec![
        "capture".to_owned(),
        "--duration".to_owned(),
        "5s".to_owned(),
        "-o".to_owned(),
    ];
    args.push(tarball.to_str().unwrap().to_owned());
    for w in lab.watch() {
        args.push("--iface".to_owned());
        args.push(w);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Tracer::spawn(&args).unwrap();
    let drive = lab.drive(Scenario::Paws).unwrap();
    let second = drive.attempts.last().unwrap().client.ip().to_string();
    let (status, stderr) = t.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("capture: "), "no progress line: {stderr}");
    drop(lab);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&tarball).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "bundle mode");

    // Unpacked: every file 0600, tshark reads the pcapng with its comments.
    let x = dir.join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .args(["xzf", tarball.to_str().unwrap(), "-C", x.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let b = x.join("incident");
    for f in [
        "events.ndjson",
        "handshakes.json",
        "system.json",
        "handshakes.pcapng",
        "report.md",
    ] {
        let m = std::fs::metadata(b.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{f} mode");
    }
    let ts = Command::new("tshark")
        .args([
            "-r",
            b.join("handshakes.pcapng").to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "frame.comment",
            "-e",
            "ip.src",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.flags.syn",
        ])
        .output()
        .expect("tshark (installed by scripts/setup.sh)");
    assert!(
        ts.status.success(),
        "{}",
        String::from_utf8_lossy(&ts.stderr)
    );
    let lines = String::from_utf8_lossy(&ts.stdout).into_owned();
    let paws: Vec<&str> = lines
        .lines()
        .filter(|l| l.contains("reason=TCP_RFC7323_TW_PAWS"))
        .collect();
    assert!(!paws.is_empty(), "{lines}");
    assert!(
        paws.iter().all(
            |l| l.contains(&format!("client={second}:")) && l.contains("cause=paws-timestamps")
        ),
        "{lines}"
    );
    // The SYN as first seen carries the real client's address.
    assert!(
        lines
            .lines()
            .any(|l| l.contains("as first seen") && l.contains(&format!("\t{second}\t"))),
        "{lines}"
    );

    let system: Value =
        serde_json::from_slice(&std::fs::read(b.join("system.json")).unwrap()).unwrap();
    assert!(system["kernel"]["release"].is_string());
    // The kernel's layouts as the programs read them, the fast paths' windows too: on this
    // kernel (6.18) every fast path is found (the general path would show null).
    let offsets = &system["kernel"]["offsets"];
    assert!(offsets["sk_buff.head"].is_u64(), "{offsets}");
    assert!(offsets["kfree_skb.layout"].is_u64(), "{offsets}");
    let window = |k: &str| offsets[k].as_array().map(|w| w.len());
    assert_eq!(window("sk_buff.header_window"), Some(2), "{offsets}");
    assert_eq!(window("net_device.window"), Some(2), "{offsets}");
    assert!(
        system["sysctls"]["net.ipv4.tcp_timestamps"].is_string(),
        "{}",
        system["sysctls"]
    );
    let task = system["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"].as_str().unwrap().ends_with("-task1"))
        .expect("task namespace");
    assert!(
        task["counters_after"]["TcpExt.PAWSTimewait"]
            .as_u64()
            .unwrap()
            > task["counters_before"]["TcpExt.PAWSTimewait"]
                .as_u64()
                .unwrap()
    );
    assert!(!task["routes"].as_array().unwrap().is_empty());
    let md = std::fs::read_to_string(b.join("report.md")).unwrap();
    assert!(md.contains("`paws-timestamps`"), "{md}");

    // Offline, as a normal user, on a copy it may read: the live run's verdicts.
    let live: Value = serde_json::from_str(
        std::fs::read_to_string(b.join("events.ndjson"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let public = tmpdir("pub");
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = public.join("incident.tar.gz");
    std::fs::copy(&tarball, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            binary().to_str().unwrap(),
            "report",
            "--format",
            "json",
            copy.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict_keys(&offline), verdict_keys(&live));
    assert_eq!(verdict_keys(&offline)[0].0, "paws-timestamps");
    assert_eq!(verdict_keys(&offline)[0].2, vec![second.clone()]);
    let (ok, text, _) = report(&[copy.to_str().unwrap()]);
    assert!(
        ok && text.contains("[paws-timestamps]") && text.contains(&second),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&public);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn report_names_a_cause_of_dockers_view_as_the_live_run_did() {
    require_privileged("report_names_a_cause_of_dockers_view_as_the_live_run_did");
    let _one = one_lab();
    let dir = tmpdir("notask");
    let bundle = dir.join("b");
    let port = swarmtrace::lab::PUBLISHED_PORT;
    // Docker says: the port is published by `web`, which has no running task.
    let sock = docker_stub(
        "bnotask",
        serde_json::json!([{
            "Spec": {"Name": "web"},
            "Endpoint": {"Ports": [{"PublishedPort": port, "TargetPort": 80, "Protocol": "tcp", "PublishMode": "ingress"}]},
            "ServiceStatus": {"RunningTasks": 0, "DesiredTasks": 2}
        }]),
    );
    let host = format!("unix://{}", sock.display());
    let mut lab = MeshLab::build(&ns_name("bnt")).unwrap();
    lab.apply(Scenario::NoListener).unwrap();
    let mut args = vec![
        "capture",
        "--duration",
        "4s",
        "-o",
        bundle.to_str().unwrap(),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    for w in lab.watch() {
        args.push("--iface".to_owned());
        args.push(w);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Tracer::spawn_env(&args, &[("DOCKER_HOST", &host)]).unwrap();
    lab.drive(Scenario::NoListener).unwrap();
    let (status, stderr) = t.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{stderr}");
    drop(lab);
    let _ = std::fs::remove_dir_all(sock.parent().unwrap());
    let live: Value = serde_json::from_str(
        std::fs::read_to_string(bundle.join("events.ndjson"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        verdict_keys(&live)[0].0,
        "no-running-task",
        "live: {:#}",
        live["verdicts"]
    );
    // Offline, without Docker: the bundle's word on what Docker said.
    let (ok, out, err) = report(&["--format", "json", bundle.to_str().unwrap()]);
    assert!(ok, "{err}");
    let offline: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(verdict_keys(&offline), verdict_keys(&live), "{out}");
    let (ok, text, err) = report(&[bundle.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        text.contains("[no-running-task]") && text.contains("service web publishes port"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn capture_refuses_an_unwritable_or_used_path_before_attaching() {
    require_privileged("capture_refuses_an_unwritable_or_used_path_before_attaching");
    let dir = tmpdir("refuse");
    std::fs::write(dir.join("something"), "x").unwrap();
    for (path, want) in [
        ("/nonexistent-dir/x.tar.gz".to_owned(), "cannot create"),
        (dir.to_str().unwrap().to_owned(), "not empty"),
    ] {
        let out = Command::new(binary())
            .args(["capture", "--duration", "1s", "-o", &path])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path}");
        assert!(err.contains(want), "{path}: {err}");
        assert!(
            !err.contains("tracing TCP handshakes"),
            "attached before failing: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small but complete bundle, written through the library (no root, no kernel).
fn valid_bundle(dir: &Path) {
    use swarmtrace::evidence::format::{handshakes_json, Recorded, FORMAT};
    let hs = Recorded {
        handshakes: vec![],
        hops: vec![],
        forgotten: 0,
        clock: swarmtrace::clock::WallClock::sample(),
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("handshakes.json"), handshakes_json(&hs).unwrap()).unwrap();
    let system = serde_json::json!({"format": FORMAT, "kernel": {"release": "6.18"}, "verdict_context": swarmtrace::verdict::Context::default()});
    std::fs::write(dir.join("system.json"), system.to_string()).unwrap();
    std::fs::write(
        dir.join("events.ndjson"),
        "{\"type\":\"summary\",\"drops\":0,\"handshakes\":{},\"verdicts\":[]}\n",
    )
    .unwrap();
}

#[test]
fn report_on_damaged_bundles_fails_cleanly() {
    let dir = tmpdir("damaged");
    let good = dir.join("good");
    valid_bundle(&good);
    let (ok, _, err) = report(&[good.to_str().unwrap()]);
    assert!(ok, "the valid bundle must render: {err}");

    let variant = |name: &str, f: &dyn Fn(&Path)| -> PathBuf {
        let p = dir.join(name);
        valid_bundle(&p);
        f(&p);
        p
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            variant("no-handshakes", &|p| {
                std::fs::remove_file(p.join("handshakes.json")).unwrap()
            }),
            "handshakes.json",
        ),
        (
            variant("cut-handshakes", &|p| {
                let b = std::fs::read(p.join("handshakes.json")).unwrap();
                std::fs::write(p.join("handshakes.json"), &b[..b.len() / 2]).unwrap();
            }),
            "handshakes.json",
        ),
        (
            variant("foreign-system", &|p| {
                std::fs::write(p.join("system.json"), "{\"format\":\"something-else\"}").unwrap()
            }),
            "system.json",
        ),
        (
            variant("garbage-events", &|p| {
                std::fs::write(p.join("events.ndjson"), "{\"type\":\"drop\"}\nnot json\n").unwrap()
            }),
            "events.ndjson",
        ),
        (
            variant("truncated-events", &|p| {
                std::fs::write(p.join("events.ndjson"), "{\"type\":\"drop\"}\n").unwrap()
            }),
            "events.ndjson",
        ),
        (dir.join("empty-dir"), "handshakes.json"),
        (
            variant("wild-clock", &|p| {
                // An offset no clock has (i128::MAX ns): read back, it would overflow time
                // arithmetic.
                let text = std::fs::read_to_string(p.join("handshakes.json")).unwrap();
                let key = "\"offset_ns\":";
                let at = text.find(key).unwrap() + key.len();
                let end = at
                    + text[at..]
                        .find(|c: char| c != '-' && !c.is_ascii_digit())
                        .unwrap();
                let wild = format!("{}{}{}", &text[..at], i128::MAX, &text[end..]);
                std::fs::write(p.join("handshakes.json"), wild).unwrap();
            }),
            "handshakes.json",
        ),
    ];
    std::fs::create_dir_all(dir.join("empty-dir")).unwrap();
    // A .tar.gz cut short, and a file that is no archive at all.
    let tgz = dir.join("good.tar.gz");
    let st = Command::new("tar")
        .args([
            "czf",
            tgz.to_str().unwrap(),
            "-C",
            good.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let (ok, _, err) = report(&[tgz.to_str().unwrap()]);
    assert!(ok, "the valid tarball must render: {err}");
    let bytes = std::fs::read(&tgz).unwrap();
    let cut = dir.join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let junk = dir.join("junk.tar.gz");
    std::fs::write(&junk, b"this is not gzip").unwrap();
    let mut cases = cases;
    cases.push((cut, "cut.tar.gz"));
    cases.push((junk, "junk.tar.gz"));
    for (path, names) in cases {
        let (ok, _, err) = report(&[path.to_str().unwrap()]);
        assert!(!ok, "{} rendered", path.display());
        assert!(
            err.contains(names),
            "{}: the message does not name {names}: {err}",
            path.display()
        );
        assert!(!err.contains("panicked"), "{}: {err}", path.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn report_joins_two_nodes_bundles_by_isn_and_tsval() {
    require_privileged("report_joins_two_nodes_bundles_by_isn_and_tsval");
    // Two captures at once, each watching a different hop of the mesh, stand for two nodes
    // that saw the same handshakes.
    let _one = one_lab();
    let dir = tmpdir("join");
    let mut lab = MeshLab::build(&ns_name("join")).unwrap();
    lab.apply(Scenario::Paws).unwrap();
    let watch = lab.watch();
    let mut captures = Vec::new();
    for (i, w) in watch.iter().enumerate() {
        let out = dir.join(format!("node{i}.tar.gz"));
        let t = Tracer::spawn(&[
            "capture",
            "--duration",
            "5s",
            "-o",
            out.to_str().unwrap(),
            "--iface",
            w,
        ])
        .unwrap();
        captures.push((t, out));
    }
    let drive = lab.drive(Scenario::Paws).unwrap();
    let second = drive.attempts.last().unwrap().client.ip().to_string();
    let mut paths = Vec::new();
    for (t, out) in captures {
        let (status, stderr) = t.wait(Duration::from_secs(30)).unwrap();
        assert!(status.success(), "{stderr}");
        paths.push(out.to_str().unwrap().to_owned());
    }
    drop(lab);
    let args: Vec<&str> = ["--format", "json"]
        .into_iter()
        .chain(paths.iter().map(String::as_str))
        .collect();
    let (ok, out, err) = report(&args);
    assert!(ok, "{err}");
    let join: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(join["type"], "join", "{join}");
    let hs = join["handshakes"].as_array().unwrap();
    // c1's answered request and c2's PAWS-dropped SYN crossed both hops.
    let paws = hs
        .iter()
        .find(|h| {
            h["client"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{second}:"))
        })
        .unwrap_or_else(|| panic!("{second}'s handshake not joined: {join:#}"));
    let nodes = paws["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{paws:#}");
    let hops: Vec<&str> = nodes
        .iter()
        .map(|n| n["first_hop"].as_str().unwrap())
        .collect();
    assert_ne!(hops[0], hops[1], "{paws:#}");
    assert!(
        nodes.iter().all(|n| n["client"] == paws["client"]),
        "{paws:#}"
    );
    assert!(
        nodes.iter().any(|n| n["drops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "TCP_RFC7323_TW_PAWS")),
        "{paws:#}"
    );
    let (ok, text, _) = report(&paths.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok && text.contains("joined by ISN and TSval"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
