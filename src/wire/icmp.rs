//! ICMP (for IPv4) message view (RFC 792).
//!
//! Layer: `wire`. [`Packet::new_checked`] requires the 8-byte header every ICMP
//! message has (type, code, checksum, 4 bytes of rest-of-header). Getters are then
//! infallible. The view's buffer must be the whole message (the IP payload) for
//! the checksum helpers.

use super::checksum;
use super::{Error, Result, get16, put16};

/// Header length (type, code, checksum, rest-of-header).
pub const HEADER_LEN: usize = 8;

/// Message types used here.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DST_UNREACH: u8 = 3;
    /// Source quench.
    pub const SOURCE_QUENCH: u8 = 4;
    /// Redirect.
    pub const REDIRECT: u8 = 5;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
}

/// A view of an ICMP message.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps `buffer` after checking it holds the 8-byte header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Identifier (echo request/reply).
    #[inline]
    pub fn ident(&self) -> u16 {
        get16(self.buffer.as_ref(), field::IDENT)
    }

    /// Sequence number (echo request/reply).
    #[inline]
    pub fn seq_no(&self) -> u16 {
        get16(self.buffer.as_ref(), field::SEQ)
    }

    /// True for echo request and echo reply.
    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(
            self.msg_type(),
            msg_type::ECHO_REQUEST | msg_type::ECHO_REPLY
        )
    }

    /// True for error messages that quote a packet (types 3, 4, 5, 11, 12).
    #[inline]
    pub fn is_error(&self) -> bool {
        use msg_type::*;
        matches!(
            self.msg_type(),
            DST_UNREACH | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM
        )
    }

    /// Bytes after the 8-byte header: the quoted packet for error messages.
    #[inline]
    pub fn quoted(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True when the checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the type (no checksum update).
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the code (no checksum update).
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the identifier; checksum updated incrementally.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        let ck = checksum::update16(self.checksum(), self.ident(), v);
        put16(self.buffer.as_mut(), field::IDENT, v);
        self.set_checksum(ck);
    }

    /// Sets the sequence number (no checksum update).
    #[inline]
    pub fn set_seq_no(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Recomputes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Packet, hex, scapy, to_hex};

    // IP(src="10.0.0.1", dst="10.0.0.2")/ICMP(type=8, id=0x4242, seq=7)/Raw(b"ping")
    const ECHO: &str = "4500002000010000400166da0a0000010a0000020800d6e54242000770696e67";
    // IP(src="10.0.0.254", dst="10.0.0.1")/ICMP(type=3, code=3)
    //   /IP(src="10.0.0.1", dst="10.0.0.2")/UDP(sport=5000, dport=53)
    const ERR: &str = "4500003800010000400165c60a0000fe0a00000103031119000000004500001c00010000401166ce0a0000010a000002138800350008d81e";

    #[test]
    fn echo() {
        let b = hex(ECHO);
        let ip = Ipv4Packet::new_checked(&b[..]).unwrap();
        let i = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((i.msg_type(), i.code()), (8, 0));
        assert_eq!((i.ident(), i.seq_no()), (0x4242, 7));
        assert!(i.is_echo() && !i.is_error());
        assert!(i.verify_checksum());
    }

    #[test]
    fn error_quotes_packet() {
        let b = hex(ERR);
        let ip = Ipv4Packet::new_checked(&b[..]).unwrap();
        let i = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((i.msg_type(), i.code()), (3, 3));
        assert!(i.is_error());
        assert!(i.verify_checksum());
        let q = Ipv4Packet::new_checked(i.quoted()).unwrap();
        assert_eq!(q.src_addr(), [10, 0, 0, 1]);
        assert_eq!(q.dst_addr(), [10, 0, 0, 2]);
        assert_eq!(q.proto(), 17);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Packet::new_checked(&[8u8, 0, 0, 0, 0, 0, 0][..]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn set_ident_incremental() {
        let mut b = hex(ECHO);
        {
            let mut ip = Ipv4Packet::new_checked(&mut b[..]).unwrap();
            let mut i = Packet::new_checked(ip.payload_mut()).unwrap();
            i.set_ident(0x1111);
            assert!(i.verify_checksum());
            let inc = i.checksum();
            i.set_seq_no(7);
            i.fill_checksum();
            assert_eq!(i.checksum(), inc);
        }
        let h = to_hex(&b);
        if let Some(out) = scapy(&format!(
            "p=IP(bytes.fromhex('{h}'))\nc=p[ICMP].chksum\ndel p[ICMP].chksum\n\
             q=IP(raw(p))\nprint(c==q[ICMP].chksum, q[ICMP].id)"
        )) {
            assert_eq!(out, format!("True {}", 0x1111));
        }
    }
}
