//! The bundle's on-disk format: its own structs, one module per version, converted to and
//! from the in-memory types, so that a change to the tracker or the kernel's wire types
//! never changes what a bundle says, and every bundle ever written still reads.
//!
//! | version | tag | since |
//! | --- | --- | --- |
//! | 1 | `swarmtrace-bundle/1` | the first `capture`: `handshakes.json` was the tracker's `Handshake` serialized as it was (its `reported` flag, the kernel `Hop` with its `_pad`); read only, frozen as it was written |
//! | 2 | `swarmtrace-bundle/2` | the format's own structs (`v2`): hops without padding and with a named direction, drops as recorded, answers tagged by kind; written by `capture` |
//!
//! The tag is the first field of `handshakes.json` and a field of `system.json`; both files
//! of a bundle carry the same one. `report` reads every version (docs/bundle.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::clock::WallClock;
use crate::net::Cidr;
use crate::trace::tracker::Handshake;
use crate::verdict::{self, LocalSubnet, PublishedService};

pub mod v1;
pub mod v2;

/// The format `capture` writes.
pub const FORMAT: &str = Version::CURRENT.tag();

/// A version of the bundle format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub const CURRENT: Version = Version::V2;
    pub const ALL: [Version; 2] = [Version::V1, Version::V2];

    pub const fn tag(self) -> &'static str {
        match self {
            Version::V1 => "swarmtrace-bundle/1",
            Version::V2 => "swarmtrace-bundle/2",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.tag() == tag)
    }
}

/// A format tag that is none of ours, for an error message (the tag is the bundle's word:
/// escaped).
fn unknown(tag: &str) -> String {
    let known: Vec<String> = Version::ALL
        .iter()
        .map(|v| format!("`{}`", v.tag()))
        .collect();
    format!(
        "format `{}`, expected {}",
        crate::escape::terminal(tag),
        known.join(" or ")
    )
}

/// What a bundle holds about the handshakes, in memory: what `capture` recorded, and what
/// `report` reads back to recompute the verdicts with the same code as the live run.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub handshakes: Vec<Handshake>,
    /// (netns inode, ifindex, namespace name, interface name) of the watched interfaces.
    pub hops: Vec<(u32, u32, String, String)>,
    pub forgotten: u64,
    /// Kernel (monotonic) to wall-clock time, for the handshakes' `*_ns` fields.
    pub clock: WallClock,
}

/// `handshakes.json` in the current format.
pub fn handshakes_json(recorded: &Recorded) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&Tagged {
        format: FORMAT,
        body: v2::Handshakes::from(recorded),
    })
}

/// A file's body with its format tag first, where `read_handshakes` looks for it.
#[derive(Serialize)]
pub(crate) struct Tagged<T> {
    pub format: &'static str,
    #[serde(flatten)]
    pub body: T,
}

/// Reads `handshakes.json` of any version: the `format` field first, then the rest as that
/// version's structs (streamed: nothing is buffered to find the version).
pub fn read_handshakes<'de, D: Deserializer<'de>>(d: D) -> Result<(Version, Recorded), D::Error> {
    struct ByFormat;
    impl<'de> Visitor<'de> for ByFormat {
        type Value = (Version, Recorded);

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object whose first field is `format`")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            match map.next_key::<String>()?.as_deref() {
                Some("format") => {}
                _ => return Err(A::Error::custom("no `format` field first")),
            }
            let tag: String = map.next_value()?;
            let version = Version::from_tag(&tag).ok_or_else(|| A::Error::custom(unknown(&tag)))?;
            let rest = MapAccessDeserializer::new(map);
            let recorded = match version {
                Version::V1 => v2::Handshakes::from(v1::Handshakes::deserialize(rest)?).into(),
                Version::V2 => v2::Handshakes::deserialize(rest)?.into(),
            };
            Ok((version, recorded))
        }
    }
    d.deserialize_map(ByFormat)
}

/// What `report` reads of `system.json`, typed (the same fields in every version); the rest
/// of it is only shown, and stays free-form JSON.
#[derive(Debug, Clone)]
pub struct SystemRead {
    pub version: Version,
    pub hostname: Option<String>,
    pub context: verdict::Context,
}

#[derive(Deserialize)]
struct SystemFields {
    format: String,
    #[serde(default)]
    hostname: Option<String>,
    verdict_context: VerdictContext,
}

/// Reads the typed part of `system.json` (already parsed, within the read budget).
pub fn read_system(system: &Value) -> Result<SystemRead, String> {
    let tag = system["format"].as_str().unwrap_or_default();
    let version = Version::from_tag(tag).ok_or_else(|| match &system["format"] {
        Value::String(_) => unknown(tag),
        other => unknown(&other.to_string()),
    })?;
    let fields = SystemFields::deserialize(system).map_err(|e| e.to_string())?;
    debug_assert_eq!(fields.format, tag);
    Ok(SystemRead {
        version,
        hostname: fields.hostname,
        context: fields.verdict_context.into(),
    })
}

/// `system.json`'s `verdict_context`: what the verdicts know besides the handshakes. The
/// same in versions 1 and 2.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerdictContext {
    /// Per namespace name, the watched counters that rose during the run.
    #[serde(default)]
    pub counter_rises: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default)]
    pub subnets: Vec<Subnet>,
    #[serde(default)]
    pub kernel_release: String,
    #[serde(default)]
    pub has_tw_paws_reason: bool,
    /// (namespace, interface) where SYNs were first seen.
    #[serde(default)]
    pub ingress_ifaces: BTreeSet<(String, String)>,
    /// Per namespace name, its conntrack table's entries and limit at the end of the run.
    #[serde(default)]
    pub conntrack_fill: BTreeMap<String, (u64, u64)>,
    /// Docker's view of the ports swarm services publish, as the run asked it (added to
    /// version 2 on 2026-12-04; a bundle without it reads as "Docker not asked").
    #[serde(default)]
    pub published: Vec<Published>,
    /// Answered handshakes the host namespace answered itself, not the mesh (added as
    /// `published`).
    #[serde(default)]
    pub host_answered: Vec<HostAnswered>,
    /// Per reason, drops the kernel counted that no event showed (lost or sampled), which
    /// the verdicts count (added as `published`).
    #[serde(default)]
    pub unseen_drops: BTreeMap<String, u64>,
    /// Where SYNs left inside VXLAN datagrams towards other nodes (added as `published`; cut
    /// to [`verdict::LISTED`] when read).
    #[serde(default)]
    pub overlay_paths: Vec<OverlayPath>,
    /// Per namespace name (the host's, and those with IPVS services), its IPVS services, the
    /// marks of its ports and the DROP/REJECT rules whose counters rose (added as
    /// `published`; cut to [`verdict::NetfilterView::KEPT`] of each when read).
    #[serde(default)]
    pub netfilter: BTreeMap<String, verdict::NetfilterView>,
    /// The UDP port of the overlays' VXLAN the run looked inside (added 2026-12-05; 0 or
    /// absent: the default, 4789, the only one before).
    #[serde(default)]
    pub vxlan_port: u16,
}

/// SYNs left this node inside VXLAN datagrams by `ifname` in `netns`, from `local` to
/// `remote` (the node the routing mesh sent them to).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverlayPath {
    pub local: std::net::IpAddr,
    pub remote: std::net::IpAddr,
    pub netns: String,
    pub ifname: String,
}

/// A port a swarm service publishes, as Docker said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub service: String,
    pub port: u16,
    /// `ingress` (the routing mesh) or `host`.
    pub mode: String,
    #[serde(default)]
    pub running: Option<u64>,
    #[serde(default)]
    pub desired: Option<u64>,
}

/// A handshake (client, ISN) the host answered itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostAnswered {
    pub client: std::net::SocketAddr,
    pub isn: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subnet {
    pub netns: String,
    pub ifname: String,
    /// `ADDRESS/PREFIX`.
    pub net: Cidr,
}

impl From<&verdict::Context> for VerdictContext {
    fn from(c: &verdict::Context) -> Self {
        Self {
            counter_rises: c.counter_rises.clone(),
            subnets: c
                .subnets
                .iter()
                .map(|s| Subnet {
                    netns: s.netns.clone(),
                    ifname: s.ifname.clone(),
                    net: s.net,
                })
                .collect(),
            kernel_release: c.kernel_release.clone(),
            has_tw_paws_reason: c.has_tw_paws_reason,
            ingress_ifaces: c.ingress_ifaces.clone(),
            conntrack_fill: c.conntrack_fill.clone(),
            published: c
                .published
                .iter()
                .map(|p| Published {
                    service: p.service.clone(),
                    port: p.port,
                    mode: p.mode.clone(),
                    running: p.running,
                    desired: p.desired,
                })
                .collect(),
            host_answered: c
                .host_answered
                .iter()
                .map(|&(client, isn)| HostAnswered { client, isn })
                .collect(),
            unseen_drops: c.unseen_drops.clone(),
            overlay_paths: c
                .overlay_paths
                .iter()
                .map(|o| OverlayPath {
                    local: o.local,
                    remote: o.remote,
                    netns: o.netns.clone(),
                    ifname: o.ifname.clone(),
                })
                .collect(),
            netfilter: c.netfilter.clone(),
            vxlan_port: c.vxlan_port,
        }
    }
}

impl From<VerdictContext> for verdict::Context {
    fn from(c: VerdictContext) -> Self {
        Self {
            counter_rises: c.counter_rises,
            subnets: c
                .subnets
                .into_iter()
                .map(|s| LocalSubnet {
                    netns: s.netns,
                    ifname: s.ifname,
                    net: s.net,
                })
                .collect(),
            kernel_release: c.kernel_release,
            has_tw_paws_reason: c.has_tw_paws_reason,
            ingress_ifaces: c.ingress_ifaces,
            conntrack_fill: c.conntrack_fill,
            unseen_drops: c.unseen_drops,
            published: c
                .published
                .into_iter()
                .map(|p| PublishedService {
                    service: p.service,
                    port: p.port,
                    mode: p.mode,
                    running: p.running,
                    desired: p.desired,
                })
                .collect(),
            host_answered: c
                .host_answered
                .into_iter()
                .map(|a| (a.client, a.isn))
                .collect(),
            overlay_paths: c
                .overlay_paths
                .into_iter()
                .take(verdict::LISTED)
                .map(|o| verdict::OverlayPath {
                    local: o.local,
                    remote: o.remote,
                    netns: o.netns,
                    ifname: o.ifname,
                })
                .collect(),
            netfilter: c
                .netfilter
                .into_iter()
                .take(verdict::NetfilterView::KEPT)
                .map(|(ns, v)| (ns, v.bounded()))
                .collect(),
            vxlan_port: c.vxlan_port,
        }
    }
}

/// A kernel handshake table key: the client's ISN and the SYN's TSval. The same in versions
/// 1 and 2.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Key {
    pub isn: u32,
    pub tsval: u32,
}

impl From<&swarmtrace_common::HandshakeKey> for Key {
    fn from(k: &swarmtrace_common::HandshakeKey) -> Self {
        Self {
            isn: k.isn,
            tsval: k.tsval,
        }
    }
}

impl From<Key> for swarmtrace_common::HandshakeKey {
    fn from(k: Key) -> Self {
        Self {
            isn: k.isn,
            tsval: k.tsval,
        }
    }
}

#[cfg(test)]
mod tests;
