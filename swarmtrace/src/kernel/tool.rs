//! The system tools swarmtrace asks for what it does not read itself (`ip`, `iptables-save`),
//! run as root during an incident: found only in the system's directories (never through a
//! `PATH` another user may have put a directory of theirs in), with no input, a bounded output
//! and a time limit (a tool waiting on a lock Docker holds, or printing a host's hundred
//! thousand rules, must not hold the run up nor fill its memory).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where tools are looked for, in this order.
pub const DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];
/// Output read from a tool at most, by default; the rest is drained unread.
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// How long a tool may run, by default; then it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Its stderr is kept up to this many bytes (for the error message).
const MAX_STDERR: u64 = 4096;

/// The tool `name` in [`DIRS`]; None for a name with a path in it or one not installed there.
pub fn path(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    DIRS.iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

/// What a tool printed: its output (cut to whole lines at the bound when longer: `truncated`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub text: String,
    pub truncated: bool,
}

/// Runs tool `name` with `args` under [`MAX_OUTPUT`] and [`TIMEOUT`]: None when it is not
/// installed in the system's directories, its stderr (or why it could not run or finish) when
/// it fails.
pub fn run(name: &str, args: &[&str]) -> Option<Result<String, String>> {
    run_bounded(name, args, MAX_OUTPUT, TIMEOUT).map(|r| r.map(|o| o.text))
}

/// [`run`] with its own bounds.
pub fn run_bounded(
    name: &str,
    args: &[&str],
    max_output: usize,
    timeout: Duration,
) -> Option<Result<Output, String>> {
    let program = path(name)?;
    let mut child = match Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Some(Err(format!("{}: {e}", program.display()))),
    };
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Some(Err("no pipe to the tool".to_owned()));
    };
    // Readers on their own threads, so a tool that fills one pipe is never blocked on it; past
    // the bound the rest is drained unread.
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout)
            .take(max_output as u64 + 1)
            .read_to_end(&mut buf);
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(MAX_STDERR).read_to_end(&mut buf);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        buf
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // A killed tool's children may hold the pipes open: the readers are not waited for then.
    let Some(status) = status else {
        return Some(Err(format!(
            "{} did not finish within {} s: killed",
            program.display(),
            timeout.as_secs_f64()
        )));
    };
    let mut buf = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Some(Err(String::from_utf8_lossy(&stderr).trim().to_owned()));
    }
    let truncated = buf.len() > max_output;
    if truncated {
        // Whole lines only: a cut line could read as another, shorter one.
        buf.truncate(max_output);
        let end = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        buf.truncate(end);
    }
    Some(Ok(Output {
        text: String::from_utf8_lossy(&buf).into_owned(),
        truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_found_only_in_the_system_directories() {
        let sh = path("sh").expect("sh is installed");
        assert!(DIRS.iter().any(|d| sh.starts_with(d)), "{}", sh.display());
        for name in [
            "",
            "../bin/sh",
            "/bin/sh",
            "./sh",
            ".hidden",
            "no-such-tool-here",
        ] {
            assert_eq!(path(name), None, "{name}");
        }
        assert!(run("no-such-tool-here", &[]).is_none());
    }

    #[test]
    fn a_tool_that_hangs_is_killed_at_the_time_limit() {
        let start = Instant::now();
        let r = crate::kernel::run_tool("sleep", &["30"]).expect("sleep is installed");
        let took = start.elapsed();
        assert!(took < TIMEOUT + Duration::from_secs(2), "took {took:?}");
        assert!(r.unwrap_err().contains("did not finish within 5 s"));
    }

    #[test]
    fn a_tool_that_prints_too_much_is_cut_at_a_line() {
        // 8 MiB of lines of 8 bytes: cut at MAX_OUTPUT, whole lines only.
        let r = crate::kernel::run_tool(
            "sh",
            &["-c", "head -c 8388608 /dev/zero | tr '\\0' x | fold -w 7"],
        )
        .expect("sh is installed")
        .unwrap();
        assert!(r.len() <= MAX_OUTPUT, "{}", r.len());
        assert!(r.len() > MAX_OUTPUT - 8, "{}", r.len());
        assert!(r.ends_with('\n') && r.lines().all(|l| l.len() == 7));
        let o = run_bounded("sh", &["-c", "printf 'abc\\ndefgh'"], 6, TIMEOUT)
            .unwrap()
            .unwrap();
        assert_eq!(
            o,
            Output {
                text: "abc\n".into(),
                truncated: true
            }
        );
    }

    #[test]
    fn a_failing_tool_gives_its_stderr() {
        let r = run("sh", &["-c", "echo nope >&2; exit 3"]).unwrap();
        assert_eq!(r, Err("nope".to_owned()));
    }
}
