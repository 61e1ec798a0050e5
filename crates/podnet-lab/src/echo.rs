//! The echo service each lab pod runs, and the client the matrix uses.
//!
//! The server answers every connection (TCP) and every datagram (UDP) with
//! the source address it saw and its own name: `seen ADDRESS by NAME`. The
//! address is how the matrix proves that traffic between pods is not NATed;
//! the name is how service tests know which endpoint answered.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use podnet_kernel::Netns;

use crate::error::LabError;

/// The port every lab echo server listens on.
pub const ECHO_PORT: u16 = 7777;

/// Serves forever on TCP and UDP on every one of `ports`: each connection or
/// datagram gets one line, `seen <peer address> by <name>`.
pub fn serve(ports: &[u16], name: &str) -> Result<(), LabError> {
    let mut listeners = Vec::new();
    for port in ports {
        let listener = TcpListener::bind(("::", *port))
            .map_err(|e| LabError::io(format!("listen on [::]:{port}"), e))?;
        let udp = UdpSocket::bind(("::", *port))
            .map_err(|e| LabError::io(format!("listen on udp [::]:{port}"), e))?;
        let udp_name = name.to_string();
        std::thread::spawn(move || serve_udp(&udp, &udp_name));
        listeners.push(listener);
    }
    let mut threads = Vec::new();
    for listener in listeners {
        let name = name.to_string();
        threads.push(std::thread::spawn(move || serve_tcp(&listener, &name)));
    }
    for t in threads {
        if t.join().is_err() {
            return Err(LabError::io(
                "echo server",
                std::io::Error::other("a listener thread panicked"),
            ));
        }
    }
    Ok(())
}

fn serve_udp(udp: &UdpSocket, name: &str) {
    let mut buf = [0u8; 512];
    while let Ok((_, peer)) = udp.recv_from(&mut buf) {
        let line = format!("seen {} by {name}\n", canonical(peer.ip()));
        if let Err(e) = udp.send_to(line.as_bytes(), peer) {
            tracing::warn!(target: "podnet-echo", "answer {peer}: {e}");
        }
    }
}

fn serve_tcp(listener: &TcpListener, name: &str) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let peer = conn
            .peer_addr()
            .map(|p| canonical(p.ip()).to_string())
            .unwrap_or_default();
        if let Err(e) = writeln!(conn, "seen {peer} by {name}") {
            tracing::warn!(target: "podnet-echo", "answer {peer}: {e}");
        }
    }
}

/// An echo answer: the source address the server saw and the server's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The client address as the server saw it.
    pub seen: IpAddr,
    /// The answering server's name (its pod).
    pub by: String,
}

fn parse_answer(line: &str) -> Result<Answer, String> {
    let rest = line
        .trim()
        .strip_prefix("seen ")
        .ok_or_else(|| format!("unexpected answer {line:?}"))?;
    let (seen, by) = rest.split_once(" by ").unwrap_or((rest, ""));
    Ok(Answer {
        seen: seen
            .parse()
            .map_err(|_| format!("unexpected answer {line:?}"))?,
        by: by.to_string(),
    })
}

/// Connects over TCP from inside `from` to `to` and returns the answer.
pub fn ask(from: &Netns, to: SocketAddr, timeout: Duration) -> Result<Answer, String> {
    let stream = from
        .run(move || TcpStream::connect_timeout(&to, timeout))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    parse_answer(&line)
}

/// A UDP socket inside `from`, bound to one source port, for datagram probes.
pub fn udp_client(from: &Netns, v6: bool) -> Result<UdpSocket, String> {
    let any: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|_| "address".to_string())?;
    from.run(move || UdpSocket::bind(any))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Sends one datagram from `socket` to `to` and returns the answer.
pub fn ask_udp(socket: &UdpSocket, to: SocketAddr, timeout: Duration) -> Result<Answer, String> {
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    socket.send_to(b"hello\n", to).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
    parse_answer(&String::from_utf8_lossy(&buf[..n]))
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
    // The socket is created inside `from`, then used from here: sockets stay in their namespace.
    ask(from, SocketAddr::new(to, port), timeout).map(|a| a.seen)
}
