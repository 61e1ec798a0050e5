//! Netlink message encoding and decoding: one TLV codec shared by rtnetlink and nf_tables.
//!
//! Why our own codec: nf_tables has no maintained pure-Rust encoder, and the
//! handful of rtnetlink messages podnet sends are simpler to encode directly
//! than to express through a crate whose types change every release. Every
//! message is `nlmsghdr` + a fixed family header + attributes, 4-byte aligned.

/// Flag set on nested attributes (`NLA_F_NESTED`).
pub const NLA_F_NESTED: u16 = 0x8000;
/// Mask that strips the nested/byte-order flags from an attribute type.
pub const NLA_TYPE_MASK: u16 = 0x3fff;
/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;

/// Rounds `len` up to the netlink alignment of 4 bytes.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Builds one netlink message: header, family header, then attributes.
#[derive(Debug, Clone)]
pub struct MessageBuilder {
    buf: Vec<u8>,
}

impl MessageBuilder {
    /// Starts a message of `msg_type` with `flags` (`NLM_F_REQUEST` is added).
    pub fn new(msg_type: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, set by the socket
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        MessageBuilder { buf }
    }

    /// Appends a fixed family header (`ifinfomsg`, `rtmsg`, `nfgenmsg`, ...).
    pub fn header(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn pad(&mut self) {
        let target = align(self.buf.len());
        self.buf.resize(target, 0);
    }

    /// Appends an attribute with a raw payload.
    pub fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    /// Appends a NUL-terminated string attribute.
    pub fn attr_str(&mut self, ty: u16, value: &str) -> &mut Self {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.attr(ty, &bytes)
    }

    /// Appends a native-endian u32 attribute (rtnetlink convention).
    pub fn attr_u32(&mut self, ty: u16, value: u32) -> &mut Self {
        self.attr(ty, &value.to_ne_bytes())
    }

    /// Appends a big-endian u32 attribute (nf_tables convention).
    pub fn attr_u32_be(&mut self, ty: u16, value: u32) -> &mut Self {
        self.attr(ty, &value.to_be_bytes())
    }

    /// Opens a nested attribute; close it with [`MessageBuilder::end_nested`].
    pub fn begin_nested(&mut self, ty: u16) -> usize {
        let start = self.buf.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        start
    }

    /// Closes the nested attribute opened at `start`, fixing its length.
    pub fn end_nested(&mut self, start: usize) -> &mut Self {
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Bytes written so far (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when nothing was written (never: the header is always there).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends raw bytes inside the current attribute (for nested fixed headers).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    /// Asks the kernel to acknowledge this message (`NLM_F_ACK`), so success is confirmed, not assumed.
    pub fn with_ack(mut self) -> Self {
        let flags = u16::from_ne_bytes([self.buf[6], self.buf[7]]) | libc::NLM_F_ACK as u16;
        self.buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        self
    }

    /// Finishes the message with sequence number `seq`.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One decoded netlink message: its header fields and payload.
#[derive(Debug, Clone, Copy)]
pub struct RawMessage<'a> {
    /// `nlmsg_type`.
    pub msg_type: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub payload: &'a [u8],
}

/// Splits a receive buffer into netlink messages; stops at a malformed one.
pub fn messages(mut buf: &[u8]) -> impl Iterator<Item = RawMessage<'_>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg = RawMessage {
            msg_type: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[align(len).min(buf.len())..];
        Some(msg)
    })
}

/// Iterates the attributes in `buf` as `(type without flags, payload)`.
pub fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((ty, payload))
    })
}

/// Finds the first attribute of type `ty`.
pub fn find_attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// Decodes a NUL-terminated string attribute payload.
pub fn attr_string(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// Decodes a native-endian u32 attribute payload.
pub fn attr_u32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_aligns_and_nests() {
        let mut b = MessageBuilder::new(16, 0).header(&[1, 2, 3]);
        let n = b.begin_nested(18);
        b.attr_str(1, "veth");
        b.end_nested(n);
        let bytes = b.finish(7);
        assert_eq!(bytes.len() % 4, 0);
        let msg = messages(&bytes).next().expect("one message");
        assert_eq!(msg.seq, 7);
        assert_eq!(msg.msg_type, 16);
        let attrs_area = &msg.payload[4..];
        let (ty, nested) = attrs(attrs_area).next().expect("nested attr");
        assert_eq!(ty, 18);
        let kind = find_attr(nested, 1).expect("kind");
        assert_eq!(attr_string(kind), "veth");
    }

    #[test]
    fn malformed_buffers_end_iteration() {
        assert_eq!(messages(&[1, 2, 3]).count(), 0);
        assert_eq!(attrs(&[200, 0, 1, 0, 9]).count(), 0);
    }
}
