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

fn socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; a valid descriptor is owned at once.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(os_error("open raw socket"));
    }
    // SAFETY: fd was just returned by socket() and belongs to no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one complete IP packet (header included, source as written) towards
/// `dst`, from the caller's network namespace.
pub fn send_ip_packet(packet: &[u8], dst: IpAddr) -> Result<()> {
    let rc = match dst {
        IpAddr::V4(a) => {
            let fd = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW)?;
            let mut sa: libc::sockaddr_in = zeroed_v4();
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            // SAFETY: the buffer and the address are valid for the lengths given.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            }
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
            let mut sa: libc::sockaddr_in6 = zeroed_v6();
            sa.sin6_family = libc::AF_INET6 as u16;
            sa.sin6_addr.s6_addr = a.octets();
            // SAFETY: as above.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as u32,
                )
            }
        }
    };
    if rc < 0 {
        return Err(os_error("send raw IP packet"));
    }
    Ok(())
}

/// Sends one complete Ethernet frame (header included) out of interface `ifindex`.
pub fn send_frame(ifindex: u32, frame: &[u8]) -> Result<()> {
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_ifindex = ifindex as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(frame.get(..6).unwrap_or(&[0; 6]));
    // SAFETY: the buffer and the address are valid for the lengths given.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(os_error("send raw frame"));
    }
    Ok(())
}

fn zeroed_v4() -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn zeroed_v6() -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain data; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}
