//! `report` on hostile bundles (no root needed, so these always run): a gzip bomb, a huge
//! NDJSON line, more than the read budget across bundles, and archives whose entries are
//! duplicated, mixed between top-level directories, links, devices, absolute or `..`. Each
//! is an error (exit status 1) that names the file or entry and the limit, and the child's
//! peak RSS stays under 256 MiB. The child runs with a 1 GiB address-space limit and a
//! deadline, so an old binary that inflates a bomb into memory cannot hurt the machine.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use swarmtrace_tests::binary;
use tar::{EntryType, Header};

const MIB: u64 = 1 << 20;
/// The child's address space: far above what `report` needs, far below the machine's.
const CHILD_AS: u64 = 1 << 30;
/// Peak RSS a hostile bundle may cost.
const MAX_RSS: u64 = 256 * MIB;
const DEADLINE: Duration = Duration::from_secs(120);

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "swarmtrace-test-report-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// How a `report` child ended.
#[derive(Debug)]
struct Outcome {
    /// The exit status, or None when a signal ended it.
    code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
    /// Peak RSS (the kernel's VmHWM, from wait4's rusage), bytes.
    max_rss: u64,
    took: Duration,
}

impl Outcome {
    /// Exit status 1, a message naming every one of `names`, no panic, peak RSS in bounds.
    fn assert_refused(&self, what: &str, names: &[&str]) {
        assert!(
            !self.timed_out,
            "{what}: still running after {DEADLINE:?} (killed): {self:?}"
        );
        assert_eq!(
            (self.code, self.signal),
            (Some(1), None),
            "{what}: expected exit status 1: {self:?}"
        );
        for n in names {
            assert!(
                self.stderr.contains(n),
                "{what}: the message does not name {n:?}: {}",
                self.stderr
            );
        }
        assert!(!self.stderr.contains("panicked"), "{what}: {}", self.stderr);
        assert!(
            self.max_rss < MAX_RSS,
            "{what}: peak RSS {} MiB, over {} MiB",
            self.max_rss / MIB,
            MAX_RSS / MIB
        );
        eprintln!(
            "{what}: refused in {:?}, peak RSS {} MiB: {}",
            self.took,
            self.max_rss / MIB,
            self.stderr.trim()
        );
    }
}

/// Runs `swarmtrace report ARGS` with a 1 GiB address space, killed at the deadline.
fn report(dir: &Path, args: &[&Path]) -> Outcome {
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let mut cmd = Command::new(binary());
    cmd.arg("report")
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: CHILD_AS,
                rlim_max: CHILD_AS,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    loop {
        // SAFETY: waits for our own child, whose pid stays ours until it is reaped here.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if started.elapsed() > DEADLINE {
            timed_out = true;
            // SAFETY: the child is not reaped yet, so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            assert_eq!(r, pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    drop(child); // reaped above
    Outcome {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        timed_out,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        max_rss: usage.ru_maxrss as u64 * 1024,
        took,
    }
}

/// The files of a small valid bundle (no handshakes), by name.
fn valid_files() -> Vec<(&'static str, Vec<u8>)> {
    use swarmtrace::evidence::format::{handshakes_json, Recorded, FORMAT};
    let hs = Recorded {
        handshakes: vec![],
        hops: vec![],
        forgotten: 0,
        clock: swarmtrace::clock::WallClock::sample(),
    };
    let system = serde_json::json!({
        "format": FORMAT,
        "hostname": "node-1",
        "kernel": {"release": "6.18"},
        "verdict_context": swarmtrace::verdict::Context::default(),
    });
    vec![
        ("handshakes.json", handshakes_json(&hs).unwrap()),
        ("system.json", system.to_string().into_bytes()),
        (
            "events.ndjson",
            concat!(
                "{\"type\":\"handshake\",\"verdict\":\"dropped\",\"client\":\"10.0.0.1:4000\",\"service\":\"10.0.0.2:80\"}\n",
                "{\"type\":\"summary\",\"drops\":1,\"handshakes\":{\"dropped\":1},\"verdicts\":[]}\n"
            )
            .as_bytes()
            .to_vec(),
        ),
    ]
}

fn valid_dir(dir: &Path) -> PathBuf {
    let b = dir.join("bundle");
    std::fs::create_dir_all(&b).unwrap();
    for (name, bytes) in valid_files() {
        std::fs::write(b.join(name), bytes).unwrap();
    }
    b
}

/// Part of an entry's data: bytes, or a segment repeated (compressed once, its compressed
/// bytes repeated: a bomb costs its compressed size to build, not its size).
enum Part {
    Bytes(Vec<u8>),
    Repeat(Vec<u8>, u64),
}

impl Part {
    fn len(&self) -> u64 {
        match self {
            Part::Bytes(b) => b.len() as u64,
            Part::Repeat(s, n) => s.len() as u64 * n,
        }
    }
}

/// One archive entry: its raw name (written as is, `..` and absolute paths included), type,
/// link target and data.
struct Entry {
    name: Vec<u8>,
    kind: EntryType,
    link: Option<&'static str>,
    parts: Vec<Part>,
}

fn file(name: &str, bytes: &[u8]) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        kind: EntryType::Regular,
        link: None,
        parts: vec![Part::Bytes(bytes.to_vec())],
    }
}

fn special(name: &str, kind: EntryType, link: Option<&'static str>) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        kind,
        link,
        parts: vec![],
    }
}

fn valid_entries(top: &str) -> Vec<Entry> {
    valid_files()
        .into_iter()
        .map(|(n, b)| file(&format!("{top}{n}"), &b))
        .collect()
}

/// Raw deflate of `data`, ending byte-aligned with a fresh dictionary (a full flush), or
/// ending the stream: pieces made this way can be concatenated, and repeated.
fn deflate(data: &[u8], last: bool) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(data.len() / 4 + 4096);
    let mut input = data;
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Full
    };
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity());
        }
        let before = c.total_in();
        let status = c.compress_vec(input, &mut out, flush).unwrap();
        input = &input[(c.total_in() - before) as usize..];
        let room_left = out.capacity() > out.len();
        if input.is_empty() && (status == Status::StreamEnd || (!last && room_left)) {
            return out;
        }
    }
}

/// Writes the entries as a `.tar.gz`: GNU headers with names written raw (a long name as a
/// GNU long-name entry), repeated parts repeated in the compressed stream.
fn tarball(path: &Path, entries: &[Entry]) {
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut crc = Crc::new();
    let mut plain: Vec<u8> = Vec::new();
    fn flush(gz: &mut Vec<u8>, crc: &mut Crc, plain: &mut Vec<u8>, last: bool) {
        crc.update(plain);
        gz.extend(deflate(plain, last));
        plain.clear();
    }
    for e in entries {
        let size: u64 = e.parts.iter().map(Part::len).sum();
        if e.name.len() > 99 {
            let mut h = Header::new_gnu();
            h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
            h.set_entry_type(EntryType::GNULongName);
            h.set_size(e.name.len() as u64 + 1);
            h.set_mode(0o644);
            h.set_cksum();
            plain.extend_from_slice(h.as_bytes());
            plain.extend_from_slice(&e.name);
            plain.push(0);
            plain.resize(plain.len().next_multiple_of(512), 0);
        }
        let mut h = Header::new_gnu();
        let n = e.name.len().min(99);
        h.as_gnu_mut().unwrap().name[..n].copy_from_slice(&e.name[..n]);
        h.set_entry_type(e.kind);
        h.set_size(size);
        h.set_mode(0o600);
        h.set_mtime(1_700_000_000);
        if let Some(l) = e.link {
            h.set_link_name(l).unwrap();
        }
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(5).unwrap();
        }
        h.set_cksum();
        plain.extend_from_slice(h.as_bytes());
        for p in &e.parts {
            match p {
                Part::Bytes(b) => plain.extend_from_slice(b),
                Part::Repeat(seg, times) => {
                    flush(&mut gz, &mut crc, &mut plain, false);
                    let piece = deflate(seg, false);
                    let mut seg_crc = Crc::new();
                    seg_crc.update(seg);
                    for _ in 0..*times {
                        gz.extend_from_slice(&piece);
                        crc.combine(&seg_crc);
                    }
                }
            }
        }
        let padded = size.next_multiple_of(512);
        plain.resize(plain.len() + (padded - size) as usize, 0);
    }
    plain.resize(plain.len() + 1024, 0);
    flush(&mut gz, &mut crc, &mut plain, true);
    gz.extend_from_slice(&crc.sum().to_le_bytes());
    gz.extend_from_slice(&crc.amount().to_le_bytes());
    std::fs::File::create(path).unwrap().write_all(&gz).unwrap();
}

/// One MiB of `{"type":"drop"}` lines.
fn drop_lines() -> Vec<u8> {
    b"{\"type\":\"drop\"}\n".repeat((MIB / 16) as usize)
}

#[test]
fn the_test_archives_are_valid_gzip_and_tar() {
    // The builder above, checked against the tar and gzip crates (and GNU tar when present):
    // a bundle made with it renders.
    let dir = tmpdir("builder");
    let tgz = dir.join("ok.tar.gz");
    let mut entries = valid_entries("node-1/");
    entries.push(Entry {
        name: b"node-1/handshakes.pcapng".to_vec(),
        kind: EntryType::Regular,
        link: None,
        parts: vec![
            Part::Bytes(b"head".to_vec()),
            Part::Repeat(vec![7; 1 << 16], 3),
            Part::Bytes(b"tail".to_vec()),
        ],
    });
    tarball(&tgz, &entries);
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&tgz).unwrap(),
    ));
    let mut sizes = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut v).unwrap();
        sizes.push(v.len());
    }
    assert_eq!(sizes.last(), Some(&(8 + 3 * (1 << 16))));
    // The gzip trailer (CRC and length) holds: the whole stream reads to its end.
    let mut all = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&tgz).unwrap()),
        &mut all,
    )
    .unwrap();
    if let Ok(st) = Command::new("tar").arg("tzf").arg(&tgz).output() {
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    let o = report(&dir, &[&tgz]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert!(o.stdout.contains("node-1"), "{o:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_gzip_bomb_is_refused_in_bounded_memory() {
    let dir = tmpdir("bomb");
    let bomb = dir.join("bomb.tar.gz");
    let mut entries = valid_entries("node-1/");
    // events.ndjson: 4 GiB and 1 MiB of drop lines, valid NDJSON all the way, in about 8 MB
    // (deflate cannot do better than about 1000:1).
    entries[2] = Entry {
        name: b"node-1/events.ndjson".to_vec(),
        kind: EntryType::Regular,
        link: None,
        parts: vec![Part::Repeat(drop_lines(), 4097)],
    };
    tarball(&bomb, &entries);
    let size = std::fs::metadata(&bomb).unwrap().len();
    assert!(size < 16 * MIB, "the bomb is {size} bytes");
    let o = report(&dir, &[&bomb]);
    o.assert_refused("gzip bomb", &["bomb.tar.gz", "events.ndjson", "256 MiB"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_ndjson_line_of_a_million_zeros_is_refused() {
    let dir = tmpdir("line");
    let b = valid_dir(&dir);
    let line = format!("[{}0]\n", "0,".repeat(1_000_000));
    std::fs::write(b.join("events.ndjson"), line).unwrap();
    let o = report(&dir, &[&b]);
    o.assert_refused(
        "2 MB line",
        &["events.ndjson", "line 1", "1 MiB limit for one line"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_64_mb_ndjson_line_in_an_archive_is_refused() {
    let dir = tmpdir("line64");
    let tgz = dir.join("line.tar.gz");
    let mut entries = valid_entries("node-1/");
    entries[2] = Entry {
        name: b"node-1/events.ndjson".to_vec(),
        kind: EntryType::Regular,
        link: None,
        parts: vec![
            Part::Bytes(b"[".to_vec()),
            Part::Repeat(b"0,".repeat((MIB / 2) as usize), 64),
            Part::Bytes(b"0]\n".to_vec()),
        ],
    };
    tarball(&tgz, &entries);
    let o = report(&dir, &[&tgz]);
    o.assert_refused(
        "64 MB line",
        &["line.tar.gz", "events.ndjson", "line 1", "1 MiB limit"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_read_budget_spans_every_bundle_of_a_report() {
    // Each bundle is fine alone (its 64 MiB pcapng is within its cap, and `report` skips
    // it); 17 of them decompress past the 1 GiB budget.
    let dir = tmpdir("budget");
    let tgz = dir.join("node.tar.gz");
    let mut entries = valid_entries("node/");
    entries.push(Entry {
        name: b"node/handshakes.pcapng".to_vec(),
        kind: EntryType::Regular,
        link: None,
        parts: vec![Part::Repeat(vec![0; MIB as usize], 64)],
    });
    tarball(&tgz, &entries);
    let one = report(&dir, &[&tgz]);
    assert_eq!(one.code, Some(0), "one bundle alone renders: {one:?}");
    let args: Vec<&Path> = std::iter::repeat_n(tgz.as_path(), 17).collect();
    let o = report(&dir, &args);
    o.assert_refused(
        "17 bundles",
        &["node.tar.gz", "1 GiB limit", "all bundles together"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_duplicate_entry_is_an_error_that_names_it() {
    let dir = tmpdir("dup");
    let tgz = dir.join("dup.tar.gz");
    let mut entries = valid_entries("node-1/");
    // A second events.ndjson that would hide the first one's failed handshake.
    entries.push(file(
        "node-1/events.ndjson",
        b"{\"type\":\"summary\",\"drops\":0,\"handshakes\":{},\"verdicts\":[]}\n",
    ));
    tarball(&tgz, &entries);
    let o = report(&dir, &[&tgz]);
    o.assert_refused(
        "duplicate",
        &["dup.tar.gz", "\"node-1/events.ndjson\"", "twice"],
    );
    // `./node-1/x` and `node-1/x` are the same file.
    let mut entries = valid_entries("node-1/");
    entries.push(file("./node-1/system.json", b"{}"));
    tarball(&tgz, &entries);
    let o = report(&dir, &[&tgz]);
    o.assert_refused("duplicate with ./", &["\"./node-1/system.json\"", "twice"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn entries_under_two_top_level_directories_are_an_error_that_names_them() {
    let dir = tmpdir("mixed");
    let tgz = dir.join("mixed.tar.gz");
    let mut entries = valid_entries("node-1/");
    entries[2].name = b"node-2/events.ndjson".to_vec();
    tarball(&tgz, &entries);
    let o = report(&dir, &[&tgz]);
    o.assert_refused(
        "two top-level directories",
        &[
            "mixed.tar.gz",
            "\"node-2/events.ndjson\"",
            "\"node-1/handshakes.json\"",
        ],
    );
    // Files at the root and under a directory.
    let mut entries = valid_entries("");
    entries[1].name = b"node-1/system.json".to_vec();
    tarball(&tgz, &entries);
    let o = report(&dir, &[&tgz]);
    o.assert_refused(
        "root and a directory",
        &["\"node-1/system.json\"", "\"handshakes.json\""],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn links_devices_escapes_and_strangers_in_an_archive_are_errors_that_name_them() {
    let dir = tmpdir("entries");
    let tgz = dir.join("odd.tar.gz");
    let cases: Vec<(Entry, &[&str])> = vec![
        (
            file("/node-1/report.md", b"x"),
            &["\"/node-1/report.md\"", "absolute"],
        ),
        (
            file("node-1/../etc/passwd", b"x"),
            &["\"node-1/../etc/passwd\"", "`..`"],
        ),
        (
            special("node-1/report.md", EntryType::Symlink, Some("/etc/shadow")),
            &["\"node-1/report.md\"", "a link"],
        ),
        (
            special(
                "node-1/report.md",
                EntryType::Link,
                Some("node-1/system.json"),
            ),
            &["\"node-1/report.md\"", "a link"],
        ),
        (
            special("node-1/handshakes.pcapng", EntryType::Char, None),
            &["\"node-1/handshakes.pcapng\"", "a device"],
        ),
        (
            special("node-1/report.md", EntryType::Fifo, None),
            &["\"node-1/report.md\"", "a FIFO"],
        ),
        (
            file("node-1/notes.txt", b"x"),
            &["\"node-1/notes.txt\"", "not a bundle file"],
        ),
        (
            file("node-1/deeper/events.ndjson", b"x"),
            &["\"node-1/deeper/events.ndjson\"", "nested"],
        ),
        (
            file("node-1/\u{1b}]0;pwn\u{7}", b"x"),
            &["\"node-1/\\u{1b}]0;pwn\\u{7}\""],
        ),
    ];
    for (odd, names) in cases {
        let what = format!("{:?}", String::from_utf8_lossy(&odd.name));
        let mut entries = valid_entries("node-1/");
        entries.insert(1, odd);
        tarball(&tgz, &entries);
        let o = report(&dir, &[&tgz]);
        o.assert_refused(&what, names);
        assert!(
            !o.stderr.contains('\u{1b}'),
            "{what}: raw ESC in {}",
            o.stderr
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn long_names_and_the_archive_layouts_tar_writes_still_read() {
    let dir = tmpdir("layouts");
    let tgz = dir.join("ok.tar.gz");
    // A top-level directory with a name past 100 bytes (a GNU long-name entry each).
    let top = format!("{}/", "n".repeat(140));
    let mut entries = vec![special(&top, EntryType::Directory, None)];
    entries.extend(valid_entries(&top));
    tarball(&tgz, &entries);
    let o = report(&dir, &[&tgz]);
    assert_eq!(o.code, Some(0), "{o:?}");
    // `tar czf X -C bundle .`: `./` then `./NAME`.
    let mut entries = vec![special("./", EntryType::Directory, None)];
    entries.extend(valid_entries("./"));
    tarball(&tgz, &entries);
    let o = report(&dir, &[&tgz]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bundle_directory_holds_regular_files_only() {
    let dir = tmpdir("dirfiles");
    let b = valid_dir(&dir);
    let o = report(&dir, &[&b]);
    assert_eq!(o.code, Some(0), "{o:?}");
    // A FIFO would block the read forever; a link could point at /dev/zero.
    std::fs::remove_file(b.join("events.ndjson")).unwrap();
    let fifo = std::ffi::CString::new(b.join("events.ndjson").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string, a plain mode.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let o = report(&dir, &[&b]);
    o.assert_refused("FIFO", &["events.ndjson", "not a regular file"]);
    std::fs::remove_file(b.join("events.ndjson")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", b.join("events.ndjson")).unwrap();
    let o = report(&dir, &[&b]);
    o.assert_refused("link to /dev/zero", &["events.ndjson", "symbolic link"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_system_json_of_a_million_values_stops_at_the_memory_limit() {
    // 30 MiB, under system.json's 32 MiB cap: parsed whole, it would be 15 million values.
    let dir = tmpdir("system");
    let b = valid_dir(&dir);
    let body = format!(
        "{{\"format\":\"swarmtrace-bundle/1\",\"x\":[{}0]}}",
        "0,".repeat((15 * MIB) as usize)
    );
    std::fs::write(b.join("system.json"), body).unwrap();
    let o = report(&dir, &[&b]);
    o.assert_refused(
        "system.json of zeros",
        &[
            "system.json",
            "256 MiB limit on what one `report` keeps in memory",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failed_handshake_lines_past_the_kept_ones_are_counted_and_said() {
    let dir = tmpdir("kept");
    let b = valid_dir(&dir);
    let mut events = String::new();
    for i in 0..10_050 {
        events.push_str(&format!(
            "{{\"type\":\"handshake\",\"verdict\":\"dropped\",\"client\":\"10.0.0.1:{i}\",\"service\":\"10.0.0.2:80\"}}\n"
        ));
    }
    events.push_str("{\"type\":\"summary\",\"drops\":10050,\"handshakes\":{},\"verdicts\":[]}\n");
    std::fs::write(b.join("events.ndjson"), events).unwrap();
    let mut cmd = Command::new(binary());
    let out = cmd
        .args(["report", "--format", "markdown"])
        .arg(&b)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("50 more failed handshake lines than the 10000 kept"),
        "{stderr}"
    );
    assert!(stdout.contains("(9800 more in events.ndjson)"), "{stdout}");
    assert!(
        stdout.contains(
            "(50 more failed handshakes in events.ndjson than the 10000 this report read.)"
        ),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
