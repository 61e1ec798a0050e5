//! Raw sends: whole IP packets (any source address) and whole Ethernet
//! frames, as a process with CAP_NET_RAW can send them. The anti-spoofing
//! tests use them to forge what a hostile pod would; `trace` probes can too.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{KernelError, Result};

fn os_error(op: &'static str) -> KernelError {
    KernelError::Io {
        op: op.into(),
        source: std::io::Error::last_os_error(),
    }
}

/// `socket(2)` with close-on-exec, owned (also the probe's sockets).
pub(crate) fn socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; a valid descriptor is owned at once.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(os_error("open socket"));
    }
    // SAFETY: fd was just returned by socket() and belongs to no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An all-zero socket address of type `T`, to fill in.
///
/// # Safety
/// `T` must be a plain-data `sockaddr_*` struct, for which all-zero is valid.
unsafe fn zeroed<T>() -> T {
    std::mem::zeroed()
}

/// `sendto(fd, buf, addr)`.
fn send_to<T>(fd: &OwnedFd, buf: &[u8], addr: &T, op: &'static str) -> Result<()> {
    // SAFETY: the buffer and the address are valid for the lengths given.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (addr as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        return Err(os_error(op));
    }
    Ok(())
}

/// Sends one complete IP packet (header included, source as written) towards
/// `dst`, from the caller's network namespace.
pub fn send_ip_packet(packet: &[u8], dst: IpAddr) -> Result<()> {
    const OP: &str = "send raw IP packet";
    match dst {
        IpAddr::V4(a) => {
            let fd = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            // SAFETY: sockaddr_in is plain data.
            let mut sa: libc::sockaddr_in = unsafe { zeroed() };
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            send_to(&fd, packet, &sa, OP)
        }
        IpAddr::V6(a) => {
            let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            let on: i32 = 1;
            // SAFETY: IPV6_HDRINCL takes an int, passed by pointer with its size.
            let set = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_IPV6,
                    libc::IPV6_HDRINCL,
                    (&on as *const i32).cast(),
                    std::mem::size_of::<i32>() as u32,
                )
            };
            if set < 0 {
                return Err(os_error("set IPV6_HDRINCL"));
            }
            // SAFETY: sockaddr_in6 is plain data.
            let mut sa: libc::sockaddr_in6 = unsafe { zeroed() };
            sa.sin6_family = libc::AF_INET6 as u16;
            sa.sin6_addr.s6_addr = a.octets();
            send_to(&fd, packet, &sa, OP)
        }
    }
}

/// Sends one complete Ethernet frame (header included) out of interface `ifindex`.
pub fn send_frame(ifindex: u32, frame: &[u8]) -> Result<()> {
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    // SAFETY: sockaddr_ll is plain data.
    let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_ifindex = ifindex as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(frame.get(..6).unwrap_or(&[0; 6]));
    send_to(&fd, frame, &sa, "send raw frame")
}

/// The Internet checksum (RFC 1071) of `data`, folded.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
