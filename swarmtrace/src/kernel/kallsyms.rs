//! Kernel code addresses to `symbol+0xoffset`, from `/proc/kallsyms`.

use crate::name::Name;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{0} lists every address as 0 (kernel.kptr_restrict): code locations cannot be named; run as root or set kernel.kptr_restrict=0"
    )]
    Restricted(String),
}

/// Text symbols sorted by address. Packed (one string holds every name): a kernel has over
/// 100 000 of them, and a `String` each would double the tracer's resident memory for them.
#[derive(Debug, Default, Clone)]
pub struct Kallsyms {
    /// (address, start of the name in `names`, its length), sorted by address.
    symbols: Vec<(u64, u32, u32)>,
    names: String,
    /// Drop locations already named: drops come from a few code sites, so this stays small
    /// (bounded by the kernel's code), and each site is looked up and formatted once.
    locations: HashMap<u64, Name, foldhash::fast::RandomState>,
}

impl Kallsyms {
    /// Reads the table line by line (the file is several MiB; it is never held whole).
    pub fn read(path: &Path) -> Result<Self, KallsymsError> {
        let io = |source| KallsymsError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut reader = BufReader::new(File::open(path).map_err(io)?);
        let mut syms = Self::default();
        let mut line = String::new();
        let mut any = false;
        loop {
            line.clear();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                break;
            }
            any = true;
            syms.add_line(&line);
        }
        syms.finish();
        if syms.symbols.is_empty() && any {
            return Err(KallsymsError::Restricted(path.display().to_string()));
        }
        Ok(syms)
    }

    /// Keeps text symbols (`t`/`T`) with a non-zero address; skips malformed lines.
    pub fn parse(text: &str) -> Self {
        let mut syms = Self::default();
        for line in text.lines() {
            syms.add_line(line);
        }
        syms.finish();
        syms
    }

    fn add_line(&mut self, line: &str) {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            return;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        if addr == 0 || !(kind == "t" || kind == "T") {
            return;
        }
        let (Ok(start), Ok(len)) = (u32::try_from(self.names.len()), u32::try_from(name.len()))
        else {
            return;
        };
        self.names.push_str(name);
        self.symbols.push((addr, start, len));
    }

    fn finish(&mut self) {
        self.symbols.sort_unstable_by_key(|(a, _, _)| *a);
        self.symbols.shrink_to_fit();
        self.names.shrink_to_fit();
    }

    fn name(&self, &(_, start, len): &(u64, u32, u32)) -> &str {
        &self.names[start as usize..(start + len) as usize]
    }

    /// True when the kernel has a text symbol of that name.
    pub fn has(&self, name: &str) -> bool {
        self.symbols.iter().any(|s| self.name(s) == name)
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol containing `addr` and the offset into it.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.symbols.partition_point(|(a, _, _)| *a <= addr);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        Some((self.name(s), addr - s.0))
    }

    /// `name+0xoff`, or the bare hex address when no symbol covers it.
    pub fn symbolize(&self, addr: u64) -> String {
        match self.lookup(addr) {
            Some((name, off)) => format!("{name}+{off:#x}"),
            None => format!("{addr:#x}"),
        }
    }

    /// [`Self::symbolize`], memoized (once per drop).
    pub fn location(&mut self, addr: u64) -> Name {
        if let Some(l) = self.locations.get(&addr) {
            return l.clone();
        }
        let l = Name::intern(&self.symbolize(addr));
        self.locations.insert(addr, l.clone());
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Kallsyms {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/linux-6.18/kallsyms.excerpt"
        );
        Kallsyms::read(Path::new(path)).unwrap()
    }

    #[test]
    fn symbolizes_drop_locations() {
        let k = fixture();
        assert_eq!(k.symbolize(0xffffffff820339c0 + 0x1f3), "tcp_v4_rcv+0x1f3");
        assert_eq!(k.symbolize(0xffffffff81f63250), "nft_do_chain+0x0");
        assert_eq!(k.lookup(0xffffffff8211a310 + 4), Some(("tcp_v6_rcv", 4)));
        // Below the first symbol there is nothing to name.
        assert_eq!(k.symbolize(0x10), "0x10");
    }

    #[test]
    fn memoized_locations_are_the_symbolized_ones() {
        let mut k = fixture();
        for addr in [0xffffffff820339c0 + 0x1f3, 0x10, 0xffffffff820339c0 + 0x1f3] {
            assert_eq!(&*k.location(addr), k.symbolize(addr));
        }
    }

    #[test]
    fn skips_data_symbols_and_module_tags() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _text\nffffffff81000100 D some_data\nffffffffc0203000 t ftrace_trampoline\t[__builtin__ftrace]\ngarbage line\n",
        );
        assert_eq!(k.len(), 2);
        assert_eq!(k.symbolize(0xffffffff81000180), "_text+0x180");
        assert_eq!(k.symbolize(0xffffffffc0203010), "ftrace_trampoline+0x10");
    }

    #[test]
    fn restricted_kallsyms_is_reported() {
        let dir = std::env::temp_dir().join(format!("swarmtrace-kallsyms-{}", std::process::id()));
        std::fs::write(
            &dir,
            "0000000000000000 T _text\n0000000000000000 t tcp_v4_rcv\n",
        )
        .unwrap();
        let err = Kallsyms::read(&dir).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(err.to_string().contains("kptr_restrict"), "{err}");
    }
}
