//! Where a run's records go as lines on stdout (text or NDJSON) or into a bundle's
//! `events.ndjson`: an [`Observer`] of the engine, and at the end the summary.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::escape;
use crate::present::records::handshake_line;
use crate::present::summary::summary_text;
use crate::trace::drops::Drop;
use crate::trace::observe::{HandshakeRecord, Observer};
use crate::trace::summary::RunSummary;
use crate::verdict::Verdict;

/// Per-packet lines (drops and handshakes) `run` writes per second by default. Nobody reads
/// more on a terminal, and a collector or file gets a sample of every second of a flood
/// (about 300 KB/s of NDJSON, 1 GB an hour at most) instead of every packet: a flood of
/// 500 000 SYNs a second would otherwise cost swarmtrace a core serializing lines and fill
/// the disk it writes to. The summary, the metrics and the live view still count every one.
/// The handshakes of an incident are far fewer: a host answering 1000 new connections a
/// second is busy, and `--max-lines-per-second 0` prints them all.
pub const DEFAULT_LINES_PER_SECOND: u32 = 1000;

/// Lines left out in one second past the cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LeftOut {
    pub drops: u64,
    pub handshakes: u64,
}

/// The `left_out` object of docs/json.md.
#[derive(serde::Serialize)]
#[serde(tag = "type", rename = "left_out")]
struct LeftOutRecord {
    ts: String,
    drops: u64,
    handshakes: u64,
    max_per_second: u32,
}

pub struct Output<'a> {
    writer: &'a mut (dyn Write + Send),
    json: bool,
    /// Print a line per drop and handshake (off under the live view, which owns the screen).
    pub lines: bool,
    /// `,"node":"NAME"}`: what closes every NDJSON line when the lines name their node.
    node_suffix: Option<Vec<u8>>,
    buf: Vec<u8>,
    /// Per-packet lines written per second at most; 0 writes every one.
    pub max_per_second: u32,
    /// When the current second began, and the lines written and left out in it.
    second: Option<Instant>,
    written: u32,
    left_out: LeftOut,
}

impl<'a> Output<'a> {
    /// Writes every line (a bundle's events, the demo); `run` sets a cap.
    pub fn new(writer: &'a mut (dyn Write + Send), json: bool) -> Self {
        Self {
            writer,
            json,
            lines: true,
            node_suffix: None,
            buf: Vec::new(),
            max_per_second: 0,
            second: None,
            written: 0,
            left_out: LeftOut::default(),
        }
    }

    /// Every NDJSON line names `node` (its `"node"` field), so that the streams of several
    /// nodes can be merged and joined (`swarmtrace join`).
    pub fn with_node(mut self, node: &str) -> Self {
        let mut suffix = b",\"node\":".to_vec();
        // A string always serializes.
        serde_json::to_writer(&mut suffix, node).expect("a string serializes");
        suffix.push(b'}');
        self.node_suffix = Some(suffix);
        self
    }

    /// Whether a per-packet line may be written now; counts it as left out otherwise.
    fn admit(&mut self, handshake: bool) -> Result<bool> {
        if self.max_per_second == 0 {
            return Ok(true);
        }
        let now = Instant::now();
        if self
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            self.end_second()?;
            self.second = Some(now);
        }
        if self.written < self.max_per_second {
            self.written += 1;
            return Ok(true);
        }
        if handshake {
            self.left_out.handshakes += 1;
        } else {
            self.left_out.drops += 1;
        }
        Ok(false)
    }

    /// Says how many lines the second that ends left out, if any.
    fn end_second(&mut self) -> Result<()> {
        let left = std::mem::take(&mut self.left_out);
        self.written = 0;
        self.second = None;
        if left == LeftOut::default() {
            return Ok(());
        }
        let unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let ts = crate::clock::rfc3339_micros(unix_ns);
        if self.json {
            return self.ndjson(&LeftOutRecord {
                ts,
                drops: left.drops,
                handshakes: left.handshakes,
                max_per_second: self.max_per_second,
            });
        }
        let time = ts.get(11..26).unwrap_or(&ts);
        writeln!(
            self.writer,
            "{time} LEFT OUT {} drop and {} handshake lines in the last second (at most {} a second; --max-lines-per-second 0 prints all; the summary counts every one)",
            left.drops, left.handshakes, self.max_per_second
        )?;
        Ok(())
    }

    /// A record as an NDJSON line, serialized straight from it.
    fn ndjson(&mut self, rec: &impl serde::Serialize) -> Result<()> {
        let Some(suffix) = &self.node_suffix else {
            serde_json::to_writer(&mut *self.writer, rec)?;
            self.writer.write_all(b"\n")?;
            return Ok(());
        };
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, rec)?;
        // Every record is a JSON object: its closing brace gives way to the node field.
        if self.buf.last() == Some(&b'}') {
            self.buf.pop();
            let empty = self.buf.last() == Some(&b'{');
            self.buf
                .extend_from_slice(if empty { &suffix[1..] } else { &suffix[..] });
        }
        self.buf.push(b'\n');
        self.writer.write_all(&self.buf)?;
        Ok(())
    }

    /// The summary, always written (after the live view has closed).
    pub fn summary(&mut self, sum: &RunSummary, verdicts: &[Verdict]) -> Result<()> {
        self.end_second()?;
        if self.json {
            self.ndjson(sum)?;
        } else {
            write!(self.writer, "{}", summary_text(sum, verdicts))?;
        }
        self.writer.flush()?;
        Ok(())
    }
}

impl Observer for Output<'_> {
    fn on_drop(&mut self, d: &Drop) -> Result<()> {
        if !self.lines || !self.admit(false)? {
            return Ok(());
        }
        if self.json {
            return self.ndjson(&d.record());
        }
        // Names in it are anybody's (a process's, an interface's, a container's).
        writeln!(self.writer, "{}", escape::terminal(&d.to_line()))?;
        Ok(())
    }

    fn on_handshake(&mut self, h: &HandshakeRecord<'_>) -> Result<()> {
        if !self.lines || !self.admit(true)? {
            return Ok(());
        }
        if self.json {
            return self.ndjson(h);
        }
        writeln!(self.writer, "{}", escape::terminal(&handshake_line(h)))?;
        Ok(())
    }

    fn wants_health(&self) -> bool {
        false
    }

    fn on_batch(&mut self) -> Result<()> {
        // The count of a second that ended comes out now, not with the next line.
        if self
            .second
            .is_some_and(|s| s.elapsed() >= Duration::from_secs(1))
        {
            self.end_second()?;
        }
        self.writer.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::event::{Packet, PacketKind};
    use crate::trace::hops::HopNames;
    use crate::trace::tracker::Handshake;
    use serde_json::Value;
    use swarmtrace_common::{HandshakeKey, Hop};

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
            vxlan_from: None,
        }
    }

    /// The NDJSON layout of docs/json.md, byte for byte (field order, nulls, addresses).
    #[test]
    fn ndjson_lines_keep_their_layout() {
        let mut d = drop_();
        let mut buf = Vec::new();
        Output::new(&mut buf, true).on_drop(&d).unwrap();
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
        Output::new(&mut buf, true).on_drop(&d).unwrap();
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
            overflow: Default::default(),
            overlay: None,
        };
        let line = |h: &Handshake| {
            let mut buf = Vec::new();
            let rec = HandshakeRecord::new(h, &hops, Some(hop), 1_700_000_000_000_000_000);
            Output::new(&mut buf, true).on_handshake(&rec).unwrap();
            String::from_utf8(buf).unwrap()
        };
        assert_eq!(
            line(&h),
            r#"{"type":"handshake","ts":"2023-11-14T22:13:20.000000Z","verdict":"dropped","client":"10.0.0.2:40000","service":"10.0.0.1:8080","latency_us":null,"reason":"NO_SOCKET","netns_name":"task","isn":100,"syns":2,"first_hop":"eth0/in","last_hop":"eth0/in","answer_hop":null,"tsvals":[]}"#.to_owned() + "\n"
        );
        h.drops.clear();
        h.keys = vec![
            HandshakeKey { isn: 100, tsval: 7 },
            HandshakeKey { isn: 100, tsval: 9 },
        ];
        h.answer = Some(crate::trace::tracker::Answer::SynAck {
            latency_ns: 1_234_567,
            hop,
        });
        assert_eq!(
            line(&h),
            r#"{"type":"handshake","ts":"2023-11-14T22:13:20.000000Z","verdict":"answered","client":"10.0.0.2:40000","service":"10.0.0.1:8080","latency_us":1234,"reason":null,"netns_name":null,"isn":100,"syns":2,"first_hop":"eth0/in","last_hop":"eth0/in","answer_hop":"eth0/in","tsvals":[7,9]}"#.to_owned() + "\n"
        );
    }

    #[test]
    fn every_ndjson_line_names_its_node_when_asked() {
        let d = drop_();
        let mut buf = Vec::new();
        let mut out = Output::new(&mut buf, true).with_node("node-1 \"a\"\u{1b}");
        out.on_drop(&d).unwrap();
        out.on_drop(&d).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        for l in &lines {
            assert_eq!(l["node"], "node-1 \"a\"\u{1b}");
            assert_eq!(l["type"], "drop");
            assert_eq!(l["isn"], 100);
        }
        // Without a node, the documented layout (no field added).
        let mut buf = Vec::new();
        Output::new(&mut buf, true).on_drop(&d).unwrap();
        assert!(!String::from_utf8(buf).unwrap().contains("\"node\""));
    }

    #[test]
    fn drops_as_text_or_ndjson_and_none_under_the_live_view() {
        let d = drop_();
        for json in [false, true] {
            let mut buf = Vec::new();
            Output::new(&mut buf, json).on_drop(&d).unwrap();
            let want = if json {
                d.to_json().to_string()
            } else {
                d.to_line()
            };
            assert_eq!(String::from_utf8(buf).unwrap(), want + "\n");
            let mut buf = Vec::new();
            let mut out = Output::new(&mut buf, json);
            out.lines = false;
            out.on_drop(&d).unwrap();
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn lines_past_the_cap_are_left_out_and_counted_once_a_second() {
        let d = drop_();
        for json in [true, false] {
            let mut buf = Vec::new();
            let mut out = Output::new(&mut buf, json);
            out.max_per_second = 3;
            for _ in 0..10 {
                out.on_drop(&d).unwrap();
            }
            // Within the second nothing says so yet; the summary closes it.
            out.on_batch().unwrap();
            out.summary(&RunSummary::default(), &[]).unwrap();
            let text = String::from_utf8(buf).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            if json {
                assert_eq!(lines.len(), 5, "{text}");
                let v: Value = serde_json::from_str(lines[3]).unwrap();
                assert_eq!(v["type"], "left_out");
                assert_eq!(
                    (v["drops"].as_u64(), v["handshakes"].as_u64()),
                    (Some(7), Some(0))
                );
                assert_eq!(v["max_per_second"], 3);
            } else {
                assert!(
                    lines[3].contains("LEFT OUT 7 drop and 0 handshake lines"),
                    "{text}"
                );
            }
        }
        // A new second writes again.
        let mut buf = Vec::new();
        let mut out = Output::new(&mut buf, true);
        out.max_per_second = 1;
        out.on_drop(&d).unwrap();
        out.on_drop(&d).unwrap();
        out.second = out.second.map(|s| s - Duration::from_secs(2));
        out.on_batch().unwrap();
        out.on_drop(&d).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let types: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].to_string())
            .collect();
        assert_eq!(types, [r#""drop""#, r#""left_out""#, r#""drop""#]);
    }

    #[test]
    fn text_lines_escape_names_and_ndjson_keeps_them() {
        let mut d = drop_();
        d.netns_name = Some("pid:7(\x1b]0;pwn\x07\u{9b}X\n)".into());
        d.ifname = Some("e\x1bth".into());
        let mut buf = Vec::new();
        Output::new(&mut buf, false).on_drop(&d).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.ends_with("[pid:7(\\x1b]0;pwn\\x07\\u{9b}X\\n) dev e\\x1bth]\n"),
            "{text}"
        );
        let mut buf = Vec::new();
        Output::new(&mut buf, true).on_drop(&d).unwrap();
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["netns_name"], "pid:7(\x1b]0;pwn\x07\u{9b}X\n)");
        assert_eq!(v["ifname"], "e\x1bth");
    }
}
