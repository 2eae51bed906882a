//! Minimal parser for the kernel's raw BTF format (`/sys/kernel/btf/vmlinux`).
//!
//! Only what swarmtrace needs is implemented: walking every type record (all
//! kinds up to `BTF_KIND_ENUM64`), looking up struct/union members by a dot
//! path (searching anonymous struct/union members transparently), struct
//! sizes and enum variants. Layout follows `include/uapi/linux/btf.h` and
//! `Documentation/bpf/btf.rst`.
//!
//! Every read is bounds-checked: corrupted or truncated input yields a
//! [`BtfError`], never a panic, and all recursion is depth-limited.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_VERSION: u8 = 1;
/// Size of `struct btf_header` (version 1).
const HEADER_LEN: usize = 24;
/// Size of `struct btf_type`.
const TYPE_LEN: usize = 12;
/// Maximum nesting depth followed through modifiers, arrays and anonymous members.
const MAX_DEPTH: usize = 32;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Size of a pointer on the (64-bit) targets swarmtrace supports.
const PTR_SIZE: u32 = 8;

/// Errors produced while parsing or querying BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// Reading the BTF file failed.
    #[error("cannot read BTF file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A read ran past the end of the blob or of one of its sections.
    #[error("truncated BTF data: {what} at offset {offset} runs past the end ({len} bytes)")]
    Truncated {
        what: &'static str,
        offset: usize,
        len: usize,
    },
    /// The first two bytes are not the BTF magic.
    #[error("bad BTF magic 0x{0:04x} (expected 0xeb9f)")]
    BadMagic(u16),
    /// The blob is big-endian BTF, which this parser does not support.
    #[error("big-endian BTF is not supported (only little-endian)")]
    BigEndian,
    /// The header is inconsistent (version, lengths, section bounds).
    #[error("bad BTF header: {0}")]
    BadHeader(String),
    /// A type record has a kind this parser does not know.
    #[error("unknown BTF kind {kind} at type id {id}")]
    UnknownKind { kind: u32, id: u32 },
    /// A name offset points outside the string section or at invalid text.
    #[error("bad BTF string at offset {offset}: {reason}")]
    BadString { offset: u32, reason: &'static str },
    /// A type id refers past the last type.
    #[error("type id {id} out of range (BTF has {count} types)")]
    BadTypeId { id: u32, count: usize },
    /// No struct/union/enum with that name exists.
    #[error("type not found \"{0}\"")]
    TypeNotFound(String),
    /// A component of the member path does not exist.
    #[error("member not found \"{path}\" in struct \"{type_name}\"")]
    MemberNotFound { path: String, type_name: String },
    /// The member is a bitfield, which has no byte offset/size.
    #[error("member \"{path}\" in struct \"{type_name}\" is a bitfield")]
    Bitfield { path: String, type_name: String },
    /// A path tried to descend into a member that is not a struct or union.
    #[error("member \"{path}\" in struct \"{type_name}\" is not a struct or union")]
    NotComposite { path: String, type_name: String },
    /// A type without a size (void, function, forward declaration...).
    #[error("type id {id} (kind {kind}) has no size")]
    NoSize { id: u32, kind: u32 },
    /// Type references nest deeper than the parser allows (or loop).
    #[error("type nesting deeper than {MAX_DEPTH} levels at type id {id}")]
    TooDeep { id: u32 },
    /// A size or offset does not fit in 32 bits.
    #[error("size or offset overflow at type id {id}")]
    Overflow { id: u32 },
}

/// Offset and size of a struct member, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Bytes from the start of the outer struct.
    pub offset: u32,
    /// Size of the member in bytes.
    pub size: u32,
}

/// One `struct btf_type` record plus where its trailing data starts.
#[derive(Debug, Clone, Copy)]
struct TypeRec {
    name_off: u32,
    info: u32,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    /// Absolute offset (in `Btf::data`) of the kind-specific data after the record.
    extra: usize,
}

impl TypeRec {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    fn kind_flag(&self) -> bool {
        self.info >> 31 != 0
    }
}

/// A member found in a struct/union (possibly through anonymous members).
#[derive(Debug, Clone, Copy)]
struct Member {
    type_id: u32,
    /// Bit offset from the start of the struct searched.
    bit_offset: u64,
    /// Non-zero for a bitfield.
    bitfield_size: u32,
}

/// A parsed BTF blob. Keeps the types and the string section.
pub struct Btf {
    data: Vec<u8>,
    /// Absolute start/end of the string section in `data`.
    str_start: usize,
    str_end: usize,
    /// Index = type id; entry 0 is a placeholder for `void`.
    types: Vec<TypeRec>,
    /// Name -> first STRUCT/UNION with non-zero vlen (or any with that name).
    composites: HashMap<String, u32>,
    /// Name -> first ENUM/ENUM64 with non-zero vlen (or any with that name).
    enums: HashMap<String, u32>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("bytes", &self.data.len())
            .field("types", &self.types.len().saturating_sub(1))
            .finish()
    }
}

fn read_u32(data: &[u8], offset: usize, what: &'static str) -> Result<u32, BtfError> {
    let bytes = offset
        .checked_add(4)
        .and_then(|end| data.get(offset..end))
        .ok_or(BtfError::Truncated {
            what,
            offset,
            len: data.len(),
        })?;
    let mut buf = [0u8; 4];
    buf.copy_from_slice(bytes);
    Ok(u32::from_le_bytes(buf))
}

/// Absolute `[start, end)` of a section given its header offset/length.
fn section(
    hdr_len: usize,
    off: u32,
    len: u32,
    total: usize,
    name: &str,
) -> Result<(usize, usize), BtfError> {
    let start = hdr_len.checked_add(off as usize);
    let end = start.and_then(|s| s.checked_add(len as usize));
    match (start, end) {
        (Some(start), Some(end)) if end <= total => Ok((start, end)),
        _ => Err(BtfError::Truncated {
            what: if name == "type" {
                "type section"
            } else {
                "string section"
            },
            offset: start.unwrap_or(usize::MAX),
            len: total,
        }),
    }
}

/// Bytes of kind-specific data following a type record.
fn extra_len(kind: u32, vlen: usize, id: u32) -> Result<usize, BtfError> {
    let per = match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => return Ok(4),
        KIND_ARRAY => return Ok(12),
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => return Ok(0),
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12,
        KIND_ENUM | KIND_FUNC_PROTO => 8,
        _ => return Err(BtfError::UnknownKind { kind, id }),
    };
    vlen.checked_mul(per).ok_or(BtfError::Overflow { id })
}

fn is_modifier(kind: u32) -> bool {
    matches!(
        kind,
        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
    )
}

fn is_composite(kind: u32) -> bool {
    kind == KIND_STRUCT || kind == KIND_UNION
}

impl Btf {
    /// Parses a raw little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        Self::from_vec(data.to_vec())
    }

    /// Parses a raw little-endian BTF blob it keeps (no copy: the kernel's is 5-6 MiB).
    pub fn from_vec(owned: Vec<u8>) -> Result<Btf, BtfError> {
        let data: &[u8] = &owned;
        let total = data.len();
        let magic_bytes = data.get(0..2).ok_or(BtfError::Truncated {
            what: "header",
            offset: 0,
            len: total,
        })?;
        let magic = u16::from_le_bytes([magic_bytes[0], magic_bytes[1]]);
        if magic != BTF_MAGIC {
            if magic.swap_bytes() == BTF_MAGIC {
                return Err(BtfError::BigEndian);
            }
            return Err(BtfError::BadMagic(magic));
        }
        if total < HEADER_LEN {
            return Err(BtfError::Truncated {
                what: "header",
                offset: 0,
                len: total,
            });
        }
        let version = data.get(2).copied().unwrap_or(0);
        if version != BTF_VERSION {
            return Err(BtfError::BadHeader(format!(
                "unsupported version {version} (expected {BTF_VERSION})"
            )));
        }
        let hdr_len = read_u32(data, 4, "header")? as usize;
        if hdr_len < HEADER_LEN {
            return Err(BtfError::BadHeader(format!(
                "header length {hdr_len} is smaller than {HEADER_LEN}"
            )));
        }
        if hdr_len > total {
            return Err(BtfError::Truncated {
                what: "header",
                offset: 0,
                len: total,
            });
        }
        let type_off = read_u32(data, 8, "header")?;
        let type_len = read_u32(data, 12, "header")?;
        let str_off = read_u32(data, 16, "header")?;
        let str_len = read_u32(data, 20, "header")?;
        let (type_start, type_end) = section(hdr_len, type_off, type_len, total, "type")?;
        let (str_start, str_end) = section(hdr_len, str_off, str_len, total, "string")?;
        if str_len == 0 {
            return Err(BtfError::BadHeader("empty string section".into()));
        }
        if data.get(str_start) != Some(&0) || data.get(str_end - 1) != Some(&0) {
            return Err(BtfError::BadHeader(
                "string section must start and end with a NUL byte".into(),
            ));
        }

        let mut btf = Btf {
            data: owned,
            str_start,
            str_end,
            types: Vec::with_capacity(type_len as usize / 24 + 1),
            composites: HashMap::new(),
            enums: HashMap::new(),
        };
        btf.types.push(TypeRec {
            name_off: 0,
            info: 0,
            size_or_type: 0,
            extra: 0,
        });

        let mut pos = type_start;
        while pos < type_end {
            let id = u32::try_from(btf.types.len()).map_err(|_| BtfError::Overflow { id: 0 })?;
            let trunc = BtfError::Truncated {
                what: "type record",
                offset: pos,
                len: type_end,
            };
            let extra = match pos.checked_add(TYPE_LEN) {
                Some(e) if e <= type_end => e,
                _ => return Err(trunc),
            };
            let data = &btf.data;
            let rec = TypeRec {
                name_off: read_u32(data, pos, "type record")?,
                info: read_u32(data, pos + 4, "type record")?,
                size_or_type: read_u32(data, pos + 8, "type record")?,
                extra,
            };
            let next = match extra.checked_add(extra_len(rec.kind(), rec.vlen(), id)?) {
                Some(n) if n <= type_end => n,
                _ => return Err(trunc),
            };
            btf.types.push(rec);
            pos = next;
        }

        btf.build_index()?;
        Ok(btf)
    }

    /// Reads and parses a raw BTF file such as `/sys/kernel/btf/vmlinux`.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Btf::from_vec(data)
    }

    /// Offset and size of a member of struct/union `type_name`, following a
    /// dot path such as `"nd_net.net"`. Anonymous struct/union members are
    /// searched transparently; typedefs and qualifiers are looked through.
    pub fn field(&self, type_name: &str, path: &str) -> Result<Field, BtfError> {
        let mut cur = self.find_composite(type_name)?;
        let mut total_bits: u64 = 0;
        let mut member_type = None;
        // Byte ranges of `path` used to name the failing prefix in errors.
        let mut start = 0usize;
        let mut prev_end = 0usize;
        for comp in path.split('.') {
            let end = start.saturating_add(comp.len());
            let so_far = path.get(..end).unwrap_or(path);
            if let Some(prev) = member_type {
                let (id, rec) = self.resolve(prev)?;
                if !is_composite(rec.kind()) {
                    return Err(BtfError::NotComposite {
                        path: path.get(..prev_end).unwrap_or(path).to_string(),
                        type_name: type_name.to_string(),
                    });
                }
                cur = id;
            }
            let not_found = || BtfError::MemberNotFound {
                path: so_far.to_string(),
                type_name: type_name.to_string(),
            };
            if comp.is_empty() {
                return Err(not_found());
            }
            let mut visited = HashSet::new();
            let m = self
                .find_member(cur, comp, 0, &mut visited)?
                .ok_or_else(not_found)?;
            if m.bitfield_size != 0 || m.bit_offset % 8 != 0 || self.is_int_bitfield(m.type_id)? {
                return Err(BtfError::Bitfield {
                    path: so_far.to_string(),
                    type_name: type_name.to_string(),
                });
            }
            total_bits = total_bits
                .checked_add(m.bit_offset)
                .ok_or(BtfError::Overflow { id: cur })?;
            member_type = Some(m.type_id);
            prev_end = end;
            start = end.saturating_add(1);
        }
        let last = member_type.unwrap_or(0);
        let offset = u32::try_from(total_bits / 8).map_err(|_| BtfError::Overflow { id: last })?;
        let size = self.size_of(last, 0)?;
        Ok(Field { offset, size })
    }

    /// Size in bytes of the named struct/union.
    pub fn struct_size(&self, type_name: &str) -> Result<u32, BtfError> {
        let id = self.find_composite(type_name)?;
        Ok(self.get(id)?.size_or_type)
    }

    /// Variants (name, value) of the named enum (`BTF_KIND_ENUM` or
    /// `BTF_KIND_ENUM64`), in BTF order. Unsigned 64-bit values above
    /// `i64::MAX` wrap to negative numbers.
    pub fn enum_variants(&self, enum_name: &str) -> Result<Vec<(String, i64)>, BtfError> {
        let id = *self
            .enums
            .get(enum_name)
            .ok_or_else(|| BtfError::TypeNotFound(enum_name.to_string()))?;
        let rec = self.get(id)?;
        let signed = rec.kind_flag();
        let per = if rec.kind() == KIND_ENUM64 { 12 } else { 8 };
        let mut out = Vec::with_capacity(rec.vlen());
        for i in 0..rec.vlen() {
            let at = i
                .checked_mul(per)
                .and_then(|o| o.checked_add(rec.extra))
                .ok_or(BtfError::Overflow { id })?;
            let name = self.str_at(self.u32_at(at, "enum value")?)?;
            let lo = self.u32_at(at.saturating_add(4), "enum value")?;
            let value = if rec.kind() == KIND_ENUM64 {
                let hi = self.u32_at(at.saturating_add(8), "enum value")?;
                // Reinterpret the 64 bits; unsigned values > i64::MAX wrap.
                ((u64::from(hi) << 32) | u64::from(lo)) as i64
            } else if signed {
                i64::from(lo as i32)
            } else {
                i64::from(lo)
            };
            out.push((name.to_string(), value));
        }
        Ok(out)
    }

    fn build_index(&mut self) -> Result<(), BtfError> {
        let mut composites: HashMap<String, (u32, bool)> = HashMap::new();
        let mut enums: HashMap<String, (u32, bool)> = HashMap::new();
        for (idx, rec) in self.types.iter().enumerate().skip(1) {
            let kind = rec.kind();
            let map = if is_composite(kind) {
                &mut composites
            } else if kind == KIND_ENUM || kind == KIND_ENUM64 {
                &mut enums
            } else {
                continue;
            };
            if rec.name_off == 0 {
                continue;
            }
            let id = u32::try_from(idx).map_err(|_| BtfError::Overflow { id: 0 })?;
            let name = self.str_at(rec.name_off)?;
            let has_members = rec.vlen() != 0;
            match map.get_mut(name) {
                None => {
                    map.insert(name.to_string(), (id, has_members));
                }
                // Prefer the first definition with members over an earlier empty one.
                Some(entry) if !entry.1 && has_members => *entry = (id, true),
                Some(_) => {}
            }
        }
        self.composites = composites.into_iter().map(|(k, v)| (k, v.0)).collect();
        self.enums = enums.into_iter().map(|(k, v)| (k, v.0)).collect();
        Ok(())
    }

    fn find_composite(&self, name: &str) -> Result<u32, BtfError> {
        self.composites
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::TypeNotFound(name.to_string()))
    }

    fn u32_at(&self, offset: usize, what: &'static str) -> Result<u32, BtfError> {
        read_u32(&self.data, offset, what)
    }

    fn get(&self, id: u32) -> Result<&TypeRec, BtfError> {
        if id == 0 {
            return Err(BtfError::NoSize { id, kind: 0 });
        }
        self.types.get(id as usize).ok_or(BtfError::BadTypeId {
            id,
            count: self.types.len().saturating_sub(1),
        })
    }

    fn str_at(&self, offset: u32) -> Result<&str, BtfError> {
        let bad = |reason| BtfError::BadString { offset, reason };
        let strs = self
            .data
            .get(self.str_start..self.str_end)
            .ok_or(bad("string section out of range"))?;
        let tail = strs
            .get(offset as usize..)
            .filter(|t| !t.is_empty())
            .ok_or(bad("offset past the end of the string section"))?;
        let len = tail
            .iter()
            .position(|&b| b == 0)
            .ok_or(bad("missing NUL terminator"))?;
        std::str::from_utf8(tail.get(..len).unwrap_or_default()).map_err(|_| bad("invalid UTF-8"))
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type.
    fn resolve(&self, mut id: u32) -> Result<(u32, &TypeRec), BtfError> {
        for _ in 0..=MAX_DEPTH {
            let rec = self.get(id)?;
            if !is_modifier(rec.kind()) {
                return Ok((id, rec));
            }
            id = rec.size_or_type;
        }
        Err(BtfError::TooDeep { id })
    }

    /// True for old-style (non kind_flag) bitfields: an INT narrower than its size.
    fn is_int_bitfield(&self, id: u32) -> Result<bool, BtfError> {
        let (_, rec) = self.resolve(id)?;
        if rec.kind() != KIND_INT {
            return Ok(false);
        }
        let enc = self.u32_at(rec.extra, "int encoding")?;
        let bits = enc & 0xff;
        let bit_off = (enc >> 16) & 0xff;
        Ok(bit_off != 0 || u64::from(bits) != u64::from(rec.size_or_type) * 8)
    }

    fn size_of(&self, id: u32, depth: usize) -> Result<u32, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id });
        }
        let (id, rec) = self.resolve(id)?;
        match rec.kind() {
            KIND_PTR => Ok(PTR_SIZE),
            KIND_ARRAY => {
                let elem = self.u32_at(rec.extra, "array")?;
                let nelems = self.u32_at(rec.extra.saturating_add(8), "array")?;
                let elem_size = self.size_of(elem, depth + 1)?;
                nelems
                    .checked_mul(elem_size)
                    .ok_or(BtfError::Overflow { id })
            }
            KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION | KIND_FLOAT
            | KIND_DATASEC => Ok(rec.size_or_type),
            kind => Err(BtfError::NoSize { id, kind }),
        }
    }

    /// Finds member `name` in composite `id`, descending into anonymous
    /// struct/union members. `visited` makes hostile (cyclic or heavily
    /// shared) graphs linear: a composite already searched cannot contain
    /// the member, otherwise the search would have stopped there.
    fn find_member(
        &self,
        id: u32,
        name: &str,
        depth: usize,
        visited: &mut HashSet<u32>,
    ) -> Result<Option<Member>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(BtfError::TooDeep { id });
        }
        if !visited.insert(id) {
            return Ok(None);
        }
        let rec = self.get(id)?;
        let kflag = rec.kind_flag();
        for i in 0..rec.vlen() {
            let at = i
                .checked_mul(12)
                .and_then(|o| o.checked_add(rec.extra))
                .ok_or(BtfError::Overflow { id })?;
            let name_off = self.u32_at(at, "struct member")?;
            let type_id = self.u32_at(at.saturating_add(4), "struct member")?;
            let raw = self.u32_at(at.saturating_add(8), "struct member")?;
            let (bit_offset, bitfield_size) = if kflag {
                (u64::from(raw & 0x00ff_ffff), raw >> 24)
            } else {
                (u64::from(raw), 0)
            };
            if name_off != 0 {
                if self.str_at(name_off)? == name {
                    return Ok(Some(Member {
                        type_id,
                        bit_offset,
                        bitfield_size,
                    }));
                }
                continue;
            }
            let (inner, inner_rec) = self.resolve(type_id)?;
            if !is_composite(inner_rec.kind()) {
                continue;
            }
            if let Some(m) = self.find_member(inner, name, depth + 1, visited)? {
                let bit_offset = m
                    .bit_offset
                    .checked_add(bit_offset)
                    .ok_or(BtfError::Overflow { id })?;
                return Ok(Some(Member { bit_offset, ..m }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::OnceLock;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/linux-6.18/vmlinux.btf.gz"
    );

    fn raw() -> &'static [u8] {
        static RAW: OnceLock<Vec<u8>> = OnceLock::new();
        RAW.get_or_init(|| {
            let file = std::fs::File::open(FIXTURE).expect("open BTF fixture");
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(file)
                .read_to_end(&mut out)
                .expect("gunzip BTF fixture");
            out
        })
    }

    fn btf() -> &'static Btf {
        static BTF: OnceLock<Btf> = OnceLock::new();
        BTF.get_or_init(|| Btf::parse(raw()).expect("parse BTF fixture"))
    }

    fn field(ty: &str, path: &str) -> (u32, u32) {
        let f = btf()
            .field(ty, path)
            .unwrap_or_else(|e| panic!("{ty}.{path}: {e}"));
        (f.offset, f.size)
    }

    // Expected values for Linux 6.18 (6.18.44-fc-v657) were taken from
    // `pahole -F btf /sys/kernel/btf/vmlinux -C <type>` and an independent
    // Python parser of the same blob.

    #[test]
    fn parses_all_types() {
        assert_eq!(btf().types.len() - 1, 126_585);
    }

    #[test]
    fn sk_buff_fields() {
        assert_eq!(field("sk_buff", "head"), (192, 8));
        assert_eq!(field("sk_buff", "data"), (200, 8));
        assert_eq!(field("sk_buff", "len"), (112, 4));
        assert_eq!(field("sk_buff", "network_header"), (180, 2));
        assert_eq!(field("sk_buff", "transport_header"), (178, 2));
        assert_eq!(field("sk_buff", "mac_header"), (182, 2));
        assert_eq!(field("sk_buff", "dev"), (16, 8));
        assert_eq!(field("sk_buff", "sk"), (24, 8));
        assert_eq!(field("sk_buff", "protocol"), (176, 2));
        assert_eq!(btf().struct_size("sk_buff").unwrap(), 224);
    }

    #[test]
    fn net_device_fields() {
        assert_eq!(field("net_device", "ifindex"), (224, 4));
        assert_eq!(field("net_device", "name"), (280, 16));
        assert_eq!(field("net_device", "nd_net.net"), (264, 8));
        assert_eq!(field("net_device", "nd_net"), (264, 8));
        assert_eq!(btf().struct_size("net_device").unwrap(), 2496);
    }

    #[test]
    fn net_and_sock_fields() {
        assert_eq!(field("net", "ns.inum"), (176, 4));
        assert_eq!(field("net", "ns"), (152, 80));
        assert_eq!(btf().struct_size("net").unwrap(), 4288);
        assert_eq!(field("sock", "__sk_common.skc_net.net"), (48, 8));
        assert_eq!(field("sock", "__sk_common.skc_family"), (16, 2));
        assert_eq!(field("sock", "__sk_common"), (0, 136));
        assert_eq!(btf().struct_size("sock").unwrap(), 784);
        assert_eq!(btf().struct_size("sock_common").unwrap(), 136);
    }

    #[test]
    fn skb_drop_reason_enum() {
        let vars = btf().enum_variants("skb_drop_reason").unwrap();
        assert_eq!(vars.len(), 130);
        assert_eq!(vars[0], ("SKB_NOT_DROPPED_YET".to_string(), 0));
        let get = |n: &str| {
            vars.iter()
                .find(|(name, _)| name == n)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert_eq!(get("SKB_DROP_REASON_NO_SOCKET"), 3);
        assert_eq!(get("SKB_DROP_REASON_NETFILTER_DROP"), 12);
        assert_eq!(get("SKB_DROP_REASON_TCP_RFC7323_TW_PAWS"), 38);
        // Unsigned enum: 0xffff0000 must not be sign-extended.
        assert_eq!(get("SKB_DROP_REASON_SUBSYS_MASK"), 4_294_901_760);
    }

    #[test]
    fn lookup_errors() {
        let b = btf();
        assert!(matches!(
            b.field("no_such_struct_xyz", "a"),
            Err(BtfError::TypeNotFound(ref n)) if n == "no_such_struct_xyz"
        ));
        assert!(matches!(
            b.struct_size("no_such_struct_xyz"),
            Err(BtfError::TypeNotFound(_))
        ));
        assert!(matches!(
            b.enum_variants("no_such_enum_xyz"),
            Err(BtfError::TypeNotFound(_))
        ));
        let err = b.field("sk_buff", "no_such_member").unwrap_err();
        assert!(matches!(
            err,
            BtfError::MemberNotFound { ref path, ref type_name }
                if path == "no_such_member" && type_name == "sk_buff"
        ));
        assert_eq!(
            err.to_string(),
            "member not found \"no_such_member\" in struct \"sk_buff\""
        );
        assert!(matches!(
            b.field("net_device", "nd_net.nope"),
            Err(BtfError::MemberNotFound { ref path, .. }) if path == "nd_net.nope"
        ));
        assert!(matches!(
            b.field("sk_buff", ""),
            Err(BtfError::MemberNotFound { .. })
        ));
        assert!(matches!(
            b.field("sk_buff", "len."),
            Err(BtfError::NotComposite { ref path, .. }) if path == "len"
        ));
        assert!(matches!(
            b.field("sock_common", "skc_reuse"),
            Err(BtfError::Bitfield { .. })
        ));
    }

    #[test]
    fn from_file_reports_path() {
        let err = Btf::from_file(Path::new("/nonexistent/btf/vmlinux")).unwrap_err();
        assert!(matches!(err, BtfError::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/btf/vmlinux"));
    }

    #[test]
    fn bad_inputs() {
        assert!(matches!(Btf::parse(&[]), Err(BtfError::Truncated { .. })));
        assert!(matches!(
            Btf::parse(&[0x9f]),
            Err(BtfError::Truncated { .. })
        ));
        let mut bad = raw()[..64].to_vec();
        bad[0] = 0x7f;
        bad[1] = 0x45;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BadMagic(0x457f))));
        bad[0] = 0xeb;
        bad[1] = 0x9f;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BigEndian)));
        let mut bad = raw().to_vec();
        bad[2] = 2;
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BadHeader(_))));
        let mut bad = raw().to_vec();
        bad[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(Btf::parse(&bad), Err(BtfError::BadHeader(_))));
    }

    #[test]
    fn truncated_blobs_error() {
        let data = raw();
        let n = data.len();
        for cut in [
            1,
            2,
            3,
            23,
            24,
            25,
            37,
            4097,
            n / 3 + 1,
            n / 2,
            n / 2 + 5,
            n - 7,
            n - 1,
        ] {
            let res = Btf::parse(&data[..cut]);
            assert!(res.is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn unknown_kind_is_reported() {
        let mut data = raw().to_vec();
        let hdr_len = read_u32(&data, 4, "").unwrap() as usize;
        let type_off = read_u32(&data, 8, "").unwrap() as usize;
        // Type id 1's info word: set kind to 31.
        let info_at = hdr_len + type_off + 4;
        data[info_at + 3] = 0x1f;
        assert!(matches!(
            Btf::parse(&data),
            Err(BtfError::UnknownKind { kind: 31, id: 1 })
        ));
    }

    #[test]
    fn corrupted_blobs_never_panic() {
        let orig = raw();
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200 {
            let mut data = orig.to_vec();
            for _ in 0..64 {
                let at = (next() % data.len() as u64) as usize;
                data[at] = next() as u8;
            }
            // Also hit the header and the first type records harder.
            for _ in 0..4 {
                let at = (next() % 256) as usize;
                data[at] = next() as u8;
            }
            if let Ok(b) = Btf::parse(&data) {
                let _ = b.field("sk_buff", "dev");
                let _ = b.field("sock", "__sk_common.skc_net.net");
                let _ = b.struct_size("net_device");
                let _ = b.enum_variants("skb_drop_reason");
            }
        }
    }

    #[test]
    fn self_referential_types_terminate() {
        // Hand-built BTF: typedef 1 -> 1 (a loop), struct 2 with an anonymous
        // member of its own type, array 3 of itself.
        let strings = b"\0s\0x\0".to_vec();
        let mut types = Vec::new();
        let mut rec = |name: u32, info: u32, st: u32, extra: &[u32]| {
            for v in [name, info, st].iter().chain(extra) {
                types.extend_from_slice(&v.to_le_bytes());
            }
        };
        rec(0, KIND_TYPEDEF << 24, 1, &[]);
        rec(1, (KIND_STRUCT << 24) | 2, 8, &[0, 2, 0, 3, 1, 0]);
        rec(0, KIND_ARRAY << 24, 0, &[3, 3, 2]);
        let mut data = Vec::new();
        for v in [0x0001_eb9f_u32, 24] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        let tl = types.len() as u32;
        for v in [0, tl, tl, strings.len() as u32] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        let b = Btf::parse(&data).unwrap();
        assert!(matches!(
            b.field("s", "missing"),
            Err(BtfError::MemberNotFound { .. })
        ));
        assert!(matches!(b.field("s", "x"), Err(BtfError::TooDeep { .. })));
        assert!(matches!(b.size_of(3, 0), Err(BtfError::TooDeep { .. })));
        assert_eq!(b.struct_size("s").unwrap(), 8);
    }
}
