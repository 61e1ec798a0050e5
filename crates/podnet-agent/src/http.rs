//! The agent's HTTP endpoints, on two listeners:
//! - metrics (`--metrics-addr`): `/metrics` (Prometheus text), `/healthz`
//!   (200 while every loop has synced recently, 503 with the reasons
//!   otherwise) and `/livez` (200 while the process runs);
//! - health (`--healthz-addr`, port 10256 as kube-proxy): kube-proxy's
//!   contract for load balancers and kubelet probes, `/healthz` answering
//!   JSON (`lastUpdated`, `currentTime`) with 200 or 503, and `/livez`.
//!
//! One request at a time, each bounded by a short read timeout: scrapes are
//! rare and small, and a thread with a plain listener keeps the agent free
//! of an async runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::metrics::AgentMetrics;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait between checks of the stop flag.
const SLICE: Duration = Duration::from_millis(250);

/// Binds `addr`; the agent refuses to start when it cannot.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/metrics`, `/healthz` (text), `/livez`.
    Metrics,
    /// kube-proxy's health contract: `/healthz` (JSON), `/livez`.
    Health,
}

/// Serves until `halt` is set. `expected` lists the loops that must have
/// synced within their limit for `/healthz` to answer 200.
pub(crate) fn serve(
    listener: &TcpListener,
    endpoint: Endpoint,
    metrics: &AgentMetrics,
    expected: &[(&'static str, Duration)],
    halt: &AtomicBool,
) {
    while !halt.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, endpoint, metrics, expected) {
                    tracing::debug!(target: "podnet-agent", "metrics endpoint: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wait_readable(listener),
            Err(e) => {
                tracing::warn!(target: "podnet-agent", "metrics endpoint: accept: {e}");
                wait_readable(listener);
            }
        }
    }
}

/// Waits up to [`SLICE`] for a connection.
fn wait_readable(listener: &TcpListener) {
    use std::os::fd::AsFd;
    podnet_kernel::process::wait_readable(listener.as_fd(), SLICE);
}

fn answer(
    mut stream: TcpStream,
    endpoint: Endpoint,
    metrics: &AgentMetrics,
    expected: &[(&'static str, Duration)],
) -> std::io::Result<()> {
    let request = read_request(&mut stream)?;
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match endpoint {
        Endpoint::Metrics => route(path, metrics, expected),
        Endpoint::Health => health_route(path, metrics, expected),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

/// Reads a request's head (up to its blank line, at most 2 KiB, within
/// [`READ_TIMEOUT`]) from an accepted connection.
pub(crate) fn read_request(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
    }
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

fn route(
    path: &str,
    metrics: &AgentMetrics,
    expected: &[(&'static str, Duration)],
) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => match metrics.encode() {
            Ok(body) => (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(e) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
        },
        "/healthz" => {
            let stale = metrics.stale_loops(expected);
            if stale.is_empty() {
                ("200 OK", TEXT, "ok\n".into())
            } else {
                ("503 Service Unavailable", TEXT, stale.join("\n") + "\n")
            }
        }
        "/livez" => ("200 OK", TEXT, "ok\n".into()),
        _ => (
            "404 Not Found",
            TEXT,
            "try /metrics, /healthz or /livez\n".into(),
        ),
    }
}

/// kube-proxy's health answers: `/healthz` says when the proxy last synced
/// and whether that is recent enough, in kube-proxy's JSON.
fn health_route(
    path: &str,
    metrics: &AgentMetrics,
    expected: &[(&'static str, Duration)],
) -> (&'static str, &'static str, String) {
    const JSON: &str = "application/json";
    match path {
        "/healthz" => {
            let stale = metrics.stale_loops(expected);
            let body = serde_json::json!({
                "lastUpdated": rfc3339(metrics.last_sync_unix()),
                "currentTime": rfc3339(std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())),
                "nodeEligible": true,
                "stale": stale,
            })
            .to_string();
            if stale.is_empty() {
                ("200 OK", JSON, body)
            } else {
                ("503 Service Unavailable", JSON, body)
            }
        }
        "/livez" => ("200 OK", "text/plain; charset=utf-8", "ok\n".into()),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "try /healthz or /livez\n".into(),
        ),
    }
}

/// `2026-11-24T16:00:00Z` for seconds since the epoch (UTC).
fn rfc3339(unix: f64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0.0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_kubernetes_writes_them() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_537_782.9), "2026-11-24T16:29:42Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}
