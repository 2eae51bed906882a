//! The command line. Doc comments are the help text.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::net::{parse_cidr, Cidr};
use crate::trace::tracer::{IfaceSpec, TcMode};

#[derive(Debug, Parser)]
#[command(
    name = "swarmtrace",
    version,
    about = "Why does the published port time out? swarmtrace follows TCP handshakes through NAT and network namespaces and names what the kernel did with them.",
    after_help = "During an incident:\n  sudo swarmtrace doctor --client-cidr 192.168.0.0/16   static checks first, nothing loaded\n  sudo swarmtrace run --port 8080                       watch handshakes to the published port\n  sudo swarmtrace capture --duration 60s -o /var/tmp/incident.tar.gz   evidence for the postmortem\n  swarmtrace report /var/tmp/incident.tar.gz            later, anywhere, no root\n  sudo swarmtrace demo                                  see it explain the PAWS incident in a lab\n\nExit status: 0 success; 1 error, or (doctor) a serious finding, or (demo) an unexpected verdict; 2 usage error."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Follow TCP handshakes and the kernel's drops live, until Ctrl-C or --duration; then
    /// print the verdicts.
    #[command(
        after_help = "Examples:\n  sudo swarmtrace run --port 8080\n  sudo swarmtrace run --client 192.168.1.0/24 --duration 60s\n  sudo swarmtrace run --iface eth0 --iface ingress_sbox:eth1 --json | jq 'select(.type==\"handshake\")'"
    )]
    Run(RunArgs),
    /// Build a Swarm routing mesh in network namespaces, reproduce an incident, trace it and
    /// print the verdicts; everything is removed afterwards.
    Demo(DemoArgs),
    /// Record a postmortem bundle: events, the dropped and unanswered packets (pcapng),
    /// counters before and after, sysctls, routes, and the report.
    #[command(
        after_help = "Examples:\n  sudo swarmtrace capture --duration 60s -o /var/tmp/incident.tar.gz\n  sudo swarmtrace capture --port 8080 -o /var/tmp/incident-dir"
    )]
    Capture(CaptureArgs),
    /// Render capture bundles offline (no root needed), with the same verdicts as the live run.
    /// Given bundles from several nodes, also joins each handshake across them by (ISN, TSval)
    /// and shows its path node by node.
    #[command(
        after_help = "Examples:\n  swarmtrace report incident.tar.gz\n  swarmtrace report --format markdown incident.tar.gz > postmortem.md\n  swarmtrace report node1.tar.gz node2.tar.gz node3.tar.gz   # follow handshakes across nodes"
    )]
    Report(ReportArgs),
    /// Join several nodes' `run --json` streams live by the kernel keys of each SYN (ISN,
    /// TSval): the real client from the node where the SYN entered the mesh, the drop from the
    /// node where it happened, and each node's verdicts charged to the real clients.
    #[command(
        after_help = "Examples:\n  docker service logs --raw -f swarmtrace_swarmtrace | swarmtrace join -\n  swarmtrace join node1.ndjson node2.ndjson --json"
    )]
    Join(JoinArgs),
    /// Static checks, nothing loaded into the kernel: sysctls (tcp_tw_recycle, timestamps,
    /// rp_filter, ...), subnet overlaps between Docker's networks, the host's routes and your
    /// clients, Docker's ingress rules, conntrack fill, and what `run` can see on this kernel.
    /// Exits 1 when a finding is serious.
    #[command(
        after_help = "Examples:\n  sudo swarmtrace doctor\n  sudo swarmtrace doctor --client-cidr 192.168.0.0/16 --client-cidr 10.20.0.0/16 --json"
    )]
    Doctor(DoctorArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(
        after_help = "Example:\n  swarmtrace completions bash > /etc/bash_completion.d/swarmtrace"
    )]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout.
    #[command(
        after_help = "Example:\n  swarmtrace man > /usr/local/share/man/man1/swarmtrace.1 && man swarmtrace"
    )]
    Man,
}

#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    /// Where to write: a new (or empty) directory, or a file ending in .tar.gz.
    #[arg(short, long)]
    pub output: std::path::PathBuf,
    /// How long to record (Ctrl-C ends it sooner).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Bundle directories or .tar.gz files written by `swarmtrace capture`.
    #[arg(required = true)]
    pub bundles: Vec<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Args)]
pub struct JoinArgs {
    /// NDJSON streams of `swarmtrace run --json` (files, or - for standard input: one merged
    /// stream of every node, e.g. `docker service logs --raw -f SERVICE`). Default: -.
    pub inputs: Vec<String>,
    /// One JSON object per line (`joined`, `verdict`, `join-summary`; docs/json.md).
    #[arg(long)]
    pub json: bool,
    /// Handshake keys held at once; the oldest are forgotten first (counted).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_handshakes: u32,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// paws (the motivating incident), healthy, drop-rule, no-listener, listen-queue-full,
    /// rp-filter, subnet-overlap, bad-checksum, stale-backend, or all.
    #[arg(default_value = "paws")]
    pub scenario: String,
    /// NDJSON output, as `run --json`.
    #[arg(long)]
    pub json: bool,
}

/// What to trace: shared by `run` and `capture`.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Only handshakes to or from this TCP port (the published port, or the task's port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Only handshakes whose source or destination is in this CIDR (e.g. 192.168.1.0/24, fd00::/64).
    #[arg(long, value_parser = parse_cidr)]
    pub client: Option<Cidr>,
    /// Interfaces to watch for handshakes: IFACE (in the host's namespace: PID 1's, also when
    /// swarmtrace runs under `ip netns exec` or in a container), or NETNS:IFACE for an interface
    /// in another namespace (e.g. ingress_sbox:eth1). Repeatable. Default: docker_gwbridge and
    /// the default-route interface of the host's namespace, when present.
    #[arg(long = "iface", value_name = "[NETNS:]IFACE")]
    pub iface: Vec<IfaceSpec>,
    /// A handshake with neither answer nor drop after this long is reported unanswered.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub syn_timeout: Duration,
    /// Entries of the kernel's handshake table, rounded up to a power of two (a new SYN takes
    /// the slot its hash names, forgetting the SYN that held it).
    #[arg(long, default_value_t = swarmtrace_common::HANDSHAKE_TABLE, value_parser = clap::value_parser!(u32).range(64..=16_777_216))]
    pub table_size: u32,
    /// The node's name in every NDJSON line (`"node"`), for joining several nodes' streams
    /// (`swarmtrace join`). Default: $SWARMTRACE_NODE, else the host name.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Overload: above this many detail events (handshake packets, drops) per second on a
    /// CPU, the kernel sends the events of 1 handshake in 16 only, and says so; its counts
    /// stay exact. 0: never sample.
    #[arg(long, default_value_t = swarmtrace_common::OVERLOAD_RATE, value_name = "EVENTS_PER_S")]
    pub overload_rate: u32,
    /// The UDP port of the overlays' VXLAN (the swarm's data-path port). Default: what Docker
    /// says on a manager, else the port of this node's overlay VXLAN device, else 4789.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub vxlan_port: Option<u16>,
    /// How classifiers attach: auto (TCX on 6.6+, else netlink filters on clsact), tcx, netlink.
    #[arg(long, value_enum, default_value_t = TcMode::Auto, hide = true)]
    pub tc_attach: TcMode,
}

impl TraceArgs {
    /// Defaults, watching `iface`.
    pub fn watching(iface: Vec<IfaceSpec>) -> Self {
        Self {
            port: None,
            client: None,
            iface,
            syn_timeout: Duration::from_secs(1),
            table_size: swarmtrace_common::HANDSHAKE_TABLE,
            node: None,
            overload_rate: swarmtrace_common::OVERLOAD_RATE,
            vxlan_port: None,
            tc_attach: TcMode::Auto,
        }
    }

    /// The node's name: `--node`, else $SWARMTRACE_NODE, else the host name (UTS namespace);
    /// at most 255 bytes (a host name's limit), so a hostile variable cannot make every line
    /// huge.
    pub fn node_name(&self) -> String {
        let name = self
            .node
            .clone()
            .or_else(|| std::env::var("SWARMTRACE_NODE").ok())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_default()
            });
        let mut end = name.len().min(255);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name[..end].to_owned()
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Stop after this long (e.g. 30s, 5m, 500ms); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// One JSON object per line (NDJSON, see docs/json.md) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Drop and handshake lines written per second at most (a flood is sampled, and a line
    /// says how many were left out each second); 0 writes every one. The summary, metrics
    /// and live view count all of them.
    #[arg(long, value_name = "N", default_value_t = crate::present::output::DEFAULT_LINES_PER_SECOND)]
    pub max_lines_per_second: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics while tracing: PORT or :PORT listens
    /// on 127.0.0.1; IP:PORT as given (0.0.0.0:9464, [::]:9464 for every interface).
    #[arg(long, value_name = "ADDR", value_parser = crate::present::metrics::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Client networks to check for overlaps with Docker's and the host's subnets (repeatable).
    #[arg(long = "client-cidr", value_parser = parse_cidr)]
    pub client_cidr: Vec<Cidr>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 30s, 5m, 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent_and_documents_itself() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let mut man = Vec::new();
        clap_mangen::Man::new(Cli::command())
            .render(&mut man)
            .unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(man.contains("Exit status"), "{man}");
        let mut bash = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "swarmtrace",
            &mut bash,
        );
        let bash = String::from_utf8(bash).unwrap();
        for sub in ["run", "capture", "report", "demo"] {
            assert!(bash.contains(sub), "{sub} missing from completions");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
