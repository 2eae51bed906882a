//! Names of the hops a handshake crossed: `NETNS:IFACE/in|out`, from the watched interfaces.

use std::collections::HashMap;

use swarmtrace_common::Hop;

use crate::trace::tracer::Watched;

/// Names hops as `NETNS:IFACE/in|out` from the watched interfaces.
#[derive(Debug)]
pub struct HopNames {
    names: HashMap<(u32, u32), (String, String)>,
}

impl HopNames {
    pub fn new(watched: &[Watched]) -> Self {
        Self {
            names: watched
                .iter()
                .map(|w| {
                    (
                        (w.netns, w.ifindex),
                        (w.spec.netns.clone(), w.spec.ifname.clone()),
                    )
                })
                .collect(),
        }
    }

    /// (namespace, interface) of a hop.
    pub fn place(&self, hop: &Hop) -> (String, String) {
        self.names
            .get(&(hop.netns, hop.ifindex))
            .cloned()
            .unwrap_or_else(|| (format!("netns:{}", hop.netns), format!("if{}", hop.ifindex)))
    }

    /// Adds re-attached interfaces; old entries stay, for hops recorded before.
    pub fn learn(&mut self, watched: &[Watched]) {
        for w in watched {
            self.names.insert(
                (w.netns, w.ifindex),
                (w.spec.netns.clone(), w.spec.ifname.clone()),
            );
        }
    }

    /// Every (netns inode, ifindex) -> name, for the bundle.
    pub fn entries(&self) -> Vec<(u32, u32, String, String)> {
        let mut v: Vec<_> = self
            .names
            .iter()
            .map(|((ns, i), (n, f))| (*ns, *i, n.clone(), f.clone()))
            .collect();
        v.sort();
        v
    }

    pub fn from_entries(entries: &[(u32, u32, String, String)]) -> Self {
        Self {
            names: entries
                .iter()
                .map(|(ns, i, n, f)| ((*ns, *i), (n.clone(), f.clone())))
                .collect(),
        }
    }

    pub fn name(&self, hop: &Hop) -> String {
        let (ns, ifname) = self.place(hop);
        let dir = match hop.dir {
            1 => "/in",
            2 => "/out",
            _ => "",
        };
        if ns == "host" {
            format!("{ifname}{dir}")
        } else {
            format!("{ns}:{ifname}{dir}")
        }
    }
}
