//! The end-of-run summary as a type: the `summary` object of docs/json.md, written by the
//! run and read back from bundles by `report`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An address (or IP) and how many drops named it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AddrCount {
    pub addr: String,
    pub count: u64,
}

/// A drop reason in one kernel function, and how many drops it had there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LocationCount {
    pub reason: String,
    pub function: String,
    pub count: u64,
}

/// Latency percentiles of the answered handshakes, microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

/// The handshakes by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HandshakeTotals {
    pub total: u64,
    pub answered: u64,
    pub dropped: u64,
    pub reset: u64,
    pub unanswered: u64,
    /// Dropped from memory past `tracker::MAX_HANDSHAKES`.
    pub forgotten: u64,
    pub latency_us: Latency,
}

/// The kernel programs sampled their detail events during the run (overload): counts stay
/// exact, event-made lists and handshakes are of the sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampled {
    /// 1 handshake in this many kept its events.
    pub one_in: u32,
    /// When a CPU first sampled.
    pub since: String,
    /// 100 ms windows sampled, summed over CPUs.
    pub windows: u64,
    /// SYN, SYN-ACK and RST events not sent; drop events not sent.
    pub sighting_events_not_sent: u64,
    pub drop_events_not_sent: u64,
}

/// The `summary` object of docs/json.md, the fields in the order they were always written.
/// Read back from bundles too: a field an older bundle lacks is its default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "summary", default)]
pub struct RunSummary {
    pub duration_s: f64,
    /// Exact, from the kernel's counters.
    pub drops: u64,
    pub drops_by_reason: BTreeMap<String, u64>,
    pub lost_events: u64,
    pub unreadable_packets: u64,
    /// Drop events received.
    pub events: u64,
    pub decode_errors: u64,
    pub top_sources: Vec<AddrCount>,
    pub top_destinations: Vec<AddrCount>,
    pub top_locations: Vec<LocationCount>,
    pub handshakes: HandshakeTotals,
    /// The verdicts' objects (docs/json.md), filled in by the command that computed them:
    /// the engine sits below `verdict`. Only ever written out; renderers take the typed
    /// verdicts beside the summary.
    pub verdicts: Vec<serde_json::Value>,
    pub watched: Vec<String>,
    pub kernel_lacks: Vec<String>,
    /// The program on kfree_skb: `raw_tracepoint`, `tracepoint` or `tracepoint (general
    /// path)`.
    pub kfree_skb_hook: String,
    /// Null unless the kernel sampled (overload).
    pub sampled: Option<Sampled>,
}

impl RunSummary {
    /// A summary line read back (from a bundle's `events.ndjson`).
    pub fn from_json(v: &serde_json::Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(v)
    }
}
