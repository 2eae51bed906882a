//! The handshakes the tracker forgot (past `tracker::MAX_HANDSHAKES`), folded so that the
//! verdicts still count every one: a million dropped handshakes is a million, not the
//! tracker's cap.
//!
//! Handshakes are folded by their shape: what the verdicts read of a handshake except who
//! it was (its answer's kind and each drop note's packet kind, reason, location and
//! namespace). The shapes come from the kernel and the host (its drop reasons, its code, its
//! namespaces), not from senders, and are few; they are bounded all the same, and
//! handshakes of shapes past the bound are counted (`unshaped`). Each shape keeps its first
//! handshake as the representative the verdicts classify: the one judgement made per client
//! (is it inside a local subnet?) is made for that first client.

use std::collections::HashMap;

use crate::trace::handshake::{Answer, Handshake};
use crate::trace::topk::Fast;

/// Shapes kept.
pub const MAX_SHAPES: usize = 256;

/// Fingerprints that lead to a shape (several may, when names are not shared).
const MAX_FINGERPRINTS: usize = 4 * MAX_SHAPES;

#[derive(Debug, Default)]
pub struct Forgotten {
    /// A representative of each shape, and how many handshakes it stands for. Its
    /// `overflow.drops` holds the drops of all of them beyond their notes.
    shapes: Vec<(Handshake, u64)>,
    /// Shape fingerprint -> index in `shapes`: the fast way to its shape.
    index: HashMap<u64, u32, Fast>,
    /// Forgotten handshakes of no kept shape (past [`MAX_SHAPES`]).
    pub unshaped: u64,
}

fn answer_kind(h: &Handshake) -> u8 {
    match h.answer {
        None => 0,
        Some(Answer::SynAck { .. }) => 1,
        Some(Answer::Reset { .. }) => 2,
    }
}

/// Hashes what the verdicts read of a handshake, except its client, service and keys. Its
/// names are hashed by where they are: a drop's names are interned (`Name`) in the
/// namer's tables, so one name is one address (a copy elsewhere is found by content). Once per forgotten handshake under a flood: it
/// must cost next to nothing.
fn fingerprint(h: &Handshake) -> u64 {
    let mut x = u64::from(answer_kind(h)) ^ (h.drops.len() as u64) << 8;
    let mut mix = |v: u64| {
        x = (x ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
    };
    for d in &h.drops {
        mix(d.kind as u64);
        mix(d.reason.addr() as u64);
        mix(d.location.addr() as u64);
        mix(u64::from(d.netns));
        mix(d.netns_name.as_ref().map_or(0, |n| n.addr() as u64));
    }
    x
}

fn same_shape(a: &Handshake, b: &Handshake) -> bool {
    answer_kind(a) == answer_kind(b)
        && a.drops.len() == b.drops.len()
        && a.drops.iter().zip(&b.drops).all(|(x, y)| {
            x.kind == y.kind
                && x.reason == y.reason
                && x.location == y.location
                && x.netns == y.netns
                && x.netns_name == y.netns_name
        })
}

impl Forgotten {
    /// Counts a forgotten handshake (copied only when it is the first of its shape).
    pub fn add(&mut self, h: &Handshake) {
        let fp = fingerprint(h);
        let known = match self.index.get(&fp) {
            Some(&i) if same_shape(&self.shapes[i as usize].0, h) => Some(i as usize),
            // Names that were not shared (or a rare fingerprint collision): by content.
            _ => {
                let i = self.shapes.iter().position(|(rep, _)| same_shape(rep, h));
                if let Some(i) = i {
                    if self.index.len() < MAX_FINGERPRINTS {
                        self.index.insert(fp, i as u32);
                    }
                }
                i
            }
        };
        if let Some(i) = known {
            let (rep, n) = &mut self.shapes[i];
            *n += 1;
            rep.overflow.drops += h.overflow.drops;
        } else if self.shapes.len() < MAX_SHAPES {
            let mut h = h.clone();
            h.keys = Vec::new();
            if self.index.len() < MAX_FINGERPRINTS {
                self.index.insert(fp, self.shapes.len() as u32);
            }
            self.shapes.push((h, 1));
        } else {
            self.unshaped += 1;
        }
    }

    /// Each shape's representative and how many forgotten handshakes it stands for.
    pub fn shapes(&self) -> impl Iterator<Item = (&Handshake, u64)> {
        self.shapes.iter().map(|(h, n)| (h, *n))
    }

    /// Forgotten handshakes, folded or not.
    pub fn total(&self) -> u64 {
        self.shapes.iter().map(|(_, n)| n).sum::<u64>() + self.unshaped
    }
}
