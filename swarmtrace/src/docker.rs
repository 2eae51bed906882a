//! The Docker Engine API over its unix socket (HTTP/1.0, no client library): what `doctor`
//! checks, and the names of Docker's network namespaces (containers, services, tasks,
//! networks) for everything swarmtrace prints.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

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

/// `GET path` on the Docker Engine API socket, HTTP/1.0: (status, body).
pub fn docker_get(sock: &Path, path: &str) -> Result<(u16, String), String> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).map_err(|e| e.to_string())?;
    let timeout = Some(Duration::from_secs(5));
    s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
    s.set_write_timeout(timeout).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: docker\r\nAccept: application/json\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    parse_http(&raw)
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

/// Names for the files under /var/run/docker/netns: a container's sandbox (its key is the
/// file name) becomes `container NAME` with its swarm service and task when it has them; an
/// overlay's `1-<id>` and a load balancer's `lb_<id>` get the network's name.
pub fn netns_names(sock: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let get = |path: &str| -> Option<Value> {
        match docker_get(sock, path) {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    };
    if let Some(containers) = get("/containers/json") {
        for c in containers.as_array().into_iter().flatten() {
            let Some(id) = c["Id"].as_str() else { continue };
            let Some(detail) = get(&format!("/containers/{id}/json")) else {
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
    if let Some(networks) = get("/networks") {
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
    out
}

/// What a postmortem bundle keeps of Docker: its networks (with subnets), swarm services
/// (with published ports) and containers (with their sandbox, i.e. namespace), as the Engine
/// API returns them; None without a socket.
pub fn facts(sock: &Path) -> Option<Value> {
    if !sock.exists() {
        return None;
    }
    let get = |path: &str| -> Value {
        match docker_get(sock, path) {
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

    #[test]
    fn no_socket_no_names() {
        assert!(netns_names(Path::new("/nonexistent/docker.sock")).is_empty());
    }
}
