//! Files that root writes where an operator points it, on a host other users share.
//!
//! The discipline of systemd and tcpdump: a path is walked one component at a time, a
//! symbolic link on the way is followed only when root or the caller owns it (a link another
//! user planted is refused, whatever it points to), the output directory is made by us or is
//! an empty one we own, and is then held as a file descriptor: every file is created *inside
//! that descriptor* with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600. A name swapped for a link,
//! or a file planted in advance, makes the create fail instead of writing through it.
//!
//! A leaf module: std and libc only.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// How many symbolic links one walk follows (the kernel's own limit is 40).
const MAX_LINKS: usize = 32;

/// An error that names the path it is about.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error(
        "{path} is a symbolic link owned by uid {owner}: refusing to follow a link another user controls (give a path without it)"
    )]
    ForeignLink { path: PathBuf, owner: u32 },
    #[error("{path}: too many symbolic links")]
    LinkLoop { path: PathBuf },
    #[error("{path} is owned by uid {owner}, not by the user running swarmtrace (uid {me}): choose a new path; swarmtrace makes the directory itself")]
    ForeignDir { path: PathBuf, owner: u32, me: u32 },
    #[error("{path} exists and is not empty: choose a new path")]
    NotEmpty { path: PathBuf },
    #[error("{path} exists and is not a directory: choose a new path")]
    NotADir { path: PathBuf },
    #[error("{path} is a symbolic link: refusing to write through it")]
    IsLink { path: PathBuf },
    #[error("{path} already exists (planted?): refusing to overwrite it")]
    Exists { path: PathBuf },
}

fn io_err(path: &Path, err: io::Error) -> PathError {
    PathError::Io {
        path: path.to_owned(),
        err,
    }
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Checks a libc return value: -1 is `errno`.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn openat(
    dir: libc::c_int,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call; `dir` is an open
    // descriptor or AT_FDCWD; the returned descriptor is fresh and owned by nobody else.
    let fd = check(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just returned by openat and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstatat(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable memory of the right size; `name` is NUL-terminated.
    check(unsafe { libc::fstatat(dir, name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn fstat(fd: &impl AsFd) -> io::Result<libc::stat> {
    fstatat(fd.as_fd().as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

fn readlinkat(dir: libc::c_int, name: &CStr) -> io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is writable for its whole length, which is what we pass.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn is_type(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

/// A directory held open: what is created in it lands in it, whatever happens to its path.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory `path` names, following a symbolic link on the way only when root
    /// or the user running swarmtrace owns it.
    pub fn open(path: &Path) -> Result<Self, PathError> {
        let start = if path.is_absolute() { c"/" } else { c"." };
        let fd = openat(libc::AT_FDCWD, start, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| io_err(path, e))?;
        let mut links = 0;
        let fd = walk(fd, path, path, &mut links)?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The directory `path`, made by us (mode 0700), or an existing empty one that the user
    /// running swarmtrace owns (its mode then set to 0700). Anything else is refused: a
    /// directory another user owns (they could add or swap files in it), a non-empty one, a
    /// link, a file.
    pub fn create_private(path: &Path) -> Result<Self, PathError> {
        let (parent, name) = split(path)?;
        Self::open(&parent)?.make_private(&name, path)
    }

    /// `create_private` for the entry `name` of this directory (`path` names it in errors).
    pub fn make_private(&self, name: &OsStr, path: &Path) -> Result<Self, PathError> {
        let c = cstr(name).map_err(|e| io_err(path, e))?;
        // SAFETY: `c` is NUL-terminated; the parent descriptor is open.
        let made = unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o700) };
        let existed = if made == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(io_err(path, e));
            }
            true
        } else {
            false
        };
        let parent = self.fd.as_raw_fd();
        let fd = openat(
            parent,
            &c,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => PathError::IsLink {
                path: path.to_owned(),
            },
            Some(libc::ENOTDIR) => match fstatat(parent, &c, libc::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if is_type(&st, libc::S_IFLNK) => PathError::IsLink {
                    path: path.to_owned(),
                },
                _ => PathError::NotADir {
                    path: path.to_owned(),
                },
            },
            _ => io_err(path, e),
        })?;
        // Ownership is checked on the descriptor, not the name: what we hold is what we check.
        let st = fstat(&fd).map_err(|e| io_err(path, e))?;
        let me = euid();
        if st.st_uid != me {
            return Err(PathError::ForeignDir {
                path: path.to_owned(),
                owner: st.st_uid,
                me,
            });
        }
        // Private before looking inside, so nothing can be added after the look.
        // SAFETY: `fd` is an open descriptor.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), 0o700) }).map_err(|e| io_err(path, e))?;
        let dir = Self {
            fd,
            path: path.to_owned(),
        };
        if existed && !dir.is_empty().map_err(|e| io_err(path, e))? {
            return Err(PathError::NotEmpty {
                path: path.to_owned(),
            });
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn is_empty(&self) -> io::Result<bool> {
        let fd = openat(
            self.fd.as_raw_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        // SAFETY: fdopendir takes ownership of a valid directory descriptor.
        let d = unsafe { libc::fdopendir(fd.as_raw_fd()) };
        if d.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(fd); // owned by `d` now, closed by closedir
        let mut empty = true;
        loop {
            // SAFETY: `d` is a valid DIR* until closedir below.
            let ent = unsafe { libc::readdir(d) };
            if ent.is_null() {
                break;
            }
            // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            if name != c"." && name != c".." {
                empty = false;
                break;
            }
        }
        // SAFETY: `d` came from fdopendir and is closed once.
        unsafe { libc::closedir(d) };
        Ok(empty)
    }

    /// Creates `name` in this directory: it must not exist (a planted file or link is an
    /// error naming it), mode 0600.
    pub fn create_file(&self, name: &str) -> Result<File, PathError> {
        let path = self.path.join(name);
        let c = cstr(OsStr::new(name)).map_err(|e| io_err(&path, e))?;
        let fd = openat(
            self.fd.as_raw_fd(),
            &c,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o600,
        )
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => {
                match fstatat(self.fd.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if is_type(&st, libc::S_IFLNK) => {
                        PathError::IsLink { path: path.clone() }
                    }
                    _ => PathError::Exists { path: path.clone() },
                }
            }
            _ => io_err(&path, e),
        })?;
        // The umask may have taken bits off, never added: 0600 exactly.
        // SAFETY: `fd` is an open descriptor.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) }).map_err(|e| io_err(&path, e))?;
        Ok(File::from(fd))
    }

    /// Opens `name` in this directory for reading, never through a link.
    pub fn open_file(&self, name: &str) -> Result<File, PathError> {
        let path = self.path.join(name);
        let c = cstr(OsStr::new(name)).map_err(|e| io_err(&path, e))?;
        let fd = openat(
            self.fd.as_raw_fd(),
            &c,
            libc::O_RDONLY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| io_err(&path, e))?;
        Ok(File::from(fd))
    }

    /// Whether `name` exists in this directory (a link counts; it is not followed).
    pub fn contains(&self, name: &str) -> bool {
        let Ok(c) = cstr(OsStr::new(name)) else {
            return false;
        };
        fstatat(self.fd.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW).is_ok()
    }

    /// Removes the file `name` of this directory (a link is removed, not followed).
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        let c = cstr(OsStr::new(name))?;
        // SAFETY: `c` is NUL-terminated; the descriptor is open.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
    }

    /// Removes the empty directory `name` of this directory.
    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: `c` is NUL-terminated; the descriptor is open.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })
            .map(drop)
    }

    /// Whether `path` still names the directory we hold (not moved away, not swapped for a
    /// link or another directory since we opened it).
    pub fn still_at_path(&self) -> bool {
        fstat(&self.fd).is_ok_and(|st| same_file(&st, &self.path))
    }

    /// Syncs the directory itself (its entries), so created files survive a crash.
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: the descriptor is open.
        check(unsafe { libc::fsync(self.fd.as_raw_fd()) }).map(drop)
    }
}

/// Creates the file `path` (its directory walked as `Dir::open` does): it must not exist,
/// mode 0600. The file stays open; nothing reopens it by name.
pub fn create_new_file(path: &Path) -> Result<(Dir, File), PathError> {
    let (parent, name) = split(path)?;
    let parent = Dir::open(&parent)?;
    let name = name
        .to_str()
        .ok_or_else(|| io_err(path, io::Error::from_raw_os_error(libc::EINVAL)))?;
    let f = parent.create_file(name)?;
    Ok((parent, f))
}

/// Whether `path`, not followed if a link, is the file `st` describes.
pub fn same_file(st: &libc::stat, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == st.st_dev && m.ino() == st.st_ino)
}

/// What `path` is now, for an error saying it was replaced.
pub fn describe(path: &Path) -> &'static str {
    match std::fs::symlink_metadata(path) {
        Err(_) => "removed",
        Ok(m) if m.file_type().is_symlink() => "replaced by a symbolic link",
        Ok(_) => "replaced by another file",
    }
}

/// `fstat` of an open file.
pub fn stat_of(f: &impl AsFd) -> io::Result<libc::stat> {
    fstat(f)
}

/// The parent directory and the last component of `path`.
pub fn split(path: &Path) -> Result<(PathBuf, OsString), PathError> {
    let name = path
        .file_name()
        .ok_or_else(|| io_err(path, io::Error::from_raw_os_error(libc::EINVAL)))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_owned()))
}

/// Walks `rel` from the directory `fd`, one component at a time.
fn walk(
    mut fd: OwnedFd,
    rel: &Path,
    whole: &Path,
    links: &mut usize,
) -> Result<OwnedFd, PathError> {
    for comp in rel.components() {
        let name = match comp {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            Component::ParentDir => OsStr::new(".."),
            Component::Normal(n) => n,
        };
        let c = cstr(name).map_err(|e| io_err(whole, e))?;
        let st =
            fstatat(fd.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW).map_err(|e| io_err(whole, e))?;
        if is_type(&st, libc::S_IFLNK) {
            let me = euid();
            if st.st_uid != 0 && st.st_uid != me {
                return Err(PathError::ForeignLink {
                    path: whole.to_owned(),
                    owner: st.st_uid,
                });
            }
            *links += 1;
            if *links > MAX_LINKS {
                return Err(PathError::LinkLoop {
                    path: whole.to_owned(),
                });
            }
            let target =
                PathBuf::from(readlinkat(fd.as_raw_fd(), &c).map_err(|e| io_err(whole, e))?);
            let base = if target.is_absolute() {
                openat(libc::AT_FDCWD, c"/", libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| io_err(whole, e))?
            } else {
                openat(fd.as_raw_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| io_err(whole, e))?
            };
            fd = walk(base, &target, whole, links)?;
            continue;
        }
        // O_NOFOLLOW: a name swapped for a link since the look fails here (ENOTDIR).
        fd = openat(
            fd.as_raw_fd(),
            &c,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| io_err(whole, e))?;
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("st-safe-fs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn makes_a_private_directory_and_private_files() {
        let d = scratch("make");
        let out = d.join("bundle");
        let dir = Dir::create_private(&out).unwrap();
        let mut f = dir.create_file("a").unwrap();
        f.write_all(b"x").unwrap();
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(out.join("a"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // A second create of the same name is refused, naming it.
        let e = dir.create_file("a").unwrap_err().to_string();
        assert!(
            e.contains("bundle/a") && e.contains("already exists"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_links_and_full_directories() {
        let d = scratch("links");
        let out = d.join("bundle");
        let dir = Dir::create_private(&out).unwrap();
        std::os::unix::fs::symlink(d.join("victim"), out.join("report.md")).unwrap();
        let e = dir.create_file("report.md").unwrap_err();
        assert!(matches!(e, PathError::IsLink { .. }), "{e}");
        assert!(!d.join("victim").exists(), "written through the link");
        // Not empty now: a second capture to it is refused.
        let e = Dir::create_private(&out).unwrap_err();
        assert!(matches!(e, PathError::NotEmpty { .. }), "{e}");
        // The output path itself a link.
        std::os::unix::fs::symlink(&out, d.join("alias")).unwrap();
        let e = Dir::create_private(&d.join("alias")).unwrap_err();
        assert!(matches!(e, PathError::IsLink { .. }), "{e}");
        // A file.
        std::fs::write(d.join("file"), b"").unwrap();
        let e = Dir::create_private(&d.join("file")).unwrap_err();
        assert!(matches!(e, PathError::NotADir { .. }), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn follows_own_links_on_the_way() {
        let d = scratch("own");
        std::fs::create_dir(d.join("real")).unwrap();
        std::os::unix::fs::symlink("real", d.join("via")).unwrap();
        let dir = Dir::create_private(&d.join("via/bundle")).unwrap();
        dir.create_file("x").unwrap();
        assert!(d.join("real/bundle/x").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    #[ignore = "privileged: needs root (chown); `sudo cargo xtask test` runs it"]
    fn refuses_directories_and_links_of_other_users() {
        assert_eq!(euid(), 0, "needs root (chown)");
        let d = scratch("foreign");
        let theirs = d.join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = Dir::create_private(&theirs).unwrap_err();
        assert!(
            matches!(e, PathError::ForeignDir { owner: 65534, .. }),
            "{e}"
        );
        // A link planted by another user on the way is not followed, wherever it points.
        std::fs::create_dir(d.join("target")).unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(d.join("target"), &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
        assert_eq!(std::fs::symlink_metadata(&link).unwrap().uid(), 65534);
        let e = Dir::create_private(&link.join("bundle")).unwrap_err();
        assert!(
            matches!(e, PathError::ForeignLink { owner: 65534, .. }),
            "{e}"
        );
        assert!(!d.join("target/bundle").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
