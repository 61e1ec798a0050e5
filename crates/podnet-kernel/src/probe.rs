//! One probe packet and what came back: a TCP SYN, a UDP datagram or an
//! ICMP echo request, sent from a fixed source port with DF set and
//! `IP_RECVERR`, so that an ICMP error comes back with the address of the
//! hop that sent it. A raw ICMP socket listens beside it for errors the
//! kernel does not queue to a TCP socket. Bounded: one packet, one timeout.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{KernelError, Result};
use crate::netns::Netns;

/// The probe's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeProto {
    /// A TCP SYN (a connection attempt).
    Tcp,
    /// A UDP datagram.
    Udp,
    /// An ICMP (or ICMPv6) echo request; the "port" is its identifier.
    Icmp,
}

impl ProbeProto {
    /// The IP protocol number (for IPv6 when `v6`).
    pub fn number(self, v6: bool) -> u8 {
        match (self, v6) {
            (ProbeProto::Tcp, _) => 6,
            (ProbeProto::Udp, _) => 17,
            (ProbeProto::Icmp, false) => 1,
            (ProbeProto::Icmp, true) => 58,
        }
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Source address to send from (the kernel chooses when `None`).
    pub src: Option<IpAddr>,
    /// Source port (the echo identifier for ICMP).
    pub sport: u16,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Protocol.
    pub proto: ProbeProto,
    /// Size of the IP packet in bytes (UDP and ICMP; a SYN is as small as it is).
    pub size: usize,
    /// How long to wait for an answer.
    pub timeout: Duration,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The destination answered: a SYN-ACK, a UDP reply or an echo reply.
    Answered {
        /// Who answered.
        from: IpAddr,
    },
    /// The destination refused: a TCP reset, or ICMP port unreachable.
    Refused {
        /// Who refused.
        from: IpAddr,
    },
    /// An ICMP error from a hop on the way.
    Icmp {
        /// The hop that sent it.
        from: IpAddr,
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
        /// For "fragmentation needed" / "packet too big": the next hop's MTU.
        mtu: Option<u32>,
    },
    /// The sender's own kernel refused to send (`errno`), e.g. EMSGSIZE
    /// above the route's MTU (with it), ENETUNREACH without a route.
    Local {
        /// The error number.
        errno: i32,
        /// For EMSGSIZE: the MTU that refused it.
        mtu: Option<u32>,
    },
    /// Nothing came back in time.
    Timeout,
}

/// Sends one probe from inside `netns` and waits for its outcome.
pub fn send_in(netns: &Netns, spec: &ProbeSpec) -> Result<ProbeOutcome> {
    let spec = spec.clone();
    netns.run(move || send(&spec))?
}

fn os_error(op: &str) -> KernelError {
    KernelError::io(op.to_string(), std::io::Error::last_os_error())
}

/// The errno of the last failed call.
fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A send the kernel refused: its errno, with the path MTU for EMSGSIZE.
fn refused_send(fd: &OwnedFd, v6: bool) -> ProbeOutcome {
    let errno = last_errno();
    let mtu = (errno == libc::EMSGSIZE)
        .then(|| path_mtu(fd, v6))
        .flatten();
    ProbeOutcome::Local { errno, mtu }
}

fn set_int(fd: &OwnedFd, level: i32, name: i32, value: i32, op: &str) -> Result<()> {
    // SAFETY: the option is an int, passed by pointer with its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as u32,
        )
    };
    if rc < 0 {
        return Err(os_error(op));
    }
    Ok(())
}

/// A socket address in the kernel's layout, with its length.
fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, u32) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as u32)
}

/// The address in a `sockaddr_storage` the kernel filled in.
fn ip_of(ss: &libc::sockaddr_storage) -> Option<IpAddr> {
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(IpAddr::V4(Ipv4Addr::from(
                sin.sin_addr.s_addr.to_ne_bytes(),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

fn bind(fd: &OwnedFd, addr: SocketAddr) -> Result<()> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss holds a valid address of length len.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(os_error(&format!("bind probe socket to {addr}")));
    }
    Ok(())
}

/// `connect`; returns the errno (0 on success, EINPROGRESS for a started TCP handshake).
fn connect(fd: &OwnedFd, addr: SocketAddr) -> i32 {
    let (ss, len) = sockaddr(addr);
    // SAFETY: ss holds a valid address of length len.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        last_errno()
    } else {
        0
    }
}

/// Waits for `events` on `fd` until `deadline`; returns the revents (0 on timeout).
fn poll(fd: &OwnedFd, events: i16, deadline: Instant) -> i16 {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return if n > 0 { pfd.revents } else { 0 };
    }
}

/// A socket of the probe's family with DF and error reporting set.
fn probe_socket(v6: bool, ty: i32, protocol: i32) -> Result<OwnedFd> {
    let fd = crate::raw::socket(
        if v6 { libc::AF_INET6 } else { libc::AF_INET },
        ty | libc::SOCK_NONBLOCK,
        protocol,
    )?;
    if v6 {
        set_int(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
            "set DF",
        )?;
        set_int(
            &fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVERR,
            1,
            "set IPV6_RECVERR",
        )?;
    } else {
        set_int(
            &fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
            "set DF",
        )?;
        set_int(&fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1, "set IP_RECVERR")?;
    }
    Ok(fd)
}

fn send(spec: &ProbeSpec) -> Result<ProbeOutcome> {
    let v6 = spec.dst.is_ipv6();
    let listener = IcmpListener::open(v6)?;
    let deadline = Instant::now() + spec.timeout;
    let outcome = match spec.proto {
        ProbeProto::Tcp => tcp(spec, deadline)?,
        ProbeProto::Udp => udp(spec, deadline)?,
        ProbeProto::Icmp => echo(spec, &listener, deadline)?,
    };
    // A TCP error names no sender; the ICMP that caused it does.
    match outcome {
        ProbeOutcome::Timeout | ProbeOutcome::Local { .. } if spec.proto == ProbeProto::Tcp => {
            Ok(listener.error_for(spec, Instant::now()).unwrap_or(outcome))
        }
        other => Ok(other),
    }
}

/// A probe socket of type `ty` bound to the probe's source address and
/// port, with `SO_REUSEADDR`: back-to-back probes reuse one source port, and
/// the previous probe's may not be free yet.
fn bound_probe_socket(spec: &ProbeSpec, ty: i32) -> Result<OwnedFd> {
    let fd = probe_socket(spec.dst.is_ipv6(), ty, 0)?;
    set_int(
        &fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        1,
        "set SO_REUSEADDR",
    )?;
    bind(&fd, SocketAddr::new(source(spec), spec.sport))?;
    Ok(fd)
}

fn tcp(spec: &ProbeSpec, deadline: Instant) -> Result<ProbeOutcome> {
    let fd = bound_probe_socket(spec, libc::SOCK_STREAM)?;
    // Close with a reset: the probe leaves no connection behind.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: SO_LINGER takes a struct linger, passed by pointer with its size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
    let errno = match connect(&fd, spec.dst) {
        libc::EINPROGRESS => {
            if poll(&fd, libc::POLLOUT, deadline) == 0 {
                return Ok(ProbeOutcome::Timeout);
            }
            socket_error(&fd)
        }
        e => e,
    };
    Ok(match errno {
        0 => ProbeOutcome::Answered {
            from: spec.dst.ip(),
        },
        libc::ECONNREFUSED => ProbeOutcome::Refused {
            from: spec.dst.ip(),
        },
        e => ProbeOutcome::Local {
            errno: e,
            mtu: None,
        },
    })
}

fn socket_error(fd: &OwnedFd) -> i32 {
    let mut err: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as u32;
    // SAFETY: SO_ERROR writes an int into err, whose size is in len.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut i32).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        libc::EIO
    } else {
        err
    }
}

fn source(spec: &ProbeSpec) -> IpAddr {
    spec.src.unwrap_or(if spec.dst.is_ipv6() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    })
}

/// Bytes of IP header plus the 8 of the UDP or ICMP header, before the payload.
fn headers(v6: bool) -> usize {
    if v6 {
        48
    } else {
        28
    }
}

fn udp(spec: &ProbeSpec, deadline: Instant) -> Result<ProbeOutcome> {
    let v6 = spec.dst.is_ipv6();
    let fd = bound_probe_socket(spec, libc::SOCK_DGRAM)?;
    let e = connect(&fd, spec.dst);
    if e != 0 {
        return Ok(ProbeOutcome::Local {
            errno: e,
            mtu: None,
        });
    }
    let payload = vec![b'p'; spec.size.saturating_sub(headers(v6)).max(1)];
    // SAFETY: sending from a valid buffer of the stated length.
    let rc = unsafe { libc::send(fd.as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0) };
    if rc < 0 {
        return Ok(refused_send(&fd, v6));
    }
    let revents = poll(&fd, libc::POLLIN, deadline);
    if revents & libc::POLLERR != 0 {
        return Ok(read_error_queue(&fd, spec).unwrap_or(ProbeOutcome::Timeout));
    }
    if revents & libc::POLLIN != 0 {
        return Ok(ProbeOutcome::Answered {
            from: spec.dst.ip(),
        });
    }
    Ok(ProbeOutcome::Timeout)
}

fn path_mtu(fd: &OwnedFd, v6: bool) -> Option<u32> {
    let mut mtu: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as u32;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU)
    };
    // SAFETY: IP_MTU writes an int into mtu, whose size is in len.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut mtu as *mut i32).cast(),
            &mut len,
        )
    };
    (rc == 0 && mtu > 0).then_some(mtu as u32)
}

/// Reads one `IP_RECVERR` entry: the error, its ICMP type and code, the MTU and the sender.
fn read_error_queue(fd: &OwnedFd, spec: &ProbeSpec) -> Option<ProbeOutcome> {
    let mut data = [0u8; 512];
    let mut control = [0u64; 64];
    // SAFETY: sockaddr_storage is plain data.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at buffers that live for the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) };
    if n < 0 {
        return None;
    }
    // SAFETY: the kernel filled msg_control with cmsgs of msg_controllen bytes;
    // CMSG_FIRSTHDR/NXTHDR stay inside it, and an IP(V6)_RECVERR cmsg holds a
    // sock_extended_err followed by the offender's sockaddr.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let level = (*c).cmsg_level;
            let ty = (*c).cmsg_type;
            if (level == libc::IPPROTO_IP && ty == libc::IP_RECVERR)
                || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_RECVERR)
            {
                let ee = &*(libc::CMSG_DATA(c) as *const libc::sock_extended_err);
                let offender = libc::SO_EE_OFFENDER(ee) as *const libc::sockaddr_storage;
                let from = ip_of(&*offender).filter(|ip| !ip.is_unspecified());
                return Some(classify(ee, from, spec));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    None
}

const SO_EE_ORIGIN_LOCAL: u8 = 1;

fn classify(ee: &libc::sock_extended_err, from: Option<IpAddr>, spec: &ProbeSpec) -> ProbeOutcome {
    let from = from.unwrap_or(spec.dst.ip());
    if ee.ee_origin == SO_EE_ORIGIN_LOCAL {
        let mtu = (ee.ee_errno as i32 == libc::EMSGSIZE).then_some(ee.ee_info);
        return ProbeOutcome::Local {
            errno: ee.ee_errno as i32,
            mtu,
        };
    }
    if ee.ee_errno as i32 == libc::ECONNREFUSED && from == spec.dst.ip() {
        return ProbeOutcome::Refused { from };
    }
    let too_big = ee.ee_errno as i32 == libc::EMSGSIZE;
    ProbeOutcome::Icmp {
        from,
        icmp_type: ee.ee_type,
        code: ee.ee_code,
        mtu: too_big.then_some(ee.ee_info),
    }
}

/// A raw ICMP socket: hears every ICMP message that reaches the namespace.
struct IcmpListener {
    fd: OwnedFd,
    v6: bool,
}

impl IcmpListener {
    fn open(v6: bool) -> Result<Self> {
        let fd = if v6 {
            crate::raw::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                libc::IPPROTO_ICMPV6,
            )?
        } else {
            crate::raw::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                libc::IPPROTO_ICMP,
            )?
        };
        Ok(IcmpListener { fd, v6 })
    }

    /// Receives one ICMP message: (sender, the ICMP bytes).
    fn recv(&self, deadline: Instant) -> Option<(IpAddr, Vec<u8>)> {
        if poll(&self.fd, libc::POLLIN, deadline) & libc::POLLIN == 0 {
            return None;
        }
        let mut buf = vec![0u8; 2048];
        // SAFETY: sockaddr_storage is plain data.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        // SAFETY: receiving into our buffer and address of the stated sizes.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut ss as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if n <= 0 {
            return None;
        }
        buf.truncate(n as usize);
        // An IPv4 raw socket returns the IP header too; an IPv6 one does not.
        if !self.v6 {
            let ihl = usize::from(buf.first()? & 0x0f) * 4;
            buf.drain(..ihl.min(buf.len()));
        }
        Some((ip_of(&ss)?, buf))
    }

    /// The first ICMP error already received that quotes the probe.
    fn error_for(&self, spec: &ProbeSpec, deadline: Instant) -> Option<ProbeOutcome> {
        while let Some((from, icmp)) = self.recv(deadline) {
            if let Some(o) = icmp_error(from, &icmp, spec, self.v6) {
                return Some(o);
            }
        }
        None
    }
}

/// An ICMP error quoting the probe (same protocol and source port), as an outcome.
fn icmp_error(from: IpAddr, icmp: &[u8], spec: &ProbeSpec, v6: bool) -> Option<ProbeOutcome> {
    let (ty, code) = (*icmp.first()?, *icmp.get(1)?);
    let is_error = if v6 {
        (1..=4).contains(&ty)
    } else {
        matches!(ty, 3 | 11 | 12)
    };
    if !is_error {
        return None;
    }
    let inner = icmp.get(8..)?;
    let (proto, l4) = if v6 {
        (*inner.get(6)?, inner.get(40..)?)
    } else {
        (
            *inner.get(9)?,
            inner.get(usize::from(inner.first()? & 0x0f) * 4..)?,
        )
    };
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    if proto != spec.proto.number(v6) || sport != spec.sport {
        return None;
    }
    let unreachable_port = if v6 {
        ty == 1 && code == 4
    } else {
        ty == 3 && code == 3
    };
    if unreachable_port && from == spec.dst.ip() {
        return Some(ProbeOutcome::Refused { from });
    }
    let too_big = if v6 { ty == 2 } else { ty == 3 && code == 4 };
    let mtu = if v6 {
        u32::from_be_bytes(icmp.get(4..8)?.try_into().ok()?)
    } else {
        u32::from(u16::from_be_bytes(icmp.get(6..8)?.try_into().ok()?))
    };
    Some(ProbeOutcome::Icmp {
        from,
        icmp_type: ty,
        code,
        mtu: too_big.then_some(mtu),
    })
}

/// An ICMP echo request from a raw socket, identified by the source port.
fn echo(spec: &ProbeSpec, listener: &IcmpListener, deadline: Instant) -> Result<ProbeOutcome> {
    let v6 = spec.dst.is_ipv6();
    let fd = probe_socket(
        v6,
        libc::SOCK_RAW,
        if v6 {
            libc::IPPROTO_ICMPV6
        } else {
            libc::IPPROTO_ICMP
        },
    )?;
    if let Some(src) = spec.src {
        bind(&fd, SocketAddr::new(src, 0))?;
    }
    let mut packet = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    packet.extend_from_slice(&spec.sport.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes());
    packet.resize(spec.size.saturating_sub(headers(v6)).max(16) + 8, b'p');
    if !v6 {
        let sum = crate::raw::checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let (ss, len) = sockaddr(SocketAddr::new(spec.dst.ip(), 0));
    // SAFETY: the packet and the address are valid for the lengths given.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        return Ok(refused_send(&fd, v6));
    }
    while let Some((from, icmp)) = listener.recv(deadline) {
        let reply = if v6 { 129 } else { 0 };
        let id = icmp.get(4..6).map(|b| u16::from_be_bytes([b[0], b[1]]));
        if icmp.first() == Some(&reply) && id == Some(spec.sport) {
            return Ok(ProbeOutcome::Answered { from });
        }
        let quoted = icmp.get(8..).and_then(|inner| {
            let l4 = if v6 {
                inner.get(40..)?
            } else {
                inner.get(usize::from(inner.first()? & 0x0f) * 4..)?
            };
            Some(u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]))
        });
        if quoted == Some(spec.sport) {
            let (ty, code) = (icmp[0], icmp.get(1).copied().unwrap_or(0));
            let too_big = if v6 { ty == 2 } else { ty == 3 && code == 4 };
            return Ok(ProbeOutcome::Icmp {
                from,
                icmp_type: ty,
                code,
                mtu: too_big
                    .then(|| {
                        icmp.get(6..8)
                            .map(|b| u32::from(u16::from_be_bytes([b[0], b[1]])))
                    })
                    .flatten(),
            });
        }
    }
    Ok(ProbeOutcome::Timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_errors_are_matched_to_the_probe() {
        let spec = ProbeSpec {
            src: None,
            sport: 40000,
            dst: "10.0.0.2:80".parse().expect("addr"),
            proto: ProbeProto::Tcp,
            size: 60,
            timeout: Duration::from_secs(1),
        };
        // ICMP 3/4 with MTU 1200, quoting an IPv4 TCP header from port 40000.
        let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x04, 0xb0];
        let mut ip = vec![0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        icmp.extend_from_slice(&ip);
        icmp.extend_from_slice(&40000u16.to_be_bytes());
        icmp.extend_from_slice(&80u16.to_be_bytes());
        let from: IpAddr = "198.18.1.254".parse().expect("addr");
        assert_eq!(
            icmp_error(from, &icmp, &spec, false),
            Some(ProbeOutcome::Icmp {
                from,
                icmp_type: 3,
                code: 4,
                mtu: Some(1200)
            })
        );
        let other_port = ProbeSpec {
            sport: 40001,
            ..spec
        };
        assert_eq!(icmp_error(from, &icmp, &other_port, false), None);
    }

    #[test]
    fn checksum_of_an_echo_request() {
        let p = [8, 0, 0, 0, 0, 1, 0, 1];
        assert_eq!(crate::raw::checksum(&p), 0xf7fd);
    }
}
