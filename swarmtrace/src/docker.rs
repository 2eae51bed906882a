//! The Docker Engine API over its unix socket (HTTP/1.0, no client library): what `doctor`
//! checks (networks, swarm state, published ports), and the names of Docker's network namespaces (containers, services, tasks,
//! networks) for everything swarmtrace prints.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::net::{parse_cidr, Cidr};

/// `DOCKER_HOST=unix://...` or /var/run/docker.sock.
pub fn socket_path() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// The `message` of a Docker API error body.
pub fn api_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().chars().take(200).collect())
}

/// Time one request may take in all: connecting, sending, and reading the whole answer. A
/// hung dockerd (exactly what an incident brings) costs at most this per request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// The largest answer read; a larger one is an error (a container list of a busy host is a
/// few hundred KiB).
pub const MAX_RESPONSE: usize = 8 << 20;

/// `GET path` on the Docker Engine API socket, HTTP/1.0: (status, body), within
/// [`REQUEST_DEADLINE`] and [`MAX_RESPONSE`].
pub fn docker_get(sock: &Path, path: &str) -> Result<(u16, String), String> {
    get_within(sock, path, REQUEST_DEADLINE, MAX_RESPONSE)
}

/// [`docker_get`] with its limits given: nothing here blocks past `deadline` (the socket is
/// non-blocking and every wait is a `poll` bounded by the time left).
pub fn get_within(
    sock: &Path,
    path: &str,
    deadline: Duration,
    max_response: usize,
) -> Result<(u16, String), String> {
    use std::os::fd::AsRawFd;
    let until = Instant::now() + deadline;
    let late = || format!("GET {path}: Docker did not answer within {deadline:?}");
    let s = connect(sock, until).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => late(),
        _ => format!("cannot connect to {}: {e}", sock.display()),
    })?;
    let fd = s.as_raw_fd();
    let mut request =
        format!("GET {path} HTTP/1.0\r\nHost: docker\r\nAccept: application/json\r\n\r\n")
            .into_bytes();
    let mut sent = 0;
    while sent < request.len() {
        if !wait(fd, libc::POLLOUT, until) {
            return Err(late());
        }
        match (&s).write(&request[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("GET {path}: {e}")),
        }
    }
    request.clear();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if !wait(fd, libc::POLLIN, until) {
            return Err(late());
        }
        match (&s).read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if raw.len() + n > max_response {
                    return Err(format!(
                        "GET {path}: Docker's answer is larger than {} MiB; not read",
                        max_response >> 20
                    ));
                }
                raw.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("GET {path}: {e}")),
        }
    }
    parse_http(&raw)
}

/// A non-blocking connection to the unix socket `sock`, made before `until`. A listener whose
/// backlog is full refuses a non-blocking connect (EAGAIN): try again until the deadline.
fn connect(sock: &Path, until: Instant) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let addr = SockAddr::unix(sock)?;
    loop {
        let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)?;
        s.set_nonblocking(true)?;
        match s.connect(&addr) {
            Ok(()) => return Ok(s),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                use std::os::fd::AsRawFd;
                if !wait(s.as_raw_fd(), libc::POLLOUT, until) {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                return match s.take_error()? {
                    None => Ok(s),
                    Some(e) => Err(e),
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= until {
                    return Err(std::io::ErrorKind::TimedOut.into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until `fd` is ready for `events` (or has an error or hang-up, which the next read or
/// write reports); false when `until` passed first.
fn wait(fd: std::os::fd::RawFd, events: libc::c_short, until: Instant) -> bool {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the duration of the call.
        match unsafe { libc::poll(&mut p, 1, ms) } {
            n if n > 0 => return true,
            0 => {}
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return true,
        }
    }
}

/// Splits an HTTP/1.x response into status and body (de-chunked when needed).
pub fn parse_http(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "truncated HTTP response".to_owned())?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", head.lines().next()))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Ok((status, body.to_owned()));
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| "bad chunk size".to_owned())?;
        if n == 0 {
            break;
        }
        let chunk = after.get(..n).ok_or_else(|| "truncated chunk".to_owned())?;
        out.push_str(chunk);
        rest = after.get(n..).unwrap_or("").trim_start_matches("\r\n");
    }
    Ok((status, out))
}

/// Containers inspected for one round of names; past it, the others keep their ids.
pub const MAX_CONTAINERS: usize = 1_000;
/// Time one round of names may take in all (each request has its own deadline too).
pub const NAMES_DEADLINE: Duration = Duration::from_secs(10);

/// Requests that share a deadline and stop at the first failure of the transport: a dockerd
/// that did not answer once is not asked a hundred more times.
pub struct Session<'a> {
    sock: &'a Path,
    until: Instant,
    broken: Option<String>,
}

impl<'a> Session<'a> {
    pub fn new(sock: &'a Path, budget: Duration) -> Self {
        Self {
            sock,
            until: Instant::now() + budget,
            broken: None,
        }
    }

    /// The first failure to reach Docker, if any (an HTTP error status is not one).
    pub fn failure(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    pub fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let left = self.until.saturating_duration_since(Instant::now());
        let r = if left.is_zero() {
            Err(format!("GET {path}: out of time for Docker's names"))
        } else {
            get_within(self.sock, path, left.min(REQUEST_DEADLINE), MAX_RESPONSE)
        };
        if let Err(e) = &r {
            self.broken = Some(e.clone());
        }
        r
    }

    /// The JSON body of a 200 answer.
    fn json(&mut self, path: &str) -> Option<Value> {
        match self.get(path) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }
}

/// Names for the files under /var/run/docker/netns: a container's sandbox (its key is the
/// file name) becomes `container NAME` with its swarm service and task when it has them; an
/// overlay's `1-<id>` and a load balancer's `lb_<id>` get the network's name. An error when
/// Docker could not be reached or did not answer in time (the caller backs off).
pub fn netns_names(sock: &Path) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut docker = Session::new(sock, NAMES_DEADLINE);
    if let Some(containers) = docker.json("/containers/json") {
        for c in containers
            .as_array()
            .into_iter()
            .flatten()
            .take(MAX_CONTAINERS)
        {
            let Some(id) = c["Id"].as_str() else { continue };
            let Some(detail) = docker.json(&format!("/containers/{id}/json")) else {
                continue;
            };
            if let Some(name) = sandbox_name(&detail) {
                let key = detail["NetworkSettings"]["SandboxKey"]
                    .as_str()
                    .unwrap_or("");
                if let Some(file) = Path::new(key).file_name().and_then(|f| f.to_str()) {
                    out.insert(file.to_owned(), name);
                }
            }
        }
    }
    if let Some(networks) = docker.json("/networks") {
        for n in networks.as_array().into_iter().flatten() {
            let (Some(id), Some(name)) = (n["Id"].as_str(), n["Name"].as_str()) else {
                continue;
            };
            let short = id.get(..10).unwrap_or(id);
            out.insert(format!("1-{short}"), format!("network {name}"));
            out.insert(
                format!("lb_{}", id.get(..9).unwrap_or(id)),
                format!("lb {name}"),
            );
        }
    }
    match docker.failure() {
        Some(e) => Err(e.to_owned()),
        None => Ok(out),
    }
}

/// What a postmortem bundle keeps of Docker: its networks (with subnets), swarm services
/// (with published ports) and containers (with their sandbox, i.e. namespace), as the Engine
/// API returns them; None without a socket. A hung dockerd costs one request deadline.
pub fn facts(sock: &Path) -> Option<Value> {
    if !sock.exists() {
        return None;
    }
    let mut docker = Session::new(sock, 4 * REQUEST_DEADLINE);
    let mut get = |path: &str| -> Value {
        match docker.get(path) {
            Ok((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
            Ok((status, body)) => {
                serde_json::json!({"error": status, "message": api_message(&body)})
            }
            Err(e) => serde_json::json!({"error": e}),
        }
    };
    Some(serde_json::json!({
        "version": get("/version"),
        "networks": get("/networks"),
        "services": get("/services"),
        "containers": get("/containers/json"),
    }))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerNetwork {
    pub name: String,
    pub driver: String,
    /// `local` (bridges) or `swarm` (overlays, ingress).
    pub scope: String,
    pub ingress: bool,
    pub subnets: Vec<Cidr>,
    /// The bridge device of a `bridge` network (Options com.docker.network.bridge.name).
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub service: String,
    pub port: u16,
    pub target: u16,
    pub protocol: String,
    /// `ingress` (the routing mesh) or `host`.
    pub mode: String,
    /// The service's running and desired tasks (`GET /services?status=true`, API 1.41+).
    pub running: Option<u64>,
    pub desired: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DockerInfo {
    pub networks: Vec<DockerNetwork>,
    /// Swarm.LocalNodeState: `active`, `inactive`, `pending`, ...
    pub swarm: Option<String>,
    /// Swarm.NodeAddr: the address this node advertises to the others (its overlays'
    /// datagrams leave from it).
    pub node_addr: Option<std::net::IpAddr>,
    /// Ports published by swarm services (only managers can list services).
    pub published: Result<Vec<PublishedPort>, String>,
}

#[derive(Debug, Clone)]
pub enum DockerApi {
    /// No socket.
    Absent,
    /// A socket that could not be used (permissions, daemon down, bad answer).
    Failed(String),
    Available(DockerInfo),
}

/// What doctor checks of Docker: its networks, whether this node is in a swarm, and the ports
/// swarm services publish (only a manager can list them). Absent without a socket.
pub fn overview(sock: &Path) -> DockerApi {
    if !sock.exists() {
        return DockerApi::Absent;
    }
    let networks = match docker_get(sock, "/networks") {
        Ok(answer) => match json_body("/networks", answer) {
            Ok(v) => parse_networks(&v),
            Err(e) => return DockerApi::Failed(e),
        },
        Err(e) => return DockerApi::Failed(format!("{}: {e}", sock.display())),
    };
    let info = docker_get(sock, "/info")
        .ok()
        .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok());
    let swarm = info
        .as_ref()
        .and_then(|v| v["Swarm"]["LocalNodeState"].as_str().map(str::to_owned));
    let node_addr = info
        .as_ref()
        .and_then(|v| v["Swarm"]["NodeAddr"].as_str()?.parse().ok());
    let published = if swarm.as_deref() == Some("active") {
        docker_get(sock, "/services")
            .and_then(|answer| json_body("/services", answer))
            .map(|v| parse_services(&v))
    } else {
        Ok(Vec::new())
    };
    DockerApi::Available(DockerInfo {
        networks,
        swarm,
        node_addr,
        published,
    })
}

/// The JSON body of Docker's answer to `GET what`: an error, with Docker's message, for a
/// status other than 200, and for a body that is not JSON.
fn json_body(what: &str, (status, body): (u16, String)) -> Result<Value, String> {
    if status != 200 {
        return Err(format!("GET {what}: HTTP {status}: {}", api_message(&body)));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {what}: not JSON: {e}"))
}

/// Time the swarm's data-path port may take at start: the programs need it before they load,
/// and a hung dockerd must not hold the start for long (the port then defaults, and the start
/// line says so).
pub const DATA_PATH_PORT_DEADLINE: Duration = Duration::from_millis(800);

/// The swarm's data-path port (the UDP port of its overlays' VXLAN), as Docker says: None
/// without a socket, outside a swarm, or when the swarm uses the default port. An error when
/// Docker cannot tell (on a worker: only managers see the cluster's settings) or does not
/// answer within [`DATA_PATH_PORT_DEADLINE`].
pub fn data_path_port(sock: &Path) -> Result<Option<u16>, String> {
    if !sock.exists() {
        return Ok(None);
    }
    let answer = get_within(sock, "/info", DATA_PATH_PORT_DEADLINE, MAX_RESPONSE)?;
    json_body("/info", answer).and_then(|v| parse_data_path_port(&v))
}

/// [`data_path_port`] from Docker's `/info`.
pub fn parse_data_path_port(info: &Value) -> Result<Option<u16>, String> {
    let swarm = &info["Swarm"];
    if swarm["LocalNodeState"].as_str() != Some("active") {
        return Ok(None);
    }
    let cluster = &swarm["Cluster"];
    if cluster.is_null() {
        return Err("a worker: Docker tells the swarm's data-path port on managers only".into());
    }
    match cluster["DataPathPort"].as_u64() {
        // 0 or absent (Docker before 19.03): the default port.
        None | Some(0) => Ok(None),
        Some(p) => u16::try_from(p)
            .map(Some)
            .map_err(|_| format!("Docker says the data-path port is {p}, not a port")),
    }
}

/// Time the published ports may take for a verdict. It is asked at exit, after Ctrl-C: a hung
/// dockerd must not hold the exit past 2 s (tests/tests/stall.rs), and a dockerd that
/// answers at all lists its services in milliseconds; without an answer the verdicts go
/// without Docker's view.
pub const PUBLISHED_DEADLINE: Duration = Duration::from_millis(800);

/// The ports swarm services publish, with their running and desired tasks: what Docker says
/// of a published port. An error without a socket, on a worker (only managers list
/// services), or when Docker does not answer within [`PUBLISHED_DEADLINE`].
pub fn published_ports(sock: &Path) -> Result<Vec<PublishedPort>, String> {
    if !sock.exists() {
        return Err(format!("{}: no Docker socket", sock.display()));
    }
    let mut docker = Session::new(sock, PUBLISHED_DEADLINE);
    json_body("/services", docker.get("/services?status=true")?).map(|v| parse_services(&v))
}

/// `GET /networks` -> networks with their IPAM subnets.
pub fn parse_networks(v: &Value) -> Vec<DockerNetwork> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|n| DockerNetwork {
                    name: n["Name"].as_str().unwrap_or("?").to_owned(),
                    driver: n["Driver"].as_str().unwrap_or("?").to_owned(),
                    scope: n["Scope"].as_str().unwrap_or("?").to_owned(),
                    ingress: n["Ingress"].as_bool().unwrap_or(false),
                    bridge: n["Options"]["com.docker.network.bridge.name"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| {
                            // Docker names a bridge network's device br-<first 12 of the id>.
                            (n["Driver"] == "bridge").then(|| {
                                let id = n["Id"].as_str().unwrap_or("");
                                format!("br-{}", id.get(..12).unwrap_or(id))
                            })
                        }),
                    subnets: n["IPAM"]["Config"]
                        .as_array()
                        .map(|c| {
                            c.iter()
                                .filter_map(|c| parse_cidr(c["Subnet"].as_str()?).ok())
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /services` -> the ports swarm services publish.
pub fn parse_services(v: &Value) -> Vec<PublishedPort> {
    let mut out = Vec::new();
    for s in v.as_array().into_iter().flatten() {
        let name = s["Spec"]["Name"].as_str().unwrap_or("?");
        // Endpoint.Ports is what is in force; Spec.EndpointSpec.Ports what was asked for.
        let ports = s["Endpoint"]["Ports"]
            .as_array()
            .or_else(|| s["Spec"]["EndpointSpec"]["Ports"].as_array());
        for p in ports.into_iter().flatten() {
            let Some(port) = p["PublishedPort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            out.push(PublishedPort {
                service: name.to_owned(),
                port,
                target: p["TargetPort"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or(0),
                protocol: p["Protocol"].as_str().unwrap_or("tcp").to_owned(),
                mode: p["PublishMode"].as_str().unwrap_or("ingress").to_owned(),
                running: s["ServiceStatus"]["RunningTasks"].as_u64(),
                desired: s["ServiceStatus"]["DesiredTasks"].as_u64(),
            });
        }
    }
    out
}

/// `container web.1.x3f (service web)` from a container's inspect object.
pub fn sandbox_name(detail: &Value) -> Option<String> {
    let name = detail["Name"].as_str()?.trim_start_matches('/');
    let labels = &detail["Config"]["Labels"];
    Some(match labels["com.docker.swarm.service.name"].as_str() {
        Some(service) => format!("container {name} (service {service})"),
        None => format!("container {name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fixture(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn cidr(s: &str) -> Cidr {
        parse_cidr(s).unwrap()
    }

    #[test]
    fn the_swarms_data_path_port_from_info() {
        let info = |swarm: &str| -> Value {
            serde_json::from_str(&format!(r#"{{"ID":"x","Swarm":{swarm}}}"#)).unwrap()
        };
        // A manager of a swarm made with `--data-path-port 7789` (Docker 19.03+).
        let manager = info(
            r#"{"NodeID":"n1","LocalNodeState":"active","ControlAvailable":true,
                "Cluster":{"ID":"c","DataPathPort":7789,"SubnetSize":24}}"#,
        );
        assert_eq!(parse_data_path_port(&manager), Ok(Some(7789)));
        // The default: 4789, or 0 and absent (older Docker).
        for cluster in [r#"{"DataPathPort":0}"#, r#"{"ID":"c"}"#] {
            let v = info(&format!(
                r#"{{"LocalNodeState":"active","ControlAvailable":true,"Cluster":{cluster}}}"#
            ));
            assert_eq!(parse_data_path_port(&v), Ok(None), "{cluster}");
        }
        // Not in a swarm: no overlay of a swarm to look into.
        assert_eq!(
            parse_data_path_port(&info(r#"{"LocalNodeState":"inactive"}"#)),
            Ok(None)
        );
        assert_eq!(parse_data_path_port(&serde_json::json!({})), Ok(None));
        // A worker is not told: an error, so that the start line says the port is a guess.
        let worker = info(r#"{"LocalNodeState":"active","ControlAvailable":false}"#);
        assert!(parse_data_path_port(&worker)
            .unwrap_err()
            .contains("managers only"));
        // Hostile or broken answers are not a port.
        for bad in [r#"70000"#, r#"-1"#, r#""7789""#, r#"1.5"#] {
            let v = info(&format!(
                r#"{{"LocalNodeState":"active","Cluster":{{"DataPathPort":{bad}}}}}"#
            ));
            let r = parse_data_path_port(&v);
            assert!(r.is_err() || r == Ok(None), "{bad}: {r:?}");
            assert_ne!(r, Ok(Some(4464)), "{bad}");
        }
    }

    #[test]
    fn parses_docker_api_answers() {
        let n = parse_networks(&serde_json::from_str(&fixture("doctor/networks.json")).unwrap());
        assert_eq!(n.len(), 6);
        let ingress = n.iter().find(|n| n.ingress).unwrap();
        assert_eq!(
            (ingress.name.as_str(), ingress.scope.as_str()),
            ("ingress", "swarm")
        );
        assert_eq!(ingress.subnets, [cidr("10.0.0.0/24")]);
        assert!(n
            .iter()
            .find(|n| n.name == "host")
            .unwrap()
            .subnets
            .is_empty());
        let p = parse_services(&serde_json::from_str(&fixture("doctor/services.json")).unwrap());
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            PublishedPort {
                service: "web_app".into(),
                port: 8080,
                target: 80,
                protocol: "tcp".into(),
                mode: "ingress".into(),
                running: None,
                desired: None,
            }
        );
        let with_status = serde_json::json!([{
            "Spec": {"Name": "idle"},
            "Endpoint": {"Ports": [{"PublishedPort": 8084, "TargetPort": 80, "Protocol": "tcp", "PublishMode": "ingress"}]},
            "ServiceStatus": {"RunningTasks": 0, "DesiredTasks": 2}
        }]);
        let p2 = parse_services(&with_status);
        assert_eq!((p2[0].running, p2[0].desired), (Some(0), Some(2)));
        assert_eq!((p[1].port, p[1].target), (443, 8443));
        assert_eq!(p[2].mode, "host");
    }

    #[test]
    fn parses_http_answers() {
        let (s, b) = parse_http(
            b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[{\"Name\":\"x\"}]\n",
        )
        .unwrap();
        assert_eq!((s, b.as_str()), (200, "[{\"Name\":\"x\"}]\n"));
        let (s, b) = parse_http(b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mes\r\n17\r\nsage\":\"not a manager\"}\n\r\n0\r\n\r\n").unwrap();
        assert_eq!(s, 503);
        assert_eq!(api_message(&b), "not a manager");
        assert!(parse_http(b"garbage").is_err());
    }

    #[test]
    fn names_containers_and_tasks() {
        let task: Value = serde_json::from_str(
            r#"{"Name":"/web.1.x3f9","Config":{"Labels":{"com.docker.swarm.service.name":"web","com.docker.swarm.task.name":"web.1.x3f9"}},"NetworkSettings":{"SandboxKey":"/var/run/docker/netns/8c1e2f3a4b5c"}}"#,
        )
        .unwrap();
        assert_eq!(
            sandbox_name(&task).unwrap(),
            "container web.1.x3f9 (service web)"
        );
        let plain: Value =
            serde_json::from_str(r#"{"Name":"/db","Config":{"Labels":{}}}"#).unwrap();
        assert_eq!(sandbox_name(&plain).unwrap(), "container db");
        assert_eq!(sandbox_name(&serde_json::json!({})), None);
    }

    /// A Docker API stub on a unix socket that misbehaves as `mode` says: `never-accepts`
    /// (its backlog is full), `silent` (accepts, never answers), `dribble` (a byte a second),
    /// `huge` (an endless body, fast).
    fn stub(mode: &'static str) -> PathBuf {
        use std::os::unix::net::UnixStream;
        let dir = std::env::temp_dir().join(format!(
            "swarmtrace-docker-stub-{}-{mode}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let l = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
        l.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
        l.listen(0).unwrap();
        let l: std::os::unix::net::UnixListener = l.into();
        if mode == "never-accepts" {
            // One connection fills a backlog of 0; kept (with the listener) forever.
            let filler = UnixStream::connect(&path).unwrap();
            std::mem::forget((l, filler));
            return path;
        }
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in l.incoming().flatten() {
                match mode {
                    "silent" => held.push(c),
                    _ => {
                        std::thread::spawn(move || {
                            let mut c = c;
                            let head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n";
                            let _ = c.write_all(head);
                            loop {
                                let r = if mode == "dribble" {
                                    std::thread::sleep(Duration::from_secs(1));
                                    c.write_all(b"[")
                                } else {
                                    c.write_all(&[b' '; 64 * 1024])
                                };
                                if r.is_err() {
                                    return;
                                }
                            }
                        });
                    }
                }
            }
        });
        path
    }

    #[test]
    fn a_hung_docker_costs_one_deadline_at_most() {
        for mode in ["never-accepts", "silent", "dribble"] {
            let sock = stub(mode);
            let started = Instant::now();
            let e = docker_get(&sock, "/containers/json").unwrap_err();
            let took = started.elapsed();
            assert!(e.contains("did not answer within"), "{mode}: {e}");
            assert!(
                took >= REQUEST_DEADLINE && took < REQUEST_DEADLINE + Duration::from_millis(500),
                "{mode}: {took:?}"
            );
            // A round of names stops at the first failure, and says so.
            let started = Instant::now();
            assert!(netns_names(&sock).is_err(), "{mode}");
            assert!(started.elapsed() < REQUEST_DEADLINE + Duration::from_millis(500));
            let started = Instant::now();
            let f = facts(&sock).unwrap();
            assert!(f["version"]["error"].is_string(), "{f}");
            assert_eq!(f["networks"]["error"], f["version"]["error"], "{f}");
            assert!(started.elapsed() < REQUEST_DEADLINE + Duration::from_millis(500));
            let _ = std::fs::remove_dir_all(sock.parent().unwrap());
        }
    }

    #[test]
    fn an_endless_answer_is_cut_at_the_size_limit() {
        let sock = stub("huge");
        let e =
            get_within(&sock, "/containers/json", Duration::from_secs(10), 1 << 20).unwrap_err();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        let _ = std::fs::remove_dir_all(sock.parent().unwrap());
    }

    #[test]
    fn no_socket_no_names() {
        assert!(netns_names(Path::new("/nonexistent/docker.sock")).is_err());
    }
}
