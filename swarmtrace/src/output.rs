//! Where a run's results go: lines on stdout (text or NDJSON), and observers (the live view,
//! the metrics endpoint) that get every drop, every handshake and, each second, the tracer's
//! health.

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use crate::drops::Drop;
use crate::run::{handshake_json, handshake_line, HopNames};
use crate::tracker::Handshake;
use swarmtrace_common::Hop;

/// The tracer's state, once a second.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    pub elapsed_s: f64,
    /// Exact kernel totals.
    pub drops: u64,
    pub lost_events: u64,
    pub syns: u64,
    pub answered: u64,
    pub resets: u64,
    /// Watched interfaces and whether the classifiers are attached there now.
    pub watched: Vec<(String, bool)>,
    /// Handshakes held in memory.
    pub tracked: usize,
}

/// Gets a run's results as they happen. Objects are those of docs/json.md.
pub trait Observer: Send {
    fn on_drop(&mut self, _drop: &Value) {}
    fn on_handshake(&mut self, _handshake: &Value) {}
    fn on_health(&mut self, _health: &Health) {}
    fn on_summary(&mut self, _summary: &Value) {}
}

pub struct Output<'a> {
    writer: &'a mut (dyn Write + Send),
    json: bool,
    /// Print a line per drop and handshake (off under the live view, which owns the screen).
    pub lines: bool,
    observers: Vec<Box<dyn Observer>>,
}

impl<'a> Output<'a> {
    pub fn new(
        writer: &'a mut (dyn Write + Send),
        json: bool,
        observers: Vec<Box<dyn Observer>>,
    ) -> Self {
        Self {
            writer,
            json,
            lines: true,
            observers,
        }
    }

    pub fn dropped(&mut self, d: &Drop) -> Result<()> {
        if self.wants_json() {
            let v = d.to_json();
            for o in &mut self.observers {
                o.on_drop(&v);
            }
            if self.lines && self.json {
                writeln!(self.writer, "{v}")?;
            }
        }
        if self.lines && !self.json {
            writeln!(self.writer, "{}", d.to_line())?;
        }
        Ok(())
    }

    pub fn handshake(
        &mut self,
        h: &Handshake,
        hops: &HopNames,
        last: Option<Hop>,
        unix_ns: i128,
    ) -> Result<()> {
        if self.wants_json() {
            let v = handshake_json(h, hops, last, unix_ns);
            for o in &mut self.observers {
                o.on_handshake(&v);
            }
            if self.lines && self.json {
                writeln!(self.writer, "{v}")?;
            }
        }
        if self.lines && !self.json {
            writeln!(self.writer, "{}", handshake_line(h, hops, last, unix_ns))?;
        }
        Ok(())
    }

    /// Whether a drop's or a handshake's JSON object has a reader: NDJSON lines or an
    /// observer. Text lines alone do not need it (made per event, it is not free).
    fn wants_json(&self) -> bool {
        (self.lines && self.json) || !self.observers.is_empty()
    }

    pub fn health(&mut self, h: &Health) {
        for o in &mut self.observers {
            o.on_health(h);
        }
    }

    /// The summary, always written (after the live view has closed).
    pub fn summary(&mut self, sum: &Value, text: impl FnOnce() -> String) -> Result<()> {
        for o in &mut self.observers {
            o.on_summary(sum);
        }
        if self.json {
            writeln!(self.writer, "{sum}")?;
        } else {
            write!(self.writer, "{}", text())?;
        }
        self.writer.flush()?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush()?;
        Ok(())
    }

    pub fn has_observers(&self) -> bool {
        !self.observers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Packet, PacketKind};

    fn drop_() -> Drop {
        Drop {
            ts_ns: 10,
            unix_ns: 1_700_000_000_000_000_000,
            packet: Packet {
                kind: PacketKind::Syn,
                src: "10.0.0.2:40000".parse().unwrap(),
                dst: "10.0.0.5:80".parse().unwrap(),
                seq: 100,
                ack: 0,
                tsval: Some(5),
                tsecr: None,
                flags: 2,
            },
            reason: "NO_SOCKET".into(),
            location: "tcp_v4_rcv+0x1".into(),
            netns: 9,
            netns_name: Some("task".into()),
            ifname: Some("eth0".into()),
            joined: None,
        }
    }

    struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl Observer for Count {
        fn on_drop(&mut self, drop: &Value) {
            assert_eq!(drop["reason"], "NO_SOCKET");
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn drops_as_text_ndjson_and_to_observers() {
        let d = drop_();
        for json in [false, true] {
            let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for observers in [
                vec![],
                vec![Box::new(Count(seen.clone())) as Box<dyn Observer>],
            ] {
                let mut buf = Vec::new();
                let mut out = Output::new(&mut buf, json, observers);
                out.dropped(&d).unwrap();
                let want = if json {
                    d.to_json().to_string()
                } else {
                    d.to_line()
                };
                assert_eq!(String::from_utf8(buf).unwrap(), want + "\n");
            }
            assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 1);
        }
    }
}
