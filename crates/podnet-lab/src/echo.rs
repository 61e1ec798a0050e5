//! The echo service each lab pod runs, and the client the matrix uses.
//!
//! The server answers every connection with the source address it saw, which
//! is how the matrix proves that traffic between pods is not NATed.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use podnet_kernel::Netns;

use crate::error::LabError;

/// The port every lab echo server listens on.
pub const ECHO_PORT: u16 = 7777;

/// Serves forever: each connection gets one line, `seen <peer address>`.
pub fn serve(port: u16) -> Result<(), LabError> {
    let listener = TcpListener::bind(("::", port))
        .map_err(|e| LabError::io(format!("listen on [::]:{port}"), e))?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let peer = conn
            .peer_addr()
            .map(|p| canonical(p.ip()).to_string())
            .unwrap_or_default();
        let _ = writeln!(conn, "seen {peer}");
    }
    Ok(())
}

/// Maps IPv4-mapped IPv6 addresses back to IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Waits until an echo server answers on loopback inside `netns`, or `deadline` passes.
pub fn wait_listening(netns: &Netns, port: u16, deadline: Duration) -> Result<(), LabError> {
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let answers = || {
        netns
            .run(move || TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok())
            .unwrap_or(false)
    };
    crate::control::wait_for(
        deadline,
        &format!("the echo server on port {port}"),
        answers,
    )
}

/// Connects from inside `from` to `to:port` and returns the source address the server saw.
pub fn probe(from: &Netns, to: IpAddr, port: u16, timeout: Duration) -> Result<IpAddr, String> {
    let addr = SocketAddr::new(to, port);
    // The socket is created inside `from`, then used from here: sockets stay in their namespace.
    let stream = from
        .run(move || TcpStream::connect_timeout(&addr, timeout))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    line.trim()
        .strip_prefix("seen ")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unexpected answer {line:?}"))
}
