//! `capture -o` as root on a host other users share: a link or file planted in the output
//! directory, or an archive swapped for a link while recording, never makes root write outside
//! the bundle; every bundle file is 0600; a capture cut short by a full filesystem keeps what it
//! recorded and names the file it could not write.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use swarmtrace_tests::{binary, require_privileged};

/// The uid of "another user of the host" (nobody).
const USER: u32 = 65534;

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("swarmtrace-out-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, PermissionsExt::from_mode(0o755)).unwrap();
    d
}

/// A root-owned 0600 file that must never change.
fn victim(d: &Path) -> PathBuf {
    let v = d.join("victim");
    std::fs::write(&v, b"secret\n").unwrap();
    std::fs::set_permissions(&v, PermissionsExt::from_mode(0o600)).unwrap();
    v
}

/// `swarmtrace capture` on the loopback interface (nothing else on the host is touched).
fn capture(out: &Path, secs: u32) -> std::process::Child {
    Command::new(binary())
        .args(["capture", "--iface", "lo", "--duration"])
        .arg(format!("{secs}s"))
        .arg("-o")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("swarmtrace")
}

fn finish(child: std::process::Child) -> (bool, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_untouched(victim: &Path, stderr: &str) {
    let now = std::fs::read(victim).unwrap();
    assert!(
        now == b"secret\n",
        "root wrote through the user's link: the victim now holds {} bytes: {stderr}",
        now.len()
    );
}

/// As the other user would: a file or link they own, planted at `at`.
fn plant_link(target: &Path, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
    std::os::unix::fs::lchown(at, Some(USER), Some(USER)).unwrap();
}

fn plant_file(at: &Path) {
    std::fs::write(at, b"").unwrap();
    std::os::unix::fs::chown(at, Some(USER), Some(USER)).unwrap();
    std::fs::set_permissions(at, PermissionsExt::from_mode(0o666)).unwrap();
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn a_users_directory_with_planted_link_and_file_is_refused() {
    require_privileged("a_users_directory_with_planted_link_and_file_is_refused");
    let d = tmpdir("planted");
    let victim = victim(&d);
    // The user's empty directory, handed to root's capture.
    let evil = d.join("evil");
    std::fs::create_dir(&evil).unwrap();
    std::os::unix::fs::chown(&evil, Some(USER), Some(USER)).unwrap();
    let child = capture(&evil, 3);
    // While it records, the user plants a link to the victim and a world-writable file.
    std::thread::sleep(Duration::from_millis(1500));
    plant_link(&victim, &evil.join("report.md"));
    plant_file(&evil.join("handshakes.json"));
    let (ok, stderr) = finish(child);

    assert_untouched(&victim, &stderr);
    assert!(
        !ok,
        "a directory owned by another user was accepted: {stderr}"
    );
    assert!(
        stderr.contains(evil.to_str().unwrap()) && stderr.contains("owned by uid 65534"),
        "the error does not name the path and its owner: {stderr}"
    );
    // Root created nothing there: only what the user planted.
    let mut names: Vec<String> = std::fs::read_dir(&evil)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["handshakes.json", "report.md"]);
    assert_eq!(
        std::fs::metadata(evil.join("handshakes.json"))
            .unwrap()
            .uid(),
        USER,
        "root wrote into the user's file"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn a_link_on_the_way_planted_by_a_user_is_not_followed() {
    require_privileged("a_link_on_the_way_planted_by_a_user_is_not_followed");
    let d = tmpdir("onway");
    let root_only = d.join("root-only");
    std::fs::create_dir(&root_only).unwrap();
    std::fs::set_permissions(&root_only, PermissionsExt::from_mode(0o700)).unwrap();
    plant_link(&root_only, &d.join("shortcut"));
    let (ok, stderr) = finish(capture(&d.join("shortcut/bundle"), 1));
    assert!(!ok, "followed a user's link: {stderr}");
    assert!(
        stderr.contains("symbolic link owned by uid 65534"),
        "{stderr}"
    );
    assert!(!root_only.join("bundle").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn an_archive_swapped_for_a_link_during_capture_is_not_written_through() {
    require_privileged("an_archive_swapped_for_a_link_during_capture_is_not_written_through");
    let d = tmpdir("swap");
    let victim = victim(&d);
    // A directory the user owns (their home, a shared drop box): root's archive in it can be
    // deleted and replaced by them, not read.
    let theirs = d.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(USER), Some(USER)).unwrap();
    let archive = theirs.join("incident.tar.gz");
    let child = capture(&archive, 3);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !archive.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(archive.exists(), "the archive was not created at start");
    assert_eq!(
        std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::remove_file(&archive).unwrap();
    plant_link(&victim, &archive);
    let (ok, stderr) = finish(child);

    assert_untouched(&victim, &stderr);
    assert!(!ok, "the swap went unnoticed: {stderr}");
    assert!(
        stderr.contains(archive.to_str().unwrap())
            && stderr.contains("replaced by a symbolic link"),
        "{stderr}"
    );
    // What was recorded is kept, private, in the staging directory the error names.
    for e in std::fs::read_dir(&theirs).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            assert_eq!(e.metadata().unwrap().uid(), 0);
            assert_eq!(e.metadata().unwrap().permissions().mode() & 0o777, 0o700);
            assert!(stderr.contains(e.path().to_str().unwrap()), "{stderr}");
            for f in std::fs::read_dir(e.path()).unwrap() {
                let m = f.unwrap().metadata().unwrap();
                assert_eq!(m.permissions().mode() & 0o777, 0o600);
            }
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("tmpfs")
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "cannot mount a tmpfs at {}", at.display());
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "privileged: needs root; `sudo cargo xtask test` runs it"]
fn a_full_filesystem_keeps_what_was_recorded_and_names_the_file() {
    require_privileged("a_full_filesystem_keeps_what_was_recorded_and_names_the_file");
    let d = tmpdir("full");
    // Room for the events and the small files, not for system.json (tens of KB).
    let fs = Tmpfs::mount(&d.join("small"), "32k");
    let archive = fs.0.join("incident.tar.gz");
    let (ok, stderr) = finish(capture(&archive, 2));
    assert!(
        !ok,
        "a capture that could not write system.json succeeded: {stderr}"
    );
    assert!(
        stderr.contains("system.json") && stderr.contains("No space left on device"),
        "the error does not name the file: {stderr}"
    );
    assert!(
        archive.exists(),
        "everything recorded was deleted: {stderr}"
    );
    assert!(stderr.contains("partial"), "{stderr}");
    let x = d.join("x");
    std::fs::create_dir(&x).unwrap();
    let st = Command::new("tar")
        .args(["xzf", archive.to_str().unwrap(), "-C", x.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let b = x.join("incident");
    let events = std::fs::read_to_string(b.join("events.ndjson")).unwrap();
    assert!(
        events.lines().last().unwrap_or("").contains("\"summary\""),
        "the events were not kept whole: {events}"
    );
    let note = std::fs::read_to_string(b.join("PARTIAL.txt")).unwrap();
    assert!(note.contains("system.json"), "{note}");
    assert!(
        !b.join("system.json").exists(),
        "a truncated system.json was kept"
    );
    // `report` says what the bundle is, not just that a file is missing.
    let out = Command::new(binary())
        .arg("report")
        .arg(&archive)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("partial") && err.contains("No space left on device"),
        "{err}"
    );
    drop(fs);
    std::fs::remove_dir_all(&d).unwrap();
}
