//! Reading a bundle back (`swarmtrace report`), as input from another machine: every file
//! and archive entry is checked before it is read, read through a `Budget`, and only what a
//! report needs is kept. `events.ndjson` is streamed line by line: the summary and the
//! failed handshake lines are kept, nothing else.
//!
//! A `.tar.gz` holds regular files only, each once, all directly under one top-level
//! directory (what `capture` writes) or all at the archive's root (`tar -C DIR .`); a
//! directory entry for that top level is allowed. Anything else (a link, a device, an
//! absolute path, `..`, a second top-level directory, a duplicate, a file that is not one
//! of `bundle::FILES`) is an error that names the entry.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{anyhow, Result};
use serde::de::DeserializeSeed;
use serde_json::Value;

use super::limits::{estimate, Budget, Hit, KeptValue, Size};
use super::FILES;
use crate::evidence::format::{self, Recorded, Version};
use crate::trace::hops::HopNames;
use crate::verdict::{self, Verdict};

/// A bundle read back.
#[derive(Debug)]
pub struct Bundle {
    pub source: String,
    /// The format it was written in (both JSON files say the same).
    pub version: Version,
    pub handshakes: Recorded,
    /// `system.json` as written, for what is only shown.
    pub system: Value,
    /// What `report` reads of `system.json`.
    pub hostname: Option<String>,
    pub context: verdict::Context,
    /// `handshakes.pcapng`, when it was asked for (`report` does not read it).
    pub pcapng: Option<Vec<u8>>,
    summary: Value,
    failed: Vec<Value>,
    /// Failed handshake lines past `Limits::kept_lines`: counted, not kept.
    pub failed_not_kept: u64,
}

fn bad(source: &str, file: &str, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("bundle {source}: {file}: {what}")
}

/// A file's content error, reported after the whole bundle was read so that the order of an
/// archive's entries does not change which error a damaged bundle gets.
type Parsed<T> = Option<std::result::Result<T, String>>;

/// What the files of one bundle gave.
#[derive(Default)]
struct Parts {
    handshakes: Parsed<(Version, Recorded)>,
    system: Parsed<Value>,
    events: Parsed<Events>,
    pcapng: Option<Vec<u8>>,
    /// `PARTIAL.txt`: why the capture was cut short.
    partial: Option<String>,
}

/// What `events.ndjson` gave.
struct Events {
    summary: Value,
    failed: Vec<Value>,
    failed_not_kept: u64,
}

impl Bundle {
    /// Reads a bundle directory or `.tar.gz`, with the default limits and its pcapng. A
    /// missing, truncated, corrupted, foreign or oversized file is an error that names it.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_within(path, &Budget::default(), true)
    }

    /// Reads a bundle within `budget` (shared by the bundles of one command); the pcapng is
    /// read only when `pcapng` is set.
    pub fn load_within(path: &Path, budget: &Budget, pcapng: bool) -> Result<Self> {
        let source = path.display().to_string();
        let reader = Reader {
            source: &source,
            budget,
            pcapng,
        };
        let parts = if path.is_dir() {
            reader.dir(path)?
        } else {
            reader.tarball(path)?
        };
        // A capture cut short says why; that is the error then, not a missing file.
        let partial = parts.partial.as_deref().map(|note| {
            let why = note
                .lines()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or("see PARTIAL.txt");
            format!(
                "missing: this bundle is partial, its capture failed ({}); its events.ndjson holds what was recorded",
                crate::escape::terminal(why)
            )
        });
        let missing = |name: &str| {
            bad(
                &source,
                name,
                partial
                    .as_deref()
                    .unwrap_or("missing (not a swarmtrace bundle, or an incomplete one)"),
            )
        };
        let (version, handshakes) = parts
            .handshakes
            .ok_or_else(|| missing("handshakes.json"))?
            .map_err(|e| bad(&source, "handshakes.json", e))?;
        if !handshakes.clock.is_plausible() {
            return Err(bad(
                &source,
                "handshakes.json",
                "clock offset out of range (damaged)",
            ));
        }
        let system = parts
            .system
            .ok_or_else(|| missing("system.json"))?
            .map_err(|e| bad(&source, "system.json", e))?;
        let read = format::read_system(&system).map_err(|e| bad(&source, "system.json", e))?;
        if read.version != version {
            return Err(bad(
                &source,
                "system.json",
                format!(
                    "format `{}`, but handshakes.json is `{}`: not one bundle",
                    read.version.tag(),
                    version.tag()
                ),
            ));
        }
        let events = parts
            .events
            .ok_or_else(|| missing("events.ndjson"))?
            .map_err(|e| bad(&source, "events.ndjson", e))?;
        Ok(Self {
            source,
            version,
            handshakes,
            system,
            hostname: read.hostname,
            context: read.context,
            pcapng: parts.pcapng,
            summary: events.summary,
            failed: events.failed,
            failed_not_kept: events.failed_not_kept,
        })
    }

    /// The `summary` line, the last of `events.ndjson`.
    pub fn summary(&self) -> &Value {
        &self.summary
    }

    pub fn verdicts(&self) -> Vec<Verdict> {
        verdict::verdicts(self.handshakes.handshakes.iter(), &self.context)
    }

    pub fn hop_names(&self) -> HopNames {
        HopNames::from_entries(&self.handshakes.hops)
    }

    /// The handshake lines a report shows: the failed ones (verdict other than `answered`),
    /// the first `Limits::kept_lines` of them, each with its top-level scalar fields (all a
    /// handshake line has, docs/json.md).
    pub fn handshake_events(&self) -> Vec<Value> {
        self.failed.clone()
    }
}

/// Reads the files of one bundle.
struct Reader<'a> {
    source: &'a str,
    budget: &'a Budget,
    pcapng: bool,
}

impl Reader<'_> {
    /// An error about `file` of this bundle, naming the limit when one was reached.
    fn fail(&self, file: &str, what: impl std::fmt::Display) -> anyhow::Error {
        match self.budget.take_hit() {
            Some(hit) => bad(self.source, file, hit),
            None => bad(self.source, file, what),
        }
    }

    fn wanted(&self, name: &str) -> Option<u64> {
        if name == "handshakes.pcapng" && !self.pcapng {
            return None;
        }
        self.budget.limits.file(name)
    }

    /// Reads one file into `parts` from `r`, already capped (and charged to the read
    /// budget). An error here (a limit, an I/O error) ends the reading; a content error is
    /// kept in `parts` for `Bundle::load_within`.
    fn file(&self, name: &str, r: impl Read, parts: &mut Parts) -> Result<()> {
        let mut r = Counted { inner: r, read: 0 };
        match name {
            "handshakes.json" => {
                let mut de = serde_json::Deserializer::from_reader(BufReader::new(&mut r));
                let parsed = format::read_handshakes(&mut de).and_then(|h| {
                    de.end()?;
                    Ok(h)
                });
                drop(de);
                let parsed = self.content(name, parsed)?;
                if parsed.is_ok() {
                    // Typed, so about as large in memory as on disk: twice at most, with the
                    // vectors' spare room.
                    self.budget
                        .keep(2 * r.read)
                        .map_err(|hit| bad(self.source, name, hit))?;
                }
                parts.handshakes = Some(parsed);
            }
            "system.json" => {
                let mut de = serde_json::Deserializer::from_reader(BufReader::new(r));
                let parsed = KeptValue(self.budget).deserialize(&mut de).and_then(|v| {
                    de.end()?;
                    Ok(v)
                });
                parts.system = Some(self.content(name, parsed)?);
            }
            "events.ndjson" => parts.events = Some(self.events(BufReader::new(r))?),
            super::PARTIAL => {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf)
                    .map_err(|e| self.fail(name, format!("cannot read: {e}")))?;
                parts.partial = Some(String::from_utf8_lossy(&buf).into_owned());
            }
            "handshakes.pcapng" => {
                let mut buf = Vec::new();
                r.read_to_end(&mut buf)
                    .map_err(|e| self.fail(name, format!("cannot read: {e}")))?;
                self.budget
                    .keep(buf.len() as u64)
                    .map_err(|hit| bad(self.source, name, hit))?;
                parts.pcapng = Some(buf);
            }
            _ => {}
        }
        Ok(())
    }

    /// Splits a parser's result: a limit or an I/O error is this function's error, a
    /// content error is kept for later.
    fn content<T>(
        &self,
        name: &str,
        parsed: serde_json::Result<T>,
    ) -> Result<std::result::Result<T, String>> {
        match parsed {
            Ok(v) => Ok(Ok(v)),
            Err(e) => match self.budget.take_hit() {
                Some(hit) => Err(bad(self.source, name, hit)),
                None if e.is_io() => Err(bad(self.source, name, format!("cannot read: {e}"))),
                None => Ok(Err(e.to_string())),
            },
        }
    }

    /// Streams `events.ndjson`: every line must be a JSON object with a `type`, the last one
    /// the summary.
    fn events(&self, mut r: impl BufRead) -> Result<std::result::Result<Events, String>> {
        const NAME: &str = "events.ndjson";
        let limits = &self.budget.limits;
        let mut line = Vec::new();
        let mut last_summary: Option<(Value, u64)> = None;
        let mut failed = Vec::new();
        let mut failed_not_kept = 0;
        let mut number = 0u64;
        loop {
            line.clear();
            // At most one byte past the limit is buffered, newline or not.
            let n = (&mut r)
                .take(limits.line + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| self.fail(NAME, format!("cannot read: {e}")))?;
            if n == 0 {
                break;
            }
            number += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
            } else if n as u64 > limits.line {
                return Err(bad(
                    self.source,
                    NAME,
                    format!("line {number}: {}", Hit::Line(limits.line)),
                ));
            }
            let text = match std::str::from_utf8(&line) {
                Ok(t) => t,
                Err(e) => return Ok(Err(format!("line {number}: {e}"))),
            };
            if text.trim().is_empty() {
                continue;
            }
            let v: Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => return Ok(Err(format!("line {number}: {e}"))),
            };
            if !v["type"].is_string() {
                return Ok(Err(format!("line {number}: no \"type\"")));
            }
            last_summary = None;
            if v["type"] == "summary" {
                last_summary = Some((v, number));
            } else if v["type"] == "handshake" && v["verdict"] != "answered" {
                if failed.len() < limits.kept_lines {
                    let kept = scalars(v);
                    self.budget
                        .keep(estimate(&kept))
                        .map_err(|hit| bad(self.source, NAME, format!("line {number}: {hit}")))?;
                    failed.push(kept);
                } else {
                    failed_not_kept += 1;
                }
            }
        }
        let Some((summary, number)) = last_summary else {
            return Ok(Err("no summary at the end (truncated?)".to_owned()));
        };
        self.budget
            .keep(estimate(&summary))
            .map_err(|hit| bad(self.source, NAME, format!("line {number}: {hit}")))?;
        Ok(Ok(Events {
            summary,
            failed,
            failed_not_kept,
        }))
    }

    /// A bundle directory: the known files only, each a regular file (not a link, so a
    /// bundle cannot point `report` at `/dev/zero` or a FIFO).
    fn dir(&self, dir: &Path) -> Result<Parts> {
        let mut parts = Parts::default();
        for name in FILES {
            let Some(cap) = self.wanted(name) else {
                continue;
            };
            let p = dir.join(name);
            let file = match File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&p)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    return Err(bad(
                        self.source,
                        name,
                        "is a symbolic link: a bundle holds regular files only",
                    ))
                }
                Err(e) => return Err(bad(self.source, name, format!("cannot open: {e}"))),
            };
            let meta = file
                .metadata()
                .map_err(|e| bad(self.source, name, format!("cannot read: {e}")))?;
            if !meta.is_file() {
                return Err(bad(
                    self.source,
                    name,
                    "not a regular file: a bundle holds regular files only",
                ));
            }
            if meta.len() > cap {
                return Err(bad(
                    self.source,
                    name,
                    format!("{} on disk, {}", Size(meta.len()), Hit::File(cap)),
                ));
            }
            self.file(name, self.budget.meter(file, Some(cap)), &mut parts)?;
        }
        Ok(parts)
    }

    /// A `.tar.gz`, streamed: entries are checked as they come, and each file is read
    /// straight out of the decompressor.
    fn tarball(&self, path: &Path) -> Result<Parts> {
        const ARCHIVE: &str = "archive";
        let f =
            File::open(path).map_err(|e| bad(self.source, ARCHIVE, format!("cannot open: {e}")))?;
        let gz = flate2::read::GzDecoder::new(f);
        let mut ar = tar::Archive::new(self.budget.meter(gz, None));
        // Raw: GNU long names and PAX headers come as entries, read here with a small cap
        // (the tar crate would read them whole into memory, whatever their size).
        let entries = ar
            .entries()
            .map_err(|e| self.fail(ARCHIVE, format!("not a .tar.gz: {e}")))?
            .raw(true);
        let mut parts = Parts::default();
        let mut layout = Layout::default();
        let mut long_name: Option<Vec<u8>> = None;
        // The last entry, to name in an error found while skipping past it.
        let mut last: Option<String> = None;
        for entry in entries {
            let mut entry = entry.map_err(|e| {
                let at = match &last {
                    Some(shown) => format!("{ARCHIVE} (after entry {shown})"),
                    None => ARCHIVE.to_owned(),
                };
                self.fail(&at, format!("corrupted archive: {e}"))
            })?;
            let kind = entry.header().entry_type();
            if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
                if long_name.is_some() {
                    return Err(bad(
                        self.source,
                        ARCHIVE,
                        "corrupted archive: two long names for one entry",
                    ));
                }
                let data = self.small(&mut entry)?;
                long_name = Some(if kind.is_gnu_longname() {
                    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                    data[..end].to_vec()
                } else {
                    match self.pax_path(&data)? {
                        Some(p) => p,
                        None => continue,
                    }
                });
                continue;
            }
            if kind.is_pax_global_extensions() {
                self.small(&mut entry)?;
                continue;
            }
            let raw = long_name
                .take()
                .unwrap_or_else(|| entry.header().path_bytes().into_owned());
            let shown = format!("{:?}", String::from_utf8_lossy(&raw));
            last = Some(shown.clone());
            let entry_err =
                |what: &str| bad(self.source, ARCHIVE, format!("entry {shown}: {what}"));
            let parts_of = split(&raw).map_err(entry_err)?;
            if kind.is_dir() {
                match parts_of.as_slice() {
                    [] => {}
                    [top] => layout.place(Some(top), &shown).map_err(|e| entry_err(&e))?,
                    _ => return Err(entry_err("a nested directory: a bundle has none")),
                }
                layout.once(&parts_of).map_err(|e| entry_err(&e))?;
                continue;
            }
            if !kind.is_file() {
                return Err(entry_err(&format!(
                    "{}: a bundle holds regular files only",
                    describe(kind)
                )));
            }
            let (top, name) = match parts_of.as_slice() {
                [name] => (None, *name),
                [top, name] => (Some(*top), *name),
                _ => return Err(entry_err(
                    "nested too deep: a bundle's files are directly under one top-level directory",
                )),
            };
            let Some(name) = FILES.iter().find(|f| f.as_bytes() == name) else {
                return Err(entry_err(&format!(
                    "not a bundle file (a bundle holds {} only)",
                    FILES.join(", ")
                )));
            };
            layout.place(top, &shown).map_err(|e| entry_err(&e))?;
            layout.once(&parts_of).map_err(|e| entry_err(&e))?;
            let Some(cap) = self.wanted(name) else {
                continue;
            };
            let size = entry.header().entry_size().unwrap_or(u64::MAX);
            if size > cap {
                return Err(bad(
                    self.source,
                    name,
                    format!("{} in the archive, {}", Size(size), Hit::File(cap)),
                ));
            }
            // Read out of the metered archive stream, and no longer than its header says.
            self.file(name, &mut entry, &mut parts)?;
        }
        if long_name.is_some() {
            return Err(bad(
                self.source,
                ARCHIVE,
                "corrupted archive: a long name with no entry after it",
            ));
        }
        Ok(parts)
    }

    /// An extension header's data (a long name, PAX records): 64 KiB at most.
    fn small(&self, entry: &mut impl Read) -> Result<Vec<u8>> {
        const MAX: u64 = 64 << 10;
        let mut data = Vec::new();
        entry
            .take(MAX + 1)
            .read_to_end(&mut data)
            .map_err(|e| self.fail("archive", format!("corrupted archive: {e}")))?;
        if data.len() as u64 > MAX {
            return Err(bad(
                self.source,
                "archive",
                format!(
                    "an extension header (long name or PAX) larger than {}",
                    Size(MAX)
                ),
            ));
        }
        Ok(data)
    }

    /// The `path` of PAX records; a `size` record (an entry over 8 GiB) is refused.
    fn pax_path(&self, data: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut path = None;
        for ext in tar::PaxExtensions::new(data) {
            let ext =
                ext.map_err(|e| bad(self.source, "archive", format!("malformed PAX header: {e}")))?;
            match ext.key_bytes() {
                b"path" => path = Some(ext.value_bytes().to_vec()),
                b"size" => {
                    return Err(bad(
                        self.source,
                        "archive",
                        "a PAX size record (an entry over 8 GiB): not a bundle",
                    ))
                }
                _ => {}
            }
        }
        Ok(path)
    }
}

/// A handshake line's top-level scalar fields, at most 32 (a line has about 14): what
/// is kept of it costs about its length.
fn scalars(v: Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .filter(|(_, v)| !v.is_array() && !v.is_object())
                .take(32)
                .collect(),
        ),
        _ => Value::Null,
    }
}

fn describe(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Symlink | tar::EntryType::Link | tar::EntryType::GNULongLink => {
            "a link".to_owned()
        }
        tar::EntryType::Char | tar::EntryType::Block => "a device".to_owned(),
        tar::EntryType::Fifo => "a FIFO".to_owned(),
        other => format!("a {other:?} entry"),
    }
}

/// An entry's path in components, `.` dropped; absolute paths and `..` refused.
fn split(raw: &[u8]) -> std::result::Result<Vec<&[u8]>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("an absolute path: a bundle's entries are relative");
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("a `..` component: a bundle's entries stay inside it"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Where an archive's files are: at the root or under one top-level directory, each once.
#[derive(Default)]
struct Layout {
    /// The top level (None: the root) and the entry that set it.
    top: Option<(Option<Vec<u8>>, String)>,
    seen: BTreeSet<Vec<u8>>,
}

impl Layout {
    fn place(&mut self, top: Option<&[u8]>, shown: &str) -> std::result::Result<(), String> {
        match &self.top {
            None => {
                self.top = Some((top.map(<[u8]>::to_vec), shown.to_owned()));
                Ok(())
            }
            Some((first, _)) if first.as_deref() == top => Ok(()),
            Some((_, by)) => Err(format!(
                "mixed with entry {by}: a bundle's files are all under one top-level directory"
            )),
        }
    }

    fn once(&mut self, parts: &[&[u8]]) -> std::result::Result<(), String> {
        if self.seen.insert(parts.join(&b'/')) {
            return Ok(());
        }
        Err("a duplicate: this entry is in the archive twice".to_owned())
    }
}

/// Counts what is read through it.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}
