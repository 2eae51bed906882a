//! Privileged end-to-end tests of the live view: the real `swarmtrace run` on a pseudo-terminal
//! (tmux), real handshakes between two namespaces, the screen read back with
//! `tmux capture-pane`. Run as root (`sudo cargo xtask test`); skipped otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use swarmtrace::lab::{addr, traffic, veth, Netns};
use swarmtrace_tests::{binary, ns_name, require_privileged, test_port};

const CLIENT: &str = "10.214.0.2";
const SERVER: &str = "10.214.0.1";

/// tmux is there, else the test fails saying so.
fn require_tmux(test: &str) {
    assert!(
        Command::new("tmux").arg("-V").output().is_ok(),
        "{test}: needs tmux (scripts/setup.sh installs it)"
    );
}

/// A tmux server of our own (its own socket: tests run in parallel) with one 160x45 pane
/// running a command, then a line with its exit status (read from the screen: tmux may be
/// slow to reap a pane's process and report its status). Dropping it ends the command with
/// SIGINT (so it detaches cleanly), then the server.
struct Pane {
    socket: String,
    dir: PathBuf,
}

const EXITED: &str = "[swarmtrace exited with status ";

impl Pane {
    fn start(tag: &str, env: &[&str], args: &[&str]) -> Pane {
        let socket = format!("swarmtrace-tui-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&socket);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("tmux.conf");
        std::fs::write(&conf, "set-option -g history-limit 2000\n").unwrap();
        let mut cmd = vec!["env".to_owned(), "-u".to_owned(), "NO_COLOR".to_owned()];
        cmd.extend(env.iter().map(|s| s.to_string()));
        cmd.push(binary().display().to_string());
        cmd.extend(args.iter().map(|s| s.to_string()));
        // The pane's shell reports the status and stays, so the screen can be read.
        let script = format!("{}; echo \"{EXITED}$?]\"; exec sleep 3600", cmd.join(" "));
        let pane = Pane {
            socket: socket.clone(),
            dir,
        };
        let out = Command::new("tmux")
            .args(["-L", &socket, "-f"])
            .arg(&conf)
            .args(["new-session", "-d", "-s", "view", "-x", "160", "-y", "45"])
            .arg(script)
            .env_remove("TMUX")
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux new-session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pane
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen as text.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "view"])
    }

    /// The screen with its escape sequences (colors, bold, ...).
    fn screen_escapes(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-e", "-t", "view"])
    }

    /// The screen and the lines scrolled off it.
    fn everything(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-S", "-", "-t", "view"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "view"];
        args.extend_from_slice(keys);
        self.tmux(&args);
    }

    /// swarmtrace's exit status once it has ended.
    fn exit_status(&self) -> Option<i32> {
        let all = self.everything();
        let at = all.find(EXITED)? + EXITED.len();
        all[at..].split(']').next()?.trim().parse().ok()
    }

    /// The swarmtrace process: the child of the pane's shell.
    fn pid(&self) -> Option<i32> {
        let shell: i32 = self
            .tmux(&["display-message", "-p", "-t", "view", "#{pane_pid}"])
            .trim()
            .parse()
            .ok()?;
        std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// Waits until the screen satisfies `pred`; panics with the screen otherwise.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if let Some(code) = self.exit_status() {
                panic!(
                    "swarmtrace ended ({code}) while waiting for {what}:\n{}",
                    self.everything()
                );
            }
            if Instant::now() > deadline {
                panic!("no {what} within {timeout:?}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(code) = self.exit_status() {
                return Some(code);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            if let Some(pid) = self.pid() {
                // SAFETY: signalling the process tmux started for us.
                unsafe { libc::kill(pid, libc::SIGINT) };
                self.wait_exit(Duration::from_secs(15));
            }
        }
        self.tmux(&["kill-server"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The numbers of the table row of `service` and `client`: failed, answered, dropped,
/// reset, unanswered.
fn row(screen: &str, service: &str, client: &str) -> Option<[u64; 5]> {
    screen.lines().find_map(|l| {
        let words: Vec<&str> = l
            .trim_matches(|c: char| c == '│' || c.is_whitespace())
            .split_whitespace()
            .collect();
        if words.len() < 7 || words[0] != service || words[1] != client {
            return None;
        }
        let mut n = [0u64; 5];
        for (i, w) in words[2..7].iter().enumerate() {
            n[i] = w.parse().ok()?;
        }
        Some(n)
    })
}

/// The line index of the table row of `service`.
fn row_index(screen: &str, service: &str) -> Option<usize> {
    screen.lines().position(|l| {
        l.trim_start_matches(|c: char| c == '│' || c.is_whitespace())
            .starts_with(&format!("{service} "))
    })
}

/// SGR parameters that set a color: 30-38, 40-48, 90-97, 100-107 (39 and 49 are "default").
fn color_sequences(screen: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = screen;
    while let Some(i) = rest.find("\x1b[") {
        rest = &rest[i + 2..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ';' || c == ':'))
            .unwrap_or(rest.len());
        let (params, after) = rest.split_at(end);
        if after.starts_with('m') {
            let colored = params.split([';', ':']).any(|p| {
                matches!(
                    p.parse::<u32>(),
                    Ok(30..=38 | 40..=48 | 90..=97 | 100..=107)
                )
            });
            if colored {
                found.push(format!("ESC[{params}m"));
            }
        }
        rest = after;
    }
    found
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

/// `n` answered requests to `open` and `n` refused connections to `closed`.
fn round(client: &Netns, open: u16, closed: u16, n: usize) {
    for _ in 0..n {
        let answer = client
            .run(move || {
                traffic::request(sock(CLIENT, 0), sock(SERVER, open), Duration::from_secs(3))
            })
            .unwrap();
        assert_eq!(answer.unwrap().1, "ok\n");
        let (_, outcome) = client
            .run(move || {
                traffic::connect(
                    sock(CLIENT, 0),
                    sock(SERVER, closed),
                    Duration::from_secs(3),
                )
            })
            .unwrap();
        assert_eq!(outcome, traffic::Outcome::Refused);
    }
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn live_view_counts_sorts_filters_and_quits_leaving_the_summary() {
    let test = "live_view_counts_sorts_filters_and_quits_leaving_the_summary";
    require_privileged(test);
    require_tmux(test);
    let client = Netns::create(&ns_name("vc")).unwrap();
    let server = Netns::create(&ns_name("vs")).unwrap();
    veth(&client, "eth0", &server, "eth0").unwrap();
    addr(&client, "eth0", &format!("{CLIENT}/24")).unwrap();
    addr(&server, "eth0", &format!("{SERVER}/24")).unwrap();
    let (open, closed) = (test_port(21), test_port(22));
    let service =
        traffic::Service::start(&server, sock(SERVER, open), 100, Duration::from_secs(120))
            .unwrap();
    let iface = format!("{}:eth0", server.name());
    let pane = Pane::start(
        "main",
        &[],
        &["run", "--iface", &iface, "--client", "10.214.0.0/24"],
    );
    let (open_svc, closed_svc) = (
        sock(SERVER, open).to_string(),
        sock(SERVER, closed).to_string(),
    );

    // The header: the watched interface attached, exact drops, lost events, elapsed time.
    let s = pane.wait_for("header", Duration::from_secs(60), |s| {
        s.contains(&format!("watching {iface} attached")) && s.contains("elapsed")
    });
    assert!(s.contains("lost events 0"), "{s}");
    assert!(s.contains("drops 0 (exact)"), "{s}");

    // The rows of both services appear, with counts that grow.
    round(&client, open, closed, 3);
    let first = pane.wait_for("3 answered and 3 failed", Duration::from_secs(15), |s| {
        row(s, &open_svc, CLIENT).is_some_and(|r| r[1] >= 3)
            && row(s, &closed_svc, CLIENT).is_some_and(|r| r[0] >= 3)
    });
    let (o1, c1) = (
        row(&first, &open_svc, CLIENT).unwrap(),
        row(&first, &closed_svc, CLIENT).unwrap(),
    );
    round(&client, open, closed, 2);
    let second = pane.wait_for("the counts growing", Duration::from_secs(15), |s| {
        row(s, &open_svc, CLIENT).is_some_and(|r| r[1] >= o1[1] + 2)
            && row(s, &closed_svc, CLIENT).is_some_and(|r| r[0] >= c1[0] + 2)
    });
    let c2 = row(&second, &closed_svc, CLIENT).unwrap();
    assert_eq!(c2[1], 0, "nothing answered on the closed port: {second}");
    let closed_line = second
        .lines()
        .find(|l| l.contains(&format!("{closed_svc} ")))
        .unwrap();
    assert!(
        closed_line.contains("NO_SOCKET") && closed_line.contains(server.name()),
        "last reason and namespace: {closed_line}"
    );
    // The header's exact drops count them, and the verdicts so far name the cause.
    assert!(!second.contains("drops 0 (exact)"), "{second}");
    assert!(second.contains("verdicts so far"), "{second}");
    assert!(
        second
            .lines()
            .any(|l| l.contains("no-listener") && l.contains(CLIENT)),
        "no no-listener verdict:\n{second}"
    );
    assert!(
        second.contains(&format!("SYN     NO_SOCKET in {}", server.name())),
        "no recent drop:\n{second}"
    );
    // Without NO_COLOR there are colors (so that the NO_COLOR test means something).
    assert!(
        !color_sequences(&pane.screen_escapes()).is_empty(),
        "no color at all without NO_COLOR"
    );

    // Sorted by failures first: the closed port's row above; `s` sorts by answered.
    let (oi, ci) = (
        row_index(&second, &open_svc).unwrap(),
        row_index(&second, &closed_svc).unwrap(),
    );
    assert!(ci < oi, "closed port first by FAILED:\n{second}");
    assert!(second.contains("FAILED▼"), "{second}");
    pane.keys(&["s"]);
    let sorted = pane.wait_for("sort by ANSWERED", Duration::from_secs(5), |s| {
        s.contains("ANSWERED▼")
    });
    assert!(
        row_index(&sorted, &open_svc).unwrap() < row_index(&sorted, &closed_svc).unwrap(),
        "open port first by ANSWERED:\n{sorted}"
    );
    // `r` reverses.
    pane.keys(&["r"]);
    let reversed = pane.wait_for("reversed", Duration::from_secs(5), |s| {
        s.contains("ANSWERED▲")
    });
    assert!(
        row_index(&reversed, &closed_svc).unwrap() < row_index(&reversed, &open_svc).unwrap(),
        "{reversed}"
    );

    // `/` filters (service, client or reason), Enter applies, Esc clears.
    pane.keys(&["/"]);
    pane.keys(&["-l", &closed.to_string()]);
    pane.keys(&["Enter"]);
    let filtered = pane.wait_for("the filter", Duration::from_secs(5), |s| {
        s.contains(&format!("matching \"{closed}\""))
    });
    assert!(row_index(&filtered, &closed_svc).is_some(), "{filtered}");
    assert!(row_index(&filtered, &open_svc).is_none(), "{filtered}");
    pane.keys(&["Escape"]);
    pane.wait_for("the filter cleared", Duration::from_secs(5), |s| {
        row_index(s, &open_svc).is_some() && row_index(s, &closed_svc).is_some()
    });

    // `q` ends the run: the view gives the terminal back and the summary is printed.
    pane.keys(&["q"]);
    let code = pane.wait_exit(Duration::from_secs(20));
    let all = pane.everything();
    assert_eq!(code, Some(0), "exit status; the pane:\n{all}");
    assert!(all.contains("== swarmtrace summary"), "{all}");
    assert!(all.contains("[no-listener]"), "{all}");
    assert!(
        !all.contains("ANSWERED▲") && !all.contains("verdicts so far"),
        "the live view was left on the screen:\n{all}"
    );
    // What the run wrote on stderr while the view was open is written out after it.
    assert!(all.contains("swarmtrace: tracing TCP handshakes"), "{all}");
    drop(pane);
    assert!(service.stop().unwrap() >= 5);
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn no_color_means_no_color_escapes() {
    let test = "no_color_means_no_color_escapes";
    require_privileged(test);
    require_tmux(test);
    let ns = Netns::create(&ns_name("vn")).unwrap();
    let iface = format!("{}:lo", ns.name());
    for no_color in [false, true] {
        let env: &[&str] = if no_color { &["NO_COLOR=1"] } else { &[] };
        let pane = Pane::start(
            if no_color { "nocolor" } else { "color" },
            env,
            &["run", "--iface", &iface, "--port", "9"],
        );
        pane.wait_for("header", Duration::from_secs(60), |s| {
            s.contains(&format!("watching {iface} attached"))
        });
        // Let a redraw or two happen.
        std::thread::sleep(Duration::from_millis(600));
        let escapes = pane.screen_escapes();
        let colors = color_sequences(&escapes);
        if no_color {
            assert!(
                colors.is_empty(),
                "NO_COLOR=1 but colors {colors:?} in:\n{escapes}"
            );
            // Still a styled screen: bold and reverse are not colors.
            assert!(escapes.contains("\x1b["), "{escapes}");
        } else {
            assert!(!colors.is_empty(), "no color without NO_COLOR:\n{escapes}");
        }
        pane.keys(&["q"]);
        assert_eq!(
            pane.wait_exit(Duration::from_secs(20)),
            Some(0),
            "{}",
            pane.everything()
        );
    }
}

#[test]
fn color_sequences_are_recognised() {
    assert!(color_sequences("\x1b[1m\x1b[7mx\x1b[0m\x1b[39m\x1b[49m").is_empty());
    assert_eq!(color_sequences("\x1b[1;31mx"), ["ESC[1;31m"]);
    assert_eq!(color_sequences("\x1b[38;5;2mx\x1b[38:2::1:2:3m").len(), 2);
    assert_eq!(
        row(
            "│10.0.0.1:80  10.0.0.2  3  4  1  2  0  1.2ms  -  NO_SOCKET  ns │",
            "10.0.0.1:80",
            "10.0.0.2"
        ),
        Some([3, 4, 1, 2, 0])
    );
}
