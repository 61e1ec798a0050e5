//! Health-check node ports (`healthCheckNodePort`): for each service of
//! type LoadBalancer with `externalTrafficPolicy: Local`, every node listens
//! on the service's port and answers what cloud load balancers poll, as
//! kube-proxy does: 200 with the number of ready local endpoints when there
//! are any, 503 when there are none, so traffic is sent only to nodes that
//! can serve it without another hop.
//!
//! One listener thread per port; the answers read a shared table the
//! service loop updates after each pass, so a listener lives as long as its
//! service and answers the current count.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use podnet_proxy::HealthCheck;
use podnet_services::ServiceName;

/// Longest wait between checks of a listener's stop flag.
const SLICE: Duration = Duration::from_millis(250);

/// What each port reports: its service and local endpoint count.
type Answers = Arc<Mutex<HashMap<u16, (ServiceName, usize)>>>;

/// The health-check listeners of one node.
#[derive(Default)]
pub(crate) struct HealthChecks {
    answers: Answers,
    listeners: HashMap<u16, Listener>,
}

struct Listener {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl HealthChecks {
    /// Listens on exactly the ports of `checks`, answering their current
    /// counts; a port that cannot be bound is logged with its service.
    pub(crate) fn set(&mut self, checks: &HashMap<ServiceName, HealthCheck>) {
        let wanted: HashMap<u16, (ServiceName, usize)> = checks
            .iter()
            .filter(|(_, h)| h.port != 0)
            .map(|(name, h)| (h.port, (name.clone(), h.local_endpoints)))
            .collect();
        if let Ok(mut answers) = self.answers.lock() {
            answers.clone_from(&wanted);
        }
        let gone: Vec<u16> = self
            .listeners
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for port in gone {
            if let Some(l) = self.listeners.remove(&port) {
                l.stop.store(true, Ordering::Relaxed);
                if l.thread.join().is_err() {
                    tracing::warn!(target: "podnet-agent", "health check port {port}: its thread panicked");
                }
            }
        }
        for (port, (name, _)) in wanted {
            if self.listeners.contains_key(&port) {
                continue;
            }
            match listen(port, self.answers.clone()) {
                Ok(l) => {
                    tracing::info!(target: "podnet-agent", "health check for {name} on port {port}");
                    self.listeners.insert(port, l);
                }
                Err(e) => tracing::warn!(
                    target: "podnet-agent",
                    "health check for {name}: cannot listen on port {port}: {e}"
                ),
            }
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.set(&HashMap::new());
    }
}

/// Binds the port on every address (IPv6 and, through it, IPv4; IPv4 alone
/// where the namespace has no IPv6) and starts its thread.
fn listen(port: u16, answers: Answers) -> std::io::Result<Listener> {
    let listener = TcpListener::bind(SocketAddr::from(([0u16; 8], port)))
        .or_else(|_| TcpListener::bind(SocketAddr::from(([0u8; 4], port))))?;
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let halt = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("healthcheck-{port}"))
        .spawn(move || serve(&listener, port, &answers, &halt))?;
    Ok(Listener { stop, thread })
}

fn serve(listener: &TcpListener, port: u16, answers: &Answers, stop: &AtomicBool) {
    use std::os::fd::AsFd;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let current = answers.lock().ok().and_then(|a| a.get(&port).cloned());
                if let Err(e) = answer(stream, current) {
                    tracing::debug!(target: "podnet-agent", "health check port {port}: {e}");
                }
            }
            Err(_) => {
                podnet_kernel::process::wait_readable(listener.as_fd(), SLICE);
            }
        }
    }
}

/// Reads the request and answers kube-proxy's JSON.
fn answer(mut stream: TcpStream, current: Option<(ServiceName, usize)>) -> std::io::Result<()> {
    crate::http::read_request(&mut stream)?;
    let (status, body) = response(current.as_ref());
    let count = current.map_or(0, |(_, n)| n);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n\
         X-Load-Balancing-Endpoint-Weight: {count}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

/// The status and body for a port's service and local endpoint count.
fn response(current: Option<&(ServiceName, usize)>) -> (&'static str, String) {
    let Some((name, count)) = current else {
        return ("503 Service Unavailable", "{}".into());
    };
    let body = serde_json::json!({
        "service": {"namespace": name.namespace, "name": name.name},
        "localEndpoints": count,
        "serviceProxyHealthy": true,
    })
    .to_string();
    let status = if *count > 0 {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_200_with_local_endpoints_and_503_without() {
        let name = ServiceName::new("default", "lb");
        let (status, body) = response(Some(&(name.clone(), 2)));
        assert_eq!(status, "200 OK");
        assert!(body.contains("\"localEndpoints\":2"), "{body}");
        assert!(body.contains("\"name\":\"lb\""), "{body}");
        assert_eq!(response(Some(&(name, 0))).0, "503 Service Unavailable");
        assert_eq!(response(None).0, "503 Service Unavailable");
    }
}
