//! Names that others choose, printed by swarmtrace running as root: a process's name (any
//! user can set it), a namespace's and an interface's name (any user, in a user namespace of
//! their own), a bundle's hostname (another machine), a container's name (whoever may start
//! containers; here from a stub of the Docker API). With escape sequences, C1 characters,
//! backticks, `$(...)` and newlines in them:
//!
//! - nothing of them reaches the terminal as a control: no ESC byte, no C1 character, in the
//!   text output (stdout and stderr);
//! - a confirm command reads back, through `sh` itself, as exactly the words meant (the
//!   namespace's name one word, nothing executed);
//! - markdown shows them as text;
//! - `--json` keeps them exact.
//!
//! Privileged: namespaces, a drop tracer. Each test makes its drops on a port of its own.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use swarmtrace::lab::{addr, traffic, veth, Netns};
use swarmtrace_tests::{binary, require_privileged, test_port, Tracer};

/// A terminal title, BEL, red: the issue's example.
const ESC_NAME: &str = "\x1b]0;pwn\x07\x1b[31mX";

/// Every kind of hostile character at once, for names without a length limit: a title, BEL,
/// red, a C1 CSI, a right-to-left override, command substitutions, quotes, a newline, a
/// table cell's end and brackets.
fn hostile(prefix: &str) -> String {
    format!("{prefix}-\x1b]0;pwn\x07\x1b[31mX\u{9b}2J\u{202e}`touch pwned`$(touch pwned2)'\"\n;touch pwned3 [x]|y")
}

/// [`hostile`] as a terminal shows it: each control written out.
fn shown(prefix: &str) -> String {
    format!("{prefix}-\\x1b]0;pwn\\x07\\x1b[31mX\\u{{9b}}2J\\u{{202e}}`touch pwned`$(touch pwned2)'\"\\n;touch pwned3 [x]|y")
}

/// A prefix for a namespace name of this test process, sorted before `pid:...`.
fn prefix(tag: &str) -> String {
    format!("names{}{tag}", std::process::id() % 100_000)
}

/// A directory of this test, removed when dropped (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("swarmtrace-names-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// No escape sequence can start from this text: no ESC, no C1 character (U+0080..U+009F,
/// UTF-8 `c2 80`..`c2 9f`; U+009B alone is a CSI), no bidi override.
fn assert_terminal_safe(what: &str, out: &[u8]) {
    let text = String::from_utf8_lossy(out);
    let bad: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| {
            (c.is_control() && *c != '\n')
                || ('\u{2066}'..='\u{2069}').contains(c)
                || ('\u{202a}'..='\u{202e}').contains(c)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: control characters reach the terminal at {:?}:\n{}",
        &bad[..bad.len().min(8)],
        text.escape_debug()
    );
    assert!(!out.contains(&0x1b));
    assert!(!out
        .windows(2)
        .any(|w| w[0] == 0xc2 && (0x80..0xa0).contains(&w[1])));
}

/// What a POSIX shell reads `cmd` as, word by word: `sh -n` parses it, then `sh` splits it
/// (in an empty directory, which must stay empty: nothing in it was executed).
fn sh_words(cmd: &str) -> Vec<String> {
    let check = Command::new("sh").args(["-n", "-c", cmd]).output().unwrap();
    assert!(
        check.status.success(),
        "`sh -n` rejects {cmd:?}: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let dir = TempDir::new("sh");
    let out = Command::new("sh")
        .current_dir(&*dir)
        .args(["-c", "eval \"set -- $1\"; printf '%s\\0' \"$@\"", "sh", cmd])
        .output()
        .unwrap();
    let made: Vec<_> = std::fs::read_dir(&*dir).unwrap().flatten().collect();
    assert!(made.is_empty(), "{cmd:?} executed something: {made:?}");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    let mut words: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split('\0')
        .map(str::to_owned)
        .collect();
    words.pop();
    words
}

/// `swarmtrace ARGS` with its text output kept as bytes, stopped with SIGINT.
struct TextRun {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<String>>,
}

impl TextRun {
    /// Starts `cmd` (a `swarmtrace run` or a wrapper that execs one) and waits until it
    /// traces.
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("swarmtrace");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let t = Self {
            child,
            stdout,
            stderr,
        };
        let start = Instant::now();
        while !t.stderr.lock().unwrap().contains("Ctrl-C to stop") {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not tracing after 60 s: {}",
                t.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    /// SIGINT, then (stdout, stderr) once it has exited.
    fn stop(mut self) -> (Vec<u8>, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no exit after SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (out, err)
    }
}

impl Drop for TextRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process with a network namespace of its own (no name anywhere: swarmtrace calls it
/// `pid:PID(COMM)`) and the name `comm`: a link named so to `sleep` is what it runs.
struct Holder {
    child: Child,
    _dir: TempDir,
}

impl Holder {
    fn start(tag: &str, comm: &str) -> Self {
        let dir = TempDir::new(tag);
        let link = dir.join(comm);
        std::os::unix::fs::symlink("/usr/bin/sleep", &link).unwrap();
        let child = Command::new("unshare")
            .arg("--net")
            .arg(&link)
            .arg("120")
            .spawn()
            .expect("unshare");
        let h = Self { child, _dir: dir };
        let start = Instant::now();
        loop {
            let ns = std::fs::read_link(format!("/proc/{}/ns/net", h.pid()));
            let own = std::fs::read_link("/proc/self/ns/net").unwrap();
            if ns.is_ok_and(|n| n != own) && h.comm() == comm {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "unshare did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        swarmtrace::lab::sh(
            "nsenter",
            &[
                "-t",
                &h.pid().to_string(),
                "-n",
                "ip",
                "link",
                "set",
                "lo",
                "up",
            ],
        )
        .unwrap();
        h
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }

    fn comm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid()))
            .unwrap_or_default()
            .trim_end_matches('\n')
            .to_owned()
    }

    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(self.ns_path()).unwrap().ino()
    }

    /// A connection to a closed port on its loopback: a SYN dropped there (NO_SOCKET).
    fn refused(&self, port: u16) {
        let file = std::fs::File::open(self.ns_path()).unwrap();
        let outcome = std::thread::spawn(move || {
            // SAFETY: a namespace fd; setns affects only this thread.
            assert_eq!(
                unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            loopback_refused(port)
        })
        .join()
        .unwrap();
        assert_eq!(outcome, traffic::Outcome::Refused);
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loopback_refused(port: u16) -> traffic::Outcome {
    traffic::connect(
        "127.0.0.1:0".parse().unwrap(),
        format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(3),
    )
    .1
}

/// A namespace under /run/netns named `name`; a SYN dropped on its loopback.
fn named_refused(ns: &Netns, port: u16) {
    let outcome = ns.run(move || loopback_refused(port)).unwrap();
    assert_eq!(outcome, traffic::Outcome::Refused);
}

fn drops_for(out: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<&Value> {
    out.iter()
        .filter(|v| v["type"] == "drop" && pred(v))
        .collect()
}

/// Waits for a drop object matching `pred` from a `--json` tracer.
fn wait_drop(t: &Tracer, seen: &mut Vec<Value>, pred: impl Fn(&Value) -> bool) {
    assert!(
        t.wait_for(seen, Duration::from_secs(10), |v| v["type"] == "drop"
            && pred(v)),
        "no such drop: {seen:?}; stderr: {}",
        t.stderr()
    );
}

/// The namespace of `confirm` in its `--json` verdict and text line: a command whose words
/// are `ip netns exec NAME ss -ltn`.
fn assert_confirm_words(confirm: &str, name: &str) {
    assert_eq!(
        sh_words(confirm),
        ["ip", "netns", "exec", name, "ss", "-ltn"],
        "{confirm:?}"
    );
}

/// (a) a namespace held by a process whose name is an escape sequence, and one named (under
/// /run/netns) with everything hostile in it: text `run` prints neither raw, `--json` keeps
/// them, and the confirm command quotes the name.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn process_and_namespace_names_reach_no_terminal_and_no_shell() {
    require_privileged("process_and_namespace_names_reach_no_terminal_and_no_shell");
    let port = test_port(71);
    // Sorted before `pid:...`, so the verdict's command enters this one.
    let p = prefix("a");
    let name = hostile(&p);
    let named = Netns::create(&name).unwrap();
    let esc = Holder::start("esc", ESC_NAME);
    let c1 = Holder::start("c1", "\u{9b}2J`id`\n$(x)");
    let text = TextRun::start({
        let mut c = Command::new(binary());
        c.args(["run", "--port", &port.to_string()]);
        c
    });
    let json = Tracer::start(&["--port", &port.to_string()]).unwrap();
    named_refused(&named, port);
    esc.refused(port);
    c1.refused(port);
    let mut seen = Vec::new();
    let ino = named.inode().unwrap() as u64;
    wait_drop(&json, &mut seen, |v| v["netns"] == ino);
    wait_drop(&json, &mut seen, |v| v["netns"] == esc.inode());
    wait_drop(&json, &mut seen, |v| v["netns"] == c1.inode());
    // The text run has had the same time; its lines are written per batch.
    std::thread::sleep(Duration::from_millis(500));
    let (stdout, stderr) = text.stop();
    let out = json.stop(seen).unwrap();

    let text = String::from_utf8_lossy(&stdout).into_owned();
    assert_terminal_safe("text run (stdout)", &stdout);
    assert_terminal_safe("text run (stderr)", stderr.as_bytes());
    for label in [
        format!("pid:{}(\\x1b]0;pwn\\x07\\x1b[31mX)", esc.pid()),
        format!("pid:{}(\\u{{9b}}2J`id`\\n$(x))", c1.pid()),
        shown(&p),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(" DROP ") && l.contains(&format!("[{label} dev lo]"))),
            "no drop line names {label}:\n{text}"
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with(";touch") || l.starts_with("$(x)")),
        "a name made a line of its own:\n{text}"
    );

    // JSON: the exact names.
    assert_eq!(
        drops_for(&out, |v| v["netns"] == ino)[0]["netns_name"],
        name
    );
    assert_eq!(
        drops_for(&out, |v| v["netns"] == esc.inode())[0]["netns_name"],
        format!("pid:{}({ESC_NAME})", esc.pid())
    );
    assert_eq!(
        drops_for(&out, |v| v["netns"] == c1.inode())[0]["netns_name"],
        format!("pid:{}(\u{9b}2J`id`\n$(x))", c1.pid())
    );

    // The confirm command: exact in JSON, and shown escaped but still quoted in the text.
    let summary = out.last().unwrap();
    let verdict = summary["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["cause"] == "no-listener")
        .unwrap_or_else(|| panic!("no no-listener verdict: {summary}"));
    assert_confirm_words(verdict["confirm"].as_str().unwrap(), &name);
    let shown_cmd = text
        .lines()
        .find_map(|l| l.strip_prefix("  confirm:  "))
        .unwrap_or_else(|| panic!("no confirm line:\n{text}"));
    assert_confirm_words(shown_cmd, &shown(&p));
}

/// (b) an interface whose name is an escape sequence (Linux refuses only `/`, `:` and
/// whitespace in one): the drop line shows it escaped, `--json` exact.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn interface_names_reach_no_terminal() {
    require_privileged("interface_names_reach_no_terminal");
    let port = test_port(72);
    let ifname = "e\x1b[31m\u{9b}`$(x)`";
    assert!(ifname.len() < 16);
    let client = Netns::create(&swarmtrace_tests::ns_name("hic")).unwrap();
    let server = Netns::create(&swarmtrace_tests::ns_name("his")).unwrap();
    veth(&client, "eth0", &server, ifname).unwrap();
    addr(&client, "eth0", "10.203.0.2/24").unwrap();
    addr(&server, ifname, "10.203.0.1/24").unwrap();
    let text = TextRun::start({
        let mut c = Command::new(binary());
        c.args(["run", "--port", &port.to_string()]);
        c
    });
    let json = Tracer::start(&["--port", &port.to_string()]).unwrap();
    let (_, outcome) = client
        .run(move || {
            traffic::connect(
                "10.203.0.2:0".parse().unwrap(),
                format!("10.203.0.1:{port}").parse().unwrap(),
                Duration::from_secs(3),
            )
        })
        .unwrap();
    assert_eq!(outcome, traffic::Outcome::Refused);
    let mut seen = Vec::new();
    wait_drop(&json, &mut seen, |v| {
        v["dst"] == format!("10.203.0.1:{port}")
    });
    std::thread::sleep(Duration::from_millis(500));
    let (stdout, stderr) = text.stop();
    let out = json.stop(seen).unwrap();
    let text = String::from_utf8_lossy(&stdout).into_owned();
    assert_terminal_safe("text run (stdout)", &stdout);
    assert_terminal_safe("text run (stderr)", stderr.as_bytes());
    assert!(
        text.contains(&format!(
            "[{} dev e\\x1b[31m\\u{{9b}}`$(x)`]",
            server.name()
        )),
        "{text}"
    );
    let d = drops_for(&out, |v| v["dst"] == format!("10.203.0.1:{port}"));
    assert_eq!(d[0]["ifname"], ifname);
}

/// Runs `swarmtrace report ARGS`: (stdout bytes, stderr).
fn report(args: &[&str]) -> (Vec<u8>, String) {
    let out = Command::new(binary())
        .arg("report")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Markdown that shows `name` as text: outside code blocks, every `<` and backtick escaped;
/// the code blocks closed by their own fence.
fn assert_markdown_text(what: &str, md: &str) {
    let mut in_block: Option<&str> = None;
    for line in md.lines() {
        let ticks = line.len() - line.trim_start_matches('`').len();
        match in_block {
            Some(fence) if line == fence => in_block = None,
            Some(_) => {}
            None if ticks >= 3 => in_block = Some(&line[..ticks]),
            None => {
                if line.starts_with('|') && line.contains("pwn") {
                    // The handshakes table: 7 cells, whatever the names hold.
                    let pipes = line
                        .match_indices('|')
                        .filter(|(i, _)| !line[..*i].ends_with('\\'))
                        .count();
                    assert_eq!(pipes, 8, "{what}: a name splits a table cell: {line:?}");
                }
                let chars: Vec<char> = line.chars().collect();
                let mut i = 0;
                while i < chars.len() {
                    match chars[i] {
                        '\\' => i += 1,
                        '<' => panic!("{what}: raw `<` in {line:?}"),
                        '`' => {
                            // Our own code spans hold addresses and cause names only.
                            let end = chars[i + 1..]
                                .iter()
                                .position(|c| *c == '`')
                                .unwrap_or_else(|| {
                                    panic!("{what}: unclosed code span in {line:?}")
                                });
                            let inside: String = chars[i + 1..i + 1 + end].iter().collect();
                            assert!(
                                !inside.contains("pwn"),
                                "{what}: a name in a code span: {line:?}"
                            );
                            i += end + 1;
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
        }
    }
    assert!(in_block.is_none(), "{what}: a code block is left open");
}

/// (c) a bundle recorded with a hostile namespace name, then given a hostile hostname (a
/// bundle is another machine's word): `report` text and markdown, and the bundle's own
/// report.md, show them as text; `--format json` keeps them.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn bundle_names_and_hostname_reach_no_terminal_and_render_as_text() {
    require_privileged("bundle_names_and_hostname_reach_no_terminal_and_render_as_text");
    let port = test_port(73);
    let p = prefix("c");
    let name = hostile(&p);
    let named = Netns::create(&name).unwrap();
    let dir = TempDir::new("bundle");
    let bundle = dir.join("b");
    let t = Tracer::spawn(&[
        "capture",
        "-o",
        bundle.to_str().unwrap(),
        "--duration",
        "3s",
        "--port",
        &port.to_string(),
    ])
    .unwrap();
    named_refused(&named, port);
    let (status, stderr) = t.wait(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "capture: {stderr}");
    let host = hostile("host");
    let sys_path = bundle.join("system.json");
    let mut system: Value =
        serde_json::from_str(&std::fs::read_to_string(&sys_path).unwrap()).unwrap();
    system["hostname"] = Value::String(host.clone());
    std::fs::write(&sys_path, serde_json::to_vec_pretty(&system).unwrap()).unwrap();
    let b = bundle.to_str().unwrap();

    let (text, err) = report(&[b]);
    assert_terminal_safe("report (text)", &text);
    assert_terminal_safe("report (stderr)", err.as_bytes());
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains(&format!("{} (Linux", shown("host"))),
        "{text}"
    );
    let shown_cmd = text
        .lines()
        .find_map(|l| l.strip_prefix("  confirm:  "))
        .unwrap_or_else(|| panic!("no confirm line:\n{text}"));
    assert_confirm_words(shown_cmd, &shown(&p));

    let (md, _) = report(&["--format", "markdown", b]);
    assert_terminal_safe("report (markdown)", &md);
    let md = String::from_utf8_lossy(&md);
    assert_markdown_text("report --format markdown", &md);
    assert!(
        md.contains("- host: host-\\\\x1b\\]0;pwn\\\\x07\\\\x1b\\[31mX\\\\u{9b}2J\\\\u{202e}\\`touch pwned\\`$(touch pwned2)'\"\\\\n;touch pwned3 \\[x\\]\\|y (Linux"),
        "{md}"
    );
    let saved = std::fs::read(bundle.join("report.md")).unwrap();
    assert_terminal_safe("report.md", &saved);
    assert_markdown_text("report.md", &String::from_utf8_lossy(&saved));

    let (json, _) = report(&["--format", "json", b]);
    let v: Value = serde_json::from_slice(json.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let verdict = v["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["cause"] == "no-listener")
        .unwrap_or_else(|| panic!("no no-listener verdict: {v}"));
    assert_confirm_words(verdict["confirm"].as_str().unwrap(), &name);
}

/// A Docker Engine API stub on a unix socket: one container, whose sandbox is `file`, named
/// `name` with the swarm service `service`. Answers until dropped.
struct DockerStub {
    path: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl DockerStub {
    fn start(path: &Path, file: &str, name: &str, service: &str) -> Self {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let id = format!("{file}{}", "0".repeat(64 - file.len()));
        let container = serde_json::json!({
            "Id": id,
            "Name": format!("/{name}"),
            "Config": {"Labels": {"com.docker.swarm.service.name": service}},
            "NetworkSettings": {"SandboxKey": format!("/var/run/docker/netns/{file}")},
        });
        let list = serde_json::json!([{"Id": id, "Names": [format!("/{name}")]}]);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let done = stop.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((mut s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    match s.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let path = path.split('?').next().unwrap_or("");
                let (status, body) = if path.ends_with("/containers/json") {
                    ("200 OK", list.to_string())
                } else if path.contains("/containers/") && path.ends_with("/json") {
                    ("200 OK", container.to_string())
                } else if path.ends_with("/networks") {
                    ("200 OK", "[]".to_owned())
                } else {
                    ("404 Not Found", r#"{"message":"not here"}"#.to_owned())
                };
                let _ = std::io::Write::write_all(
                    &mut s,
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self {
            path: path.to_owned(),
            stop,
        }
    }
}

impl Drop for DockerStub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `swarmtrace ARGS` in a mount namespace of its own where Docker's netns directory holds
/// only `holder`'s namespace, as file `file` (so nothing of the host's Docker is touched or
/// seen), with DOCKER_HOST at `sock`.
fn in_docker_view(holder: &Holder, file: &str, sock: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs swarmtrace-names /run && mkdir -p /run/docker/netns && touch /run/docker/netns/{file} && mount --bind {} /run/docker/netns/{file} && exec \"$@\"",
            holder.ns_path()
        ))
        .arg("sh")
        .arg(binary())
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()));
    c
}

/// (d) a container (and swarm service) name from the Docker API: the drop line, the summary
/// and the live view's data show it escaped, `--json` exact, and the confirm command still
/// enters the container's namespace by its file.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn container_names_from_docker_reach_no_terminal() {
    require_privileged("container_names_from_docker_reach_no_terminal");
    let port = test_port(74);
    let dir = TempDir::new("docker");
    let sock = dir.join("docker.sock");
    let file = "5e1ec7ab1e00";
    let name = hostile("web");
    let service = "svc\x1b[2J\u{9b}0m`id`";
    let _stub = DockerStub::start(&sock, file, &name, service);
    let holder = Holder::start("dh", "sleep");
    let text = TextRun::start(in_docker_view(
        &holder,
        file,
        &sock,
        &["run", "--port", &port.to_string()],
    ));
    let json = TextRun::start(in_docker_view(
        &holder,
        file,
        &sock,
        &["run", "--json", "--port", &port.to_string()],
    ));
    holder.refused(port);
    let start = Instant::now();
    let label = format!("container {name} (service {service}) [{file}]");
    let label_json = serde_json::to_string(&label).unwrap();
    while !String::from_utf8_lossy(&json.stdout.lock().unwrap()).contains(&label_json) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no drop named after the container: {}; stderr {}",
            String::from_utf8_lossy(&json.stdout.lock().unwrap()),
            json.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (stdout, stderr) = text.stop();
    let (out, _) = json.stop();
    assert_terminal_safe("text run (stdout)", &stdout);
    assert_terminal_safe("text run (stderr)", stderr.as_bytes());
    let text = String::from_utf8_lossy(&stdout);
    let label_shown = format!(
        "container {} (service svc\\x1b[2J\\u{{9b}}0m`id`) [5e1ec7ab1e00]",
        shown("web")
    );
    assert!(text.contains(&format!("[{label_shown} dev lo]")), "{text}");
    let objects: Vec<Value> = String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let d = drops_for(&objects, |v| v["netns"] == holder.inode());
    assert_eq!(d[0]["netns_name"], label);
    let verdict = objects.last().unwrap()["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["cause"] == "no-listener")
        .cloned()
        .unwrap();
    let confirm = verdict["confirm"].as_str().unwrap();
    assert_eq!(
        sh_words(confirm),
        [
            "nsenter",
            "--net=/var/run/docker/netns/5e1ec7ab1e00",
            "ss",
            "-ltn"
        ]
    );
}

/// A `PATH` with a directory another user controls first (root's `PATH` inherited through
/// `sudo -E`, a script's): the lab's tools (`ip`, `iptables`, `tc`, run in namespaces through
/// `ip netns exec` too) are the system's, never a same-named program found through `PATH`.
/// Here the impostors record that they ran, then do the real tool's work.
#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn the_labs_tools_are_the_systems_not_the_paths() {
    require_privileged("hostile");
    let dir = std::env::temp_dir().join(format!("swarmtrace-test-path-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("ran");
    for tool in ["ip", "iptables", "tc", "conntrack", "sysctl"] {
        let Some(real) = swarmtrace::kernel::tool::path(tool) else {
            continue;
        };
        let fake = dir.join(tool);
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho {tool} >> '{}'\nexec '{}' \"$@\"\n",
                marker.display(),
                real.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(binary())
        .args(["demo", "healthy", "--json"])
        .env("PATH", &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ran.is_empty(), "programs found through PATH ran: {ran}");
}
