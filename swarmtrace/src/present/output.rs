//! Where a run's results go: lines on stdout (text or NDJSON), and observers (the live view,
//! the metrics endpoint) that get every drop, every handshake and, each second, the tracer's
//! health.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use crate::escape;
use crate::present::records::{handshake_line, handshake_record};
use crate::trace::drops::Drop;
use crate::trace::hops::HopNames;
use crate::trace::tracker::Handshake;
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
            self.publish(&d.record(), |o, v| o.on_drop(v))?;
        }
        if self.lines && !self.json {
            // Names in it are anybody's (a process's, an interface's, a container's).
            writeln!(self.writer, "{}", escape::terminal(&d.to_line()))?;
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
            let rec = handshake_record(h, hops, last, unix_ns);
            self.publish(&rec, |o, v| o.on_handshake(v))?;
        }
        if self.lines && !self.json {
            let line = handshake_line(h, hops, last, unix_ns);
            writeln!(self.writer, "{}", escape::terminal(&line))?;
        }
        Ok(())
    }

    /// A drop's or a handshake's JSON object to the observers and as an NDJSON line. Without
    /// observers the line is serialized straight from the record: no `Value` is built.
    fn publish(
        &mut self,
        rec: &impl Serialize,
        notify: impl Fn(&mut dyn Observer, &Value),
    ) -> Result<()> {
        let ndjson = self.lines && self.json;
        if self.observers.is_empty() {
            if ndjson {
                serde_json::to_writer(&mut *self.writer, rec)?;
                self.writer.write_all(b"\n")?;
            }
            return Ok(());
        }
        let v = serde_json::to_value(rec)?;
        for o in &mut self.observers {
            notify(o.as_mut(), &v);
        }
        if ndjson {
            writeln!(self.writer, "{v}")?;
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
    use crate::trace::event::{Packet, PacketKind};

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

    /// The NDJSON layout of docs/json.md, byte for byte (field order, nulls, addresses).
    #[test]
    fn ndjson_lines_keep_their_layout() {
        let mut d = drop_();
        let mut buf = Vec::new();
        Output::new(&mut buf, true, vec![]).dropped(&d).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            r#"{"type":"drop","ts":"2023-11-14T22:13:20.000000Z","packet":"SYN","reason":"NO_SOCKET","location":"tcp_v4_rcv+0x1","netns":9,"netns_name":"task","ifname":"eth0","src":"10.0.0.2:40000","dst":"10.0.0.5:80","isn":100,"tsval":5,"client":null,"service":null}"#.to_owned() + "\n"
        );
        d.packet.src = "[2001:db8::2]:40000".parse().unwrap();
        d.packet.dst = "[fd00::5]:80".parse().unwrap();
        d.packet.tsval = None;
        d.netns_name = None;
        d.ifname = None;
        d.joined = Some(crate::trace::event::Joined {
            key: Default::default(),
            client: "[2001:db8::2]:40000".parse().unwrap(),
            service: "[2001:db8::1]:8080".parse().unwrap(),
        });
        let mut buf = Vec::new();
        Output::new(&mut buf, true, vec![]).dropped(&d).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            r#"{"type":"drop","ts":"2023-11-14T22:13:20.000000Z","packet":"SYN","reason":"NO_SOCKET","location":"tcp_v4_rcv+0x1","netns":9,"netns_name":null,"ifname":null,"src":"[2001:db8::2]:40000","dst":"[fd00::5]:80","isn":100,"tsval":null,"client":"[2001:db8::2]:40000","service":"[2001:db8::1]:8080"}"#.to_owned() + "\n"
        );

        let hop = Hop {
            netns: 7,
            ifindex: 3,
            dir: 1,
            _pad: [0; 3],
        };
        let hops = HopNames::from_entries(&[(7, 3, "host".into(), "eth0".into())]);
        let d = drop_();
        let mut h = Handshake {
            client: "10.0.0.2:40000".parse().unwrap(),
            service: "10.0.0.1:8080".parse().unwrap(),
            isn: 100,
            first_ns: 10,
            syns: 2,
            keys: vec![],
            first_hop: Some(hop),
            answer: None,
            drops: vec![crate::trace::tracker::DropNote::from(&d)],
            reported: false,
        };
        let line = |h: &Handshake| {
            let mut buf = Vec::new();
            Output::new(&mut buf, true, vec![])
                .handshake(h, &hops, Some(hop), 1_700_000_000_000_000_000)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(
            line(&h),
            r#"{"type":"handshake","ts":"2023-11-14T22:13:20.000000Z","verdict":"dropped","client":"10.0.0.2:40000","service":"10.0.0.1:8080","latency_us":null,"reason":"NO_SOCKET","netns_name":"task","isn":100,"syns":2,"first_hop":"eth0/in","last_hop":"eth0/in","answer_hop":null}"#.to_owned() + "\n"
        );
        h.drops.clear();
        h.answer = Some(crate::trace::tracker::Answer::SynAck {
            latency_ns: 1_234_567,
            hop,
        });
        assert_eq!(
            line(&h),
            r#"{"type":"handshake","ts":"2023-11-14T22:13:20.000000Z","verdict":"answered","client":"10.0.0.2:40000","service":"10.0.0.1:8080","latency_us":1234,"reason":null,"netns_name":null,"isn":100,"syns":2,"first_hop":"eth0/in","last_hop":"eth0/in","answer_hop":"eth0/in"}"#.to_owned() + "\n"
        );
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

    #[test]
    fn text_lines_escape_names_and_ndjson_keeps_them() {
        let mut d = drop_();
        d.netns_name = Some("pid:7(\x1b]0;pwn\x07\u{9b}X\n)".into());
        d.ifname = Some("e\x1bth".into());
        let mut buf = Vec::new();
        Output::new(&mut buf, false, vec![]).dropped(&d).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.ends_with("[pid:7(\\x1b]0;pwn\\x07\\u{9b}X\\n) dev e\\x1bth]\n"),
            "{text}"
        );
        let mut buf = Vec::new();
        Output::new(&mut buf, true, vec![]).dropped(&d).unwrap();
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["netns_name"], "pid:7(\x1b]0;pwn\x07\u{9b}X\n)");
        assert_eq!(v["ifname"], "e\x1bth");
    }
}
