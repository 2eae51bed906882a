//! What reading bundles may cost. A bundle comes from another machine: a few hundred KB of
//! `.tar.gz` can inflate to gigabytes, and one JSON line can hold millions of values. One
//! `Budget` is shared by every bundle a `report` reads; every byte read (decompressed, tar
//! headers and skipped entries included) and every value kept in memory is charged to it,
//! and what runs out is named in the error with its limit.

use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The limits of one `report` (all its bundles together, unless said otherwise).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes read out of files and archive streams, decompressed.
    pub read_total: u64,
    /// Memory kept once read, estimated (parsed `handshakes.json` and `system.json`, the
    /// summary line, the failed handshake lines, the pcapng when it is kept).
    pub keep_total: u64,
    /// One `events.ndjson` line.
    pub line: u64,
    /// Failed handshake lines kept per bundle (the markdown report lists the first 200 and
    /// counts the rest); the ones past this are counted, not kept.
    pub kept_lines: usize,
    pub events_file: u64,
    pub handshakes_file: u64,
    pub system_file: u64,
    pub pcapng_file: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            read_total: GIB,
            keep_total: 256 * MIB,
            line: MIB,
            kept_lines: 10_000,
            // As before streaming: a flood's worth of drop lines; streamed, so it costs time,
            // not memory.
            events_file: 256 * MIB,
            // 25 000 handshakes (the tracker's bound) at about 1 KB each with their drops,
            // with room to spare; kept at twice its size (see `Reader::file`).
            handshakes_file: 64 * MIB,
            // Namespaces with their addresses, routes and counters: about 10 KB each.
            system_file: 32 * MIB,
            pcapng_file: 64 * MIB,
        }
    }
}

impl Limits {
    /// The cap on one bundle file, by name (`None`: the file is never read).
    pub fn file(&self, name: &str) -> Option<u64> {
        match name {
            "events.ndjson" => Some(self.events_file),
            "handshakes.json" => Some(self.handshakes_file),
            "system.json" => Some(self.system_file),
            "handshakes.pcapng" => Some(self.pcapng_file),
            // A line or two saying why a capture was cut short.
            super::PARTIAL => Some(64 << 10),
            _ => None,
        }
    }
}

/// A limit that was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// One file is larger than its cap.
    File(u64),
    /// Everything read so far, all bundles together.
    ReadTotal(u64),
    /// Everything kept in memory, all bundles together.
    Keep(u64),
    /// One NDJSON line.
    Line(u64),
}

impl fmt::Display for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Hit::File(n) => write!(f, "larger than the {} limit for this file", Size(n)),
            Hit::ReadTotal(n) => write!(
                f,
                "stopped at the {} limit on what one `report` reads (decompressed, all bundles together)",
                Size(n)
            ),
            Hit::Keep(n) => write!(
                f,
                "over the {} limit on what one `report` keeps in memory (all bundles together)",
                Size(n)
            ),
            Hit::Line(n) => write!(f, "longer than the {} limit for one line", Size(n)),
        }
    }
}

/// A byte count for people: exact binary units when it has them, else bytes.
#[derive(Debug, Clone, Copy)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
            if n >= unit && n.is_multiple_of(unit) {
                return write!(f, "{} {name}", n / unit);
            }
        }
        if n >= MIB {
            return write!(f, "{n} bytes ({:.1} MiB)", n as f64 / MIB as f64);
        }
        write!(f, "{n} bytes")
    }
}

/// The error a metered reader returns; the reason is kept in the budget (`Budget::hit`),
/// since a parser wraps the I/O error in its own.
#[derive(Debug)]
struct LimitReached;

impl fmt::Display for LimitReached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("limit reached")
    }
}

impl std::error::Error for LimitReached {}

/// What is left of the limits; single-threaded (`report` reads one bundle at a time).
#[derive(Debug)]
pub struct Budget {
    pub limits: Limits,
    read_left: Cell<u64>,
    keep_left: Cell<u64>,
    hit: Cell<Option<Hit>>,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            read_left: Cell::new(limits.read_total),
            keep_left: Cell::new(limits.keep_total),
            hit: Cell::new(None),
        }
    }

    /// The limit reached by the last failed read or charge, once.
    pub fn take_hit(&self) -> Option<Hit> {
        self.hit.take()
    }

    fn fail(&self, hit: Hit) -> Hit {
        self.hit.set(Some(hit));
        hit
    }

    /// Charges `bytes` of memory about to be kept.
    pub fn keep(&self, bytes: u64) -> Result<(), Hit> {
        let left = self.keep_left.get();
        if bytes > left {
            self.keep_left.set(0);
            return Err(Hit::Keep(self.limits.keep_total));
        }
        self.keep_left.set(left - bytes);
        Ok(())
    }

    /// Reads through `inner`, charged to the read budget and capped at `cap` bytes.
    pub fn meter<R: Read>(&self, inner: R, cap: Option<u64>) -> Metered<'_, R> {
        Metered {
            inner,
            budget: self,
            cap,
            read: 0,
        }
    }
}

/// A reader charged to a `Budget`: it reads at most one byte past what is allowed, and then
/// fails (recording which limit in the budget).
pub struct Metered<'a, R> {
    inner: R,
    budget: &'a Budget,
    cap: Option<u64>,
    read: u64,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let by_file = self.cap.map_or(u64::MAX, |c| c.saturating_sub(self.read));
        let allowed = by_file.min(self.budget.read_left.get());
        // Up to the limit, then one byte to tell the end of the input from more of it.
        let want = buf
            .len()
            .min(usize::try_from(allowed.max(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > allowed {
            let hit = match self.cap {
                Some(c) if by_file <= self.budget.read_left.get() => Hit::File(c),
                _ => Hit::ReadTotal(self.budget.limits.read_total),
            };
            self.budget.fail(hit);
            return Err(io::Error::other(LimitReached));
        }
        self.read += n as u64;
        self.budget
            .read_left
            .set(self.budget.read_left.get() - n as u64);
        Ok(n)
    }
}

/// Memory a JSON value holds, estimated: each value's slot, each string's bytes, each object
/// key with its index entry. Vectors may hold twice their length: counted in `SLOT`.
const SLOT: u64 = 2 * std::mem::size_of::<Value>() as u64;
const KEY: u64 = std::mem::size_of::<String>() as u64 + 16;

pub fn estimate(v: &Value) -> u64 {
    SLOT + match v {
        Value::String(s) => s.len() as u64,
        Value::Array(a) => a.iter().map(estimate).sum(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| KEY + k.len() as u64 + estimate(v))
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// Parses a JSON value charged to the keep budget as it is built: a file of `[0,0,0,...`
/// fails at the limit instead of growing to many times its size. The value is the one
/// `serde_json::Value`'s own `Deserialize` makes.
#[derive(Clone, Copy)]
pub struct KeptValue<'a>(pub &'a Budget);

impl KeptValue<'_> {
    fn charge<E: serde::de::Error>(&self, bytes: u64) -> Result<(), E> {
        // Through the parser's error, so the budget keeps which limit it was.
        self.0
            .keep(bytes)
            .map_err(|hit| E::custom(self.0.fail(hit)))
    }
}

impl<'de> DeserializeSeed<'de> for KeptValue<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeptValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        self.charge(SLOT)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
        self.charge(SLOT)?;
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
        self.charge(SLOT)?;
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
        self.charge(SLOT)?;
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        self.charge(SLOT + s.len() as u64)?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
        self.charge(SLOT + s.len() as u64)?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.charge(SLOT)?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(SLOT)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(SLOT)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.charge(KEY + key.len() as u64)?;
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_their_limits() {
        assert_eq!(Size(GIB).to_string(), "1 GiB");
        assert_eq!(Size(256 * MIB).to_string(), "256 MiB");
        assert_eq!(Size(4 * KIB).to_string(), "4 KiB");
        assert_eq!(Size(100).to_string(), "100 bytes");
        assert_eq!(
            Size(4 * GIB + 1).to_string(),
            "4294967297 bytes (4096.0 MiB)"
        );
    }

    #[test]
    fn a_metered_reader_stops_one_byte_past_its_cap() {
        let budget = Budget::default();
        let mut out = Vec::new();
        let err = budget
            .meter(io::repeat(b'x'), Some(1000))
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        assert_eq!(budget.take_hit(), Some(Hit::File(1000)));
        assert_eq!(out.len(), 1000);
        // Exactly at the cap is fine.
        let mut out = Vec::new();
        budget
            .meter(&[0u8; 1000][..], Some(1000))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(budget.take_hit(), None);
    }

    #[test]
    fn the_read_budget_spans_readers() {
        let budget = Budget::new(Limits {
            read_total: 1500,
            ..Limits::default()
        });
        let mut sink = Vec::new();
        budget
            .meter(&[0u8; 1000][..], None)
            .read_to_end(&mut sink)
            .unwrap();
        budget
            .meter(&[0u8; 1000][..], Some(5000))
            .read_to_end(&mut sink)
            .unwrap_err();
        assert_eq!(budget.take_hit(), Some(Hit::ReadTotal(1500)));
        assert_eq!(sink.len(), 1500);
    }

    #[test]
    fn kept_values_match_serde_json_and_stop_at_the_budget() {
        let text = r#"{"b":[1,-2,3.5,1e300,-0.0,null,true,"x"],"a":{"z":{},"y":[]},"b":"again"}"#;
        let budget = Budget::default();
        let mut de = serde_json::Deserializer::from_str(text);
        let v = KeptValue(&budget).deserialize(&mut de).unwrap();
        de.end().unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(
            v.to_string(),
            serde_json::from_str::<Value>(text).unwrap().to_string()
        );

        let budget = Budget::new(Limits {
            keep_total: 100 * KIB,
            ..Limits::default()
        });
        let zeros = format!("[{}0]", "0,".repeat(1_000_000));
        let mut de = serde_json::Deserializer::from_str(&zeros);
        let err = KeptValue(&budget).deserialize(&mut de).unwrap_err();
        assert!(err.to_string().contains("100 KiB"), "{err}");
        assert_eq!(budget.take_hit(), Some(Hit::Keep(100 * KIB)));
    }
}
