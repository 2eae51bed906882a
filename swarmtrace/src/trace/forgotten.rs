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
use std::hash::{Hash, Hasher};

use crate::trace::handshake::{Answer, Handshake};

/// Shapes kept.
pub const MAX_SHAPES: usize = 256;

#[derive(Debug, Default)]
pub struct Forgotten {
    /// A representative of each shape, and how many handshakes it stands for. Its
    /// `overflow.drops` holds the drops of all of them beyond their notes.
    shapes: Vec<(Handshake, u64)>,
    /// Shape fingerprint -> index in `shapes`.
    index: HashMap<u64, u32>,
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

/// Hashes what the verdicts read of a handshake, except its client, service and keys.
fn fingerprint(h: &Handshake) -> u64 {
    let mut s = std::collections::hash_map::DefaultHasher::new();
    answer_kind(h).hash(&mut s);
    h.drops.len().hash(&mut s);
    for d in &h.drops {
        (d.kind as u8).hash(&mut s);
        d.reason.hash(&mut s);
        d.location.hash(&mut s);
        d.netns.hash(&mut s);
        d.netns_name.hash(&mut s);
    }
    s.finish()
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
    pub fn add(&mut self, mut h: Handshake) {
        let fp = fingerprint(&h);
        if let Some(&i) = self.index.get(&fp) {
            let (rep, n) = &mut self.shapes[i as usize];
            if same_shape(rep, &h) {
                *n += 1;
                rep.overflow.drops += h.overflow.drops;
                return;
            }
        } else if self.shapes.len() < MAX_SHAPES {
            h.keys = Vec::new();
            self.index.insert(fp, self.shapes.len() as u32);
            self.shapes.push((h, 1));
            return;
        }
        self.unshaped += 1;
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
