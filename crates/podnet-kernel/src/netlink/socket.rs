//! A blocking netlink socket bound to one network namespace.
//!
//! A socket opened inside a namespace keeps talking to that namespace for its
//! whole life, whichever thread uses it, so one process can manage several
//! namespaces without moving threads around (see [`crate::netns::Netns::run`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::codec::{self, MessageBuilder, NLMSG_HDRLEN};
use crate::error::{KernelError, Result};
use crate::netns::Netns;

/// Netlink protocol families podnet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `NETLINK_ROUTE`: links, addresses, routes, neighbours.
    Route,
    /// `NETLINK_NETFILTER`: nf_tables.
    Netfilter,
}

impl Protocol {
    fn raw(self) -> libc::c_int {
        match self {
            Protocol::Route => libc::NETLINK_ROUTE,
            Protocol::Netfilter => libc::NETLINK_NETFILTER,
        }
    }
}

const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const RECV_BUF: usize = 64 * 1024;
/// How often an interrupted dump is retried before giving up.
const DUMP_RETRIES: usize = 10;

/// What a notification socket received.
#[derive(Debug)]
pub enum Notifications {
    /// Messages as (type, payload), possibly none.
    Messages(Vec<(u16, Vec<u8>)>),
    /// The kernel dropped notifications: the receive buffer overflowed.
    Overrun,
}

/// A blocking netlink socket.
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

/// What came back for one request.
enum Reply {
    /// The request was acknowledged (or a dump finished).
    Done,
    /// The request failed with this error.
    Failed(KernelError),
}

impl NetlinkSocket {
    /// Opens a socket in the caller's current network namespace.
    pub fn open(protocol: Protocol) -> Result<Self> {
        // SAFETY: plain socket(2) call; the fd is owned right below.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol.raw(),
            )
        };
        if raw < 0 {
            return Err(KernelError::io(
                "open netlink socket",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: raw is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        for opt in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: setsockopt with a valid fd and a pointer to a c_int.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        // SAFETY: zeroed sockaddr_nl is a valid "any port" address.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: bind with a properly sized sockaddr_nl.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(KernelError::io(
                "bind netlink socket",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(NetlinkSocket {
            fd,
            seq: 1,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Opens a socket inside `netns`; the socket stays bound to it.
    pub fn open_in(netns: &Netns, protocol: Protocol) -> Result<Self> {
        netns.run(move || NetlinkSocket::open(protocol))?
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn send(&self, bytes: &[u8], op: &str) -> Result<()> {
        // SAFETY: sending from a valid buffer on a valid fd.
        let rc = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
            )
        };
        if rc < 0 {
            return Err(KernelError::io(
                format!("{op}: send"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn recv(&mut self, op: &str) -> Result<usize> {
        loop {
            // SAFETY: receiving into our own buffer of the stated length.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                    0,
                )
            };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(KernelError::io(format!("{op}: recv"), err));
            }
            return Ok(rc as usize);
        }
    }

    /// Subscribes to multicast group `group` (`RTNLGRP_*`).
    pub fn join_group(&self, group: u32) -> Result<()> {
        // SAFETY: setsockopt with a valid fd and a pointer to a u32.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                &group as *const _ as *const libc::c_void,
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(KernelError::io(
                format!("join netlink group {group}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Waits up to `timeout` for multicast notifications.
    pub fn wait_notifications(
        &mut self,
        timeout: std::time::Duration,
        op: &str,
    ) -> Result<Notifications> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll on one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready <= 0 {
            return Ok(Notifications::Messages(Vec::new()));
        }
        match self.recv(op) {
            Ok(n) => Ok(Notifications::Messages(
                codec::messages(&self.buf[..n])
                    .map(|m| (m.msg_type, m.payload.to_vec()))
                    .collect(),
            )),
            Err(e) if e.errno() == Some(libc::ENOBUFS) => Ok(Notifications::Overrun),
            Err(e) => Err(e),
        }
    }

    /// Asks for a receive buffer of `bytes` (for busy notification sockets).
    pub fn set_receive_buffer(&self, bytes: usize) {
        let size = bytes.min(i32::MAX as usize) as libc::c_int;
        // SAFETY: setsockopt with a valid fd and a pointer to a c_int; failure only means a smaller buffer.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    /// Sends `msg` from a forked child process and returns at once with the
    /// child, which owns the socket from then on (the parent's copy closes
    /// here, so parent and child never read one socket).
    ///
    /// The child points stdin, stdout and stderr at `/dev/null` (so a CNI
    /// runtime reading our stdout is not held up by it), sends the request,
    /// waits for the kernel's answer and exits with 0 on success, 1 on failure.
    /// Everything the child runs is prepared before `fork` and it only makes
    /// async-signal-safe system calls, so this is safe in a multi-threaded
    /// process. This is podnet's one `fork`.
    pub fn request_in_child(mut self, msg: MessageBuilder, op: &str) -> Result<ChildRequest> {
        let seq = self.next_seq();
        let bytes = msg.with_ack().finish(seq);
        let devnull = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| KernelError::io(format!("{op}: open /dev/null"), e))?;
        let fd = self.fd.as_raw_fd();
        let mut answer = vec![0u8; 4096];
        // SAFETY: the child only calls async-signal-safe functions (dup2, send, recv, _exit)
        // on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(KernelError::io(
                format!("{op}: fork"),
                std::io::Error::last_os_error(),
            ));
        }
        if pid == 0 {
            // SAFETY: as above; the child never returns from this block.
            unsafe {
                for target in 0..3 {
                    libc::dup2(devnull.as_raw_fd(), target);
                }
                let ok = libc::send(fd, bytes.as_ptr() as *const libc::c_void, bytes.len(), 0) >= 0
                    && child_ack_ok(fd, seq, &mut answer);
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        Ok(ChildRequest { pid, reaped: false })
    }

    /// Sends one request with `NLM_F_ACK` and waits for the acknowledgement.
    pub fn request(&mut self, msg: MessageBuilder, op: &str) -> Result<()> {
        self.exchange(msg, op, &mut |_| {})
    }

    /// Sends a request and returns the payload of the single answer message.
    pub fn request_one(&mut self, msg: MessageBuilder, op: &str) -> Result<Vec<u8>> {
        let mut answer = None;
        self.exchange(msg, op, &mut |m| {
            if answer.is_none() {
                answer = Some(m.to_vec());
            }
        })?;
        answer.ok_or_else(|| KernelError::Protocol {
            op: op.to_string(),
            detail: "no answer".into(),
        })
    }

    /// Sends a dump request and returns every message payload; retries interrupted dumps.
    pub fn dump(&mut self, msg: MessageBuilder, op: &str) -> Result<Vec<Vec<u8>>> {
        for _ in 0..DUMP_RETRIES {
            let mut out = Vec::new();
            let mut interrupted = false;
            let seq = self.next_seq();
            self.send(&msg.clone().finish(seq), op)?;
            match self.collect(seq, op, &mut |m, flags| {
                interrupted |= flags & NLM_F_DUMP_INTR != 0;
                out.push(m.to_vec());
            })? {
                Reply::Done if !interrupted => return Ok(out),
                Reply::Done => continue,
                Reply::Failed(e) => return Err(e),
            }
        }
        Err(KernelError::Protocol {
            op: op.to_string(),
            detail: "dump kept being interrupted".into(),
        })
    }

    fn exchange(
        &mut self,
        msg: MessageBuilder,
        op: &str,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<()> {
        let seq = self.next_seq();
        self.send(&msg.with_ack().finish(seq), op)?;
        match self.collect(seq, op, &mut |m, _| sink(m))? {
            Reply::Done => Ok(()),
            Reply::Failed(e) => Err(e),
        }
    }

    /// Sends several messages as one buffer (an nf_tables batch) and checks the outcome.
    ///
    /// `msgs` starts and ends with the batch delimiters. Only the last message
    /// inside the batch asks for an ack: the kernel processes a whole batch
    /// and reports every failing message anyway, and then acks the last one,
    /// so a large batch (thousands of set-element messages) costs one answer
    /// instead of one per message. The first error of the batch wins. When the
    /// batch header itself is refused, that error is the only answer.
    pub fn batch(&mut self, msgs: Vec<MessageBuilder>, op: &str) -> Result<()> {
        let count = msgs.len();
        let (bytes, first, last_acked) = self.batch_bytes(msgs);
        self.grow_send_buffer(bytes.len());
        self.send(&bytes, op)?;
        let mut first_error = None;
        loop {
            let n = self.recv(op)?;
            let mut finished = false;
            for m in codec::messages(&self.buf[..n]) {
                if m.msg_type != NLMSG_ERROR || m.seq < first || m.seq > last_acked {
                    continue; // a late answer to an earlier request
                }
                let at = format!("{op} (message {} of {count})", m.seq - first);
                if let Reply::Failed(e) = decode_error(m.payload, m.flags, &at) {
                    first_error.get_or_insert(e);
                }
                finished |= m.seq == last_acked || m.seq == first;
            }
            if finished {
                break;
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The bytes of a batch, asking for one ack (the message before the end
    /// marker); returns them with the first sequence number and the acked one.
    fn batch_bytes(&mut self, msgs: Vec<MessageBuilder>) -> (Vec<u8>, u32, u32) {
        let mut bytes = Vec::new();
        let count = msgs.len();
        let first = self.seq.wrapping_add(1).max(1);
        let mut last_acked = first;
        for (i, msg) in msgs.into_iter().enumerate() {
            let seq = self.next_seq();
            let msg = if i + 2 == count && i != 0 {
                last_acked = seq;
                msg.with_ack()
            } else {
                msg
            };
            bytes.extend_from_slice(&msg.finish(seq));
        }
        (bytes, first, last_acked)
    }

    /// Raises the send buffer so that one batch of `bytes` fits in a single
    /// `send` (the kernel takes a batch as one message). Needs `CAP_NET_ADMIN`
    /// for sizes above the system maximum, which podnet has where it programs
    /// nf_tables; failure only means large batches fail with `EMSGSIZE`.
    fn grow_send_buffer(&self, bytes: usize) {
        if bytes < 200 * 1024 {
            return;
        }
        let size = (bytes + 64 * 1024).min(i32::MAX as usize) as libc::c_int;
        // SAFETY: setsockopt with a valid fd and a pointer to a c_int.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }

    /// Reads answers for `seq` until its ack, error or end of dump.
    fn collect(&mut self, seq: u32, op: &str, sink: &mut dyn FnMut(&[u8], u16)) -> Result<Reply> {
        loop {
            let n = self.recv(op)?;
            let buf = std::mem::take(&mut self.buf);
            let mut outcome = None;
            for m in codec::messages(&buf[..n]) {
                if m.seq != seq {
                    continue; // a late answer to an earlier request
                }
                match m.msg_type {
                    NLMSG_ERROR => {
                        outcome = Some(decode_error(m.payload, m.flags, op));
                        break;
                    }
                    NLMSG_DONE => {
                        outcome = Some(Reply::Done);
                        break;
                    }
                    _ => sink(m.payload, m.flags),
                }
            }
            self.buf = buf;
            if let Some(o) = outcome {
                return Ok(o);
            }
        }
    }
}

/// In a forked child: reads answers until the ack for `seq`; true when it reports success.
///
/// # Safety
/// `fd` must be a valid netlink socket. Only `recv` is called, and the parsing
/// borrows `buf` without allocating, so this is fit for a child after `fork`.
unsafe fn child_ack_ok(fd: libc::c_int, seq: u32, buf: &mut [u8]) -> bool {
    loop {
        let n = libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0);
        if n < 0 {
            return false;
        }
        let ack =
            codec::messages(&buf[..n as usize]).find(|m| m.seq == seq && m.msg_type == NLMSG_ERROR);
        if let Some(m) = ack {
            return m.payload.get(0..4).is_some_and(|e| e == [0, 0, 0, 0]);
        }
    }
}

fn decode_error(payload: &[u8], flags: u16, op: &str) -> Reply {
    let errno = payload
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .unwrap_or(-libc::EIO);
    if errno == 0 {
        return Reply::Done;
    }
    // With NETLINK_CAP_ACK the echoed request is only its 16-byte header.
    let extack = if flags & NLM_F_ACK_TLVS != 0 {
        payload
            .get(4 + NLMSG_HDRLEN..)
            .and_then(|tlvs| codec::find_attr(tlvs, NLMSGERR_ATTR_MSG))
            .map(codec::attr_string)
    } else {
        None
    };
    Reply::Failed(KernelError::Netlink {
        op: op.to_string(),
        errno: -errno,
        extack,
    })
}

/// A request running in a forked child ([`NetlinkSocket::request_in_child`]).
/// The child is always reaped: by [`ChildRequest::finished`], or on drop by
/// a thread that waits for it, so no zombie is left in a long-lived process.
#[derive(Debug)]
pub struct ChildRequest {
    pid: libc::pid_t,
    reaped: bool,
}

impl ChildRequest {
    /// `Some(true)` when the child exited having got the kernel's
    /// acknowledgement, `Some(false)` when it failed, `None` while it runs.
    pub fn finished(&mut self) -> Option<bool> {
        if self.reaped {
            return None;
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child, not yet reaped, without blocking.
        if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } != self.pid {
            return None;
        }
        self.reaped = true;
        Some(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0)
    }
}

impl Drop for ChildRequest {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.pid;
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: waitpid on our own child, which nothing else reaps.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        });
    }
}
