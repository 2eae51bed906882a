//! Bounded heavy hitters: the Space-Saving algorithm (Metwally, Agrawal, El Abbadi, 2005).
//!
//! A flood from a million addresses must not make a table of a million addresses: [`TopK`]
//! keeps `capacity` keys whatever it is fed. A key whose true count exceeds `total /
//! capacity` is always kept; a kept key's count overestimates its true count by at most its
//! `error` (the count of the key whose slot it took), and the counts always sum to `total`.
//!
//! The slots sit in a min-heap of slot numbers so that a new key takes the smallest slot in
//! O(log capacity) with no hashing beyond the one lookup and, on a miss, one removal and one
//! insertion.

use std::collections::HashMap;
use std::hash::Hash;

/// The hasher of user space's tables keyed by what packets carry: foldhash, a few
/// nanoseconds where SipHash took tens, on every event. Its seeds are random per process and
/// per table, so no list of inputs collides in every instance; foldhash does not resist an
/// attacker who observes hash outputs or timings, and a sender observes neither here (these
/// tables are never iterated into anything a sender sees, and swarmtrace answers no packet).
/// The tables are bounded besides (512 addresses, 25 000 handshakes).
pub type Fast = foldhash::fast::RandomState;

#[derive(Debug, Clone)]
struct Slot<K> {
    key: K,
    count: u64,
    /// What the slot counted before this key took it: the most its count overestimates.
    error: u64,
    /// Where the slot is in `heap`.
    pos: u32,
}

/// A counted key: `count - error <= true count <= count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted<K> {
    pub key: K,
    pub count: u64,
    pub error: u64,
}

#[derive(Debug, Clone)]
pub struct TopK<K> {
    capacity: usize,
    index: HashMap<K, u32, Fast>,
    slots: Vec<Slot<K>>,
    /// Slot numbers, a min-heap by count.
    heap: Vec<u32>,
    total: u64,
    /// The slot counted last: a flood repeats a key (its one service, its few sources),
    /// found again by one compare, without hashing it. Checked, never trusted: its key may
    /// have been replaced since.
    last: u32,
}

impl<K: Hash + Eq + Clone> TopK<K> {
    /// At least one slot.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Self {
            capacity,
            index: HashMap::default(),
            slots: Vec::new(),
            heap: Vec::new(),
            total: 0,
            last: 0,
        }
    }

    /// Everything counted, kept or not: exact.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Keys kept now (at most the capacity).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn add(&mut self, key: K) {
        self.add_n(key, 1);
    }

    pub fn add_n(&mut self, key: K, n: u64) {
        self.total += n;
        let kept = match self.slots.get(self.last as usize) {
            Some(slot) if slot.key == key => Some(self.last),
            _ => self.index.get(&key).copied(),
        };
        if let Some(s) = kept {
            self.last = s;
            let slot = &mut self.slots[s as usize];
            slot.count += n;
            let pos = slot.pos as usize;
            self.sift_down(pos);
            return;
        }
        if self.slots.len() < self.capacity {
            let s = self.slots.len() as u32;
            self.last = s;
            self.index.insert(key.clone(), s);
            self.slots.push(Slot {
                key,
                count: n,
                error: 0,
                pos: self.heap.len() as u32,
            });
            self.heap.push(s);
            self.sift_up(self.heap.len() - 1);
            return;
        }
        // The smallest slot goes to the new key, which inherits its count as its error.
        let s = self.heap[0];
        let slot = &mut self.slots[s as usize];
        let old = std::mem::replace(&mut slot.key, key.clone());
        slot.error = slot.count;
        slot.count += n;
        self.index.remove(&old);
        self.index.insert(key, s);
        self.last = s;
        self.sift_down(0);
    }

    /// The count kept for `key`, if it is kept.
    pub fn get(&self, key: &K) -> Option<Counted<K>> {
        let s = &self.slots[*self.index.get(key)? as usize];
        Some(Counted {
            key: s.key.clone(),
            count: s.count,
            error: s.error,
        })
    }

    /// The `n` largest counts, largest first; ties in key order.
    pub fn top(&self, n: usize) -> Vec<Counted<K>>
    where
        K: Ord,
    {
        let mut v: Vec<&Slot<K>> = self.slots.iter().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        v.into_iter()
            .take(n)
            .map(|s| Counted {
                key: s.key.clone(),
                count: s.count,
                error: s.error,
            })
            .collect()
    }

    fn count_at(&self, pos: usize) -> u64 {
        self.slots[self.heap[pos] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.slots[self.heap[a] as usize].pos = a as u32;
        self.slots[self.heap[b] as usize].pos = b as u32;
    }

    fn sift_up(&mut self, mut pos: usize) {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.count_at(parent) <= self.count_at(pos) {
                return;
            }
            self.swap(parent, pos);
            pos = parent;
        }
    }

    fn sift_down(&mut self, mut pos: usize) {
        loop {
            let (l, r) = (2 * pos + 1, 2 * pos + 2);
            let mut least = pos;
            if l < self.heap.len() && self.count_at(l) < self.count_at(least) {
                least = l;
            }
            if r < self.heap.len() && self.count_at(r) < self.count_at(least) {
                least = r;
            }
            if least == pos {
                return;
            }
            self.swap(pos, least);
            pos = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap_ok<K: Hash + Eq + Clone>(t: &TopK<K>) {
        for (pos, &s) in t.heap.iter().enumerate() {
            assert_eq!(t.slots[s as usize].pos as usize, pos);
            if pos > 0 {
                assert!(t.count_at((pos - 1) / 2) <= t.count_at(pos));
            }
        }
        assert_eq!(t.index.len(), t.slots.len());
        assert_eq!(t.slots.iter().map(|s| s.count).sum::<u64>(), t.total);
    }

    #[test]
    fn exact_while_it_fits() {
        let mut t = TopK::new(8);
        for (k, n) in [("a", 5), ("b", 3), ("c", 9)] {
            for _ in 0..n {
                t.add(k);
            }
        }
        heap_ok(&t);
        let top = t.top(2);
        assert_eq!((top[0].key, top[0].count, top[0].error), ("c", 9, 0));
        assert_eq!((top[1].key, top[1].count), ("a", 5));
        assert_eq!(t.total(), 17);
    }

    #[test]
    fn a_million_distinct_keys_keep_the_capacity_and_the_heavy_ones() {
        let mut t = TopK::new(64);
        let mut x: u32 = 1;
        for i in 0..1_000_000u32 {
            // Two heavy hitters, 10 % of the stream each, among distinct keys.
            let key = match i % 10 {
                0 => 0,
                1 => 1,
                _ => {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x | 0x100
                }
            };
            t.add(key);
        }
        heap_ok(&t);
        assert_eq!(t.len(), 64);
        assert_eq!(t.total(), 1_000_000);
        let top = t.top(2);
        let keys: Vec<u32> = top.iter().map(|c| c.key).collect();
        assert!(keys.contains(&0) && keys.contains(&1), "{top:?}");
        for c in top {
            assert!(c.count - c.error <= 100_000 && 100_000 <= c.count, "{c:?}");
        }
    }

    #[test]
    fn weighted_adds_and_one_slot() {
        let mut t = TopK::new(0);
        t.add_n("a", 3);
        t.add_n("b", 1);
        heap_ok(&t);
        let top = t.top(5);
        assert_eq!(top.len(), 1);
        assert_eq!((top[0].key, top[0].count, top[0].error), ("b", 4, 3));
        assert!(t.get(&"a").is_none());
    }

    #[test]
    fn the_last_key_shortcut_counts_as_the_index_does() {
        // The same adds with the shortcut and without it (its slot forgotten before each):
        // the same slots, counts and errors, through repeats, returns and replacements.
        let mut with = TopK::new(3);
        let mut without = TopK::new(3);
        let keys = "aaabbaccddddaeeefabbbbgga";
        for (i, k) in keys.chars().enumerate() {
            let n = 1 + (i % 3) as u64;
            with.add_n(k, n);
            without.last = u32::MAX;
            without.add_n(k, n);
            heap_ok(&with);
            let state = |t: &TopK<char>| {
                t.slots
                    .iter()
                    .map(|s| (s.key, s.count, s.error, s.pos))
                    .collect::<Vec<_>>()
            };
            assert_eq!(state(&with), state(&without), "after {i} adds");
            assert_eq!(with.heap, without.heap);
        }
        assert_eq!(with.top(3), without.top(3));
    }
}
