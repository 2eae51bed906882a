//! Every bundle format version stays readable: `report` renders the checked-in bundle of
//! each version (tests/fixtures/bundles/, one `vN-*.tar.gz` per version, kept forever) in
//! every output format, with the verdicts the capture recorded live. No root needed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use swarmtrace::evidence::format::Version;
use swarmtrace_tests::binary;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/bundles")
}

/// The checked-in bundles, by name.
fn bundles() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    v.sort();
    v
}

/// One file of a bundle `.tar.gz`.
fn member(bundle: &Path, name: &str) -> String {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(bundle).unwrap());
    let mut ar = tar::Archive::new(gz);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().file_name().and_then(|n| n.to_str()) == Some(name) {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return s;
        }
    }
    panic!("{}: no {name}", bundle.display());
}

fn report(args: &[&str]) -> String {
    let out = Command::new(binary())
        .arg("report")
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "report {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// What a verdict says, without its prose (which may be reworded).
fn verdicts(summary: &Value) -> Vec<Value> {
    summary["verdicts"]
        .as_array()
        .unwrap_or_else(|| panic!("no verdicts: {summary}"))
        .iter()
        .map(|v| {
            serde_json::json!({
                "cause": v["cause"],
                "count": v["count"],
                "clients": v["clients"],
                "services": v["services"],
                "evidence": v["evidence"],
            })
        })
        .collect()
}

#[test]
fn every_format_version_has_a_checked_in_bundle() {
    let names: Vec<String> = bundles()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for (i, version) in Version::ALL.iter().enumerate() {
        let prefix = format!("v{}-", i + 1);
        assert!(
            names.iter().any(|n| n.starts_with(&prefix)),
            "no {prefix}*.tar.gz for {} in {}: add one (see its README)",
            version.tag(),
            fixtures().display()
        );
        let bundle = fixtures().join(names.iter().find(|n| n.starts_with(&prefix)).unwrap());
        let hs: Value = serde_json::from_str(&member(&bundle, "handshakes.json")).unwrap();
        assert_eq!(hs["format"], version.tag(), "{}", bundle.display());
    }
}

#[test]
fn report_renders_every_version_with_the_recorded_verdicts() {
    for bundle in bundles() {
        let path = bundle.to_str().unwrap();
        let events = member(&bundle, "events.ndjson");
        let live: Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
        assert_eq!(live["type"], "summary");
        let want = verdicts(&live);
        assert!(!want.is_empty(), "{path}: the fixture recorded no verdict");

        let json: Value = serde_json::from_str(&report(&["--format", "json", path])).unwrap();
        // What the recording run wrote must come back the same; fields a later version adds
        // to the evidence (the JSON contract only adds) are not in the recording.
        let mut got = verdicts(&json);
        for (g, w) in got.iter_mut().zip(&want) {
            if let (Some(g), Some(w)) = (g["evidence"].as_object_mut(), w["evidence"].as_object()) {
                g.retain(|k, _| w.contains_key(k));
            }
        }
        assert_eq!(got, want, "{path}");
        assert_eq!(json["handshakes"], live["handshakes"], "{path}");
        assert_eq!(json["bundle"], path);

        let text = report(&["--format", "text", path]);
        let md = report(&["--format", "markdown", path]);
        for v in &want {
            let cause = v["cause"].as_str().unwrap();
            assert!(text.contains(&format!("[{cause}]")), "{path}: {text}");
            assert!(md.contains(&format!("`{cause}`")), "{path}: {md}");
            for c in v["clients"].as_array().unwrap() {
                let c = c.as_str().unwrap();
                assert!(text.contains(c) && md.contains(c), "{path}: {c}: {text}");
            }
        }
        let system: Value = serde_json::from_str(&member(&bundle, "system.json")).unwrap();
        let host = system["hostname"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("bundle {path}: {host} (Linux ")),
            "{text}"
        );
    }
}

#[test]
fn bundles_of_different_versions_are_joined() {
    let all: Vec<String> = bundles()
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["--format", "json"];
    args.extend(all.iter().map(String::as_str));
    let out = report(&args);
    let join: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(join["type"], "join");
    assert_eq!(join["bundles"].as_array().unwrap().len(), all.len());
}
