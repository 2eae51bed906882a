//! The files of `deploy/` that users run as they are.

/// The Swarm stack's service logs through Docker's json-file driver; under a flood `run --json`
/// writes a line per dropped packet, so the log must rotate or the node's disk fills.
#[test]
fn the_stack_rotates_its_logs() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/swarmtrace-stack.yml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let service = text
        .split("\n  swarmtrace:\n")
        .nth(1)
        .expect("the swarmtrace service");
    let logging = service
        .split("\n    logging:\n")
        .nth(1)
        .expect("the service has a logging section");
    let section: Vec<&str> = logging
        .lines()
        .take_while(|l| l.starts_with("      "))
        .collect();
    let value = |key: &str| {
        section
            .iter()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_owned())
    };
    assert_eq!(
        value("driver:").as_deref(),
        Some("json-file"),
        "{section:?}"
    );
    let size = value("max-size:").expect("max-size");
    let mb: u64 = size.trim_end_matches('m').parse().expect("max-size in MB");
    assert!(size.ends_with('m') && mb <= 100, "max-size {size}");
    let files: u64 = value("max-file:").expect("max-file").parse().unwrap();
    assert!((1..=5).contains(&files), "max-file {files}");
}
