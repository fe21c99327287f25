//! ICMPv6 message view (RFC 4443) with Neighbor Discovery (RFC 4861) helpers.
//!
//! Layer: `wire`. [`Packet::new_checked`] requires the 8-byte header. Getters are then
//! infallible; the ND accessors return `None` when the message is too short for them.
//! The checksum covers the IPv6 pseudo header (next header 58): pass its sum from
//! `wire::checksum::pseudo_v6` or `ipv6::Packet::pseudo_sum`. The view's buffer must
//! be the whole message.

use super::checksum;
use super::{Error, Result, get16, put16};

/// Header length (type, code, checksum, 4 bytes).
pub const HEADER_LEN: usize = 8;
/// Length of a Neighbor Solicitation/Advertisement without options.
pub const ND_LEN: usize = 24;
/// Length of a source/target link-layer address option for Ethernet.
pub const LLADDR_OPT_LEN: usize = 8;

/// Message types used here.
pub mod msg_type {
    /// Destination unreachable.
    pub const DST_UNREACH: u8 = 1;
    /// Packet too big.
    pub const PKT_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Neighbor Solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor Advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
}

/// ND option types.
pub mod nd_option {
    /// Source link-layer address.
    pub const SOURCE_LLADDR: u8 = 1;
    /// Target link-layer address.
    pub const TARGET_LLADDR: u8 = 2;
}

/// Neighbor Advertisement flag bits (byte 4).
pub mod na_flags {
    /// Router.
    pub const ROUTER: u8 = 0x80;
    /// Solicited.
    pub const SOLICITED: u8 = 0x40;
    /// Override.
    pub const OVERRIDE: u8 = 0x20;
}

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const IDENT: usize = 4;
    pub const SEQ: usize = 6;
    pub const NA_FLAGS: usize = 4;
    pub const TARGET: Range<usize> = 8..24;
}

/// A view of an ICMPv6 message.
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

    /// True for the error messages that quote a packet (types 1 to 4).
    #[inline]
    pub fn is_error(&self) -> bool {
        (1..=4).contains(&self.msg_type())
    }

    /// Bytes after the 8-byte header: the quoted packet for error messages.
    #[inline]
    pub fn quoted(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// NS/NA target address, when the message is long enough to hold one.
    #[inline]
    pub fn target_addr(&self) -> Option<[u8; 16]> {
        let t = self.buffer.as_ref().get(field::TARGET)?;
        let mut a = [0; 16];
        a.copy_from_slice(t);
        Some(a)
    }

    /// NA flags byte (router, solicited, override in the top bits).
    #[inline]
    pub fn na_flags(&self) -> u8 {
        self.buffer.as_ref()[field::NA_FLAGS]
    }

    /// The ND options of an NS/NA (bytes 24..), empty when shorter.
    #[inline]
    pub fn nd_options(&self) -> &[u8] {
        self.buffer.as_ref().get(ND_LEN..).unwrap_or(&[])
    }

    /// True when every ND option has a non-zero length and fits (RFC 4861 §4.6).
    pub fn nd_options_valid(&self) -> bool {
        let mut o = self.nd_options();
        while !o.is_empty() {
            let len = usize::from(*o.get(1).unwrap_or(&0)) * 8;
            if len == 0 || len > o.len() {
                return false;
            }
            o = &o[len..];
        }
        true
    }

    /// The Ethernet address carried in the first ND option of type `kind`
    /// ([`nd_option::SOURCE_LLADDR`] or [`nd_option::TARGET_LLADDR`]), if present
    /// and well formed.
    pub fn nd_lladdr(&self, kind: u8) -> Option<[u8; 6]> {
        let mut o = self.nd_options();
        while o.len() >= 2 {
            let len = usize::from(o[1]) * 8;
            if len == 0 || len > o.len() {
                return None;
            }
            if o[0] == kind {
                let mut a = [0; 6];
                a.copy_from_slice(o.get(2..8)?);
                return Some(a);
            }
            o = &o[len..];
        }
        None
    }

    /// True when the checksum over pseudo header sum `pseudo` and message is correct.
    #[inline]
    pub fn verify_checksum(&self, pseudo: u64) -> bool {
        checksum::fold(checksum::add(pseudo, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the identifier (no checksum update).
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets the sequence number (no checksum update).
    #[inline]
    pub fn set_seq_no(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets the NA flags byte and clears the 3 reserved bytes after it.
    #[inline]
    pub fn set_na_flags(&mut self, flags: u8) {
        let b = self.buffer.as_mut();
        b[field::NA_FLAGS] = flags;
        b[5..8].fill(0);
    }

    /// Sets the NS/NA target address.
    ///
    /// # Panics
    /// If the buffer is shorter than 24 bytes.
    #[inline]
    pub fn set_target_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::TARGET].copy_from_slice(&a);
    }

    /// Writes an 8-byte link-layer address option of type `kind` at offset 24 (the
    /// first option). Returns false (writing nothing) if the buffer is too short.
    pub fn set_first_lladdr_option(&mut self, kind: u8, mac: [u8; 6]) -> bool {
        match self
            .buffer
            .as_mut()
            .get_mut(ND_LEN..ND_LEN + LLADDR_OPT_LEN)
        {
            Some(o) => {
                o[0] = kind;
                o[1] = 1;
                o[2..8].copy_from_slice(&mac);
                true
            }
            None => false,
        }
    }

    /// Recomputes the checksum over pseudo header sum `pseudo` and the message.
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::add(pseudo, self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv6Packet, hex};

    // IPv6(src="2001:db8::1", dst="2001:db8::2")/ICMPv6EchoRequest(id=0x4243, seq=9,
    //   data=b"ping")
    const ECHO: &str = "60000000000c3a4020010db800000000000000000000000120010db8000000000000000000000002800003274243000970696e67";
    // IPv6(src="2001:db8::1", dst="ff02::1:ff00:2", hlim=255)/ICMPv6ND_NS(tgt="2001:db8::2")
    //   /ICMPv6NDOptSrcLLAddr(lladdr="66:77:88:99:aa:bb")
    const NS: &str = "6000000000203aff20010db8000000000000000000000001ff0200000000000000000001ff0000028700845b0000000020010db8000000000000000000000002010166778899aabb";
    // IPv6(src="2001:db8::2", dst="2001:db8::1", hlim=255)/ICMPv6ND_NA(tgt="2001:db8::2",
    //   R=0, S=1, O=1)/ICMPv6NDOptDstLLAddr(lladdr="00:11:22:33:44:55")
    const NA: &str = "6000000000203aff20010db800000000000000000000000220010db80000000000000000000000018800\
                      25da6000000020010db80000000000000000000000020201001122334455";
    // IPv6(src="2001:db8::fe", dst="2001:db8::1")/ICMPv6DestUnreach(code=4)
    //   /IPv6(src="2001:db8::1", dst="2001:db8::2")/UDP(sport=5000, dport=53)
    const ERR: &str = "6000000000383a4020010db80000000000000000000000fe20010db8000000000000000000000001010430e900000000600000000008114020010db800000000000000000000000120010db800000000000000000000000213880035000890ac";

    const A2: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn parts(h: &str) -> (Vec<u8>, u64) {
        let b = hex(h);
        let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
        let ps = ip.pseudo_sum(58, ip.payload().len() as u32);
        (b[40..].to_vec(), ps)
    }

    #[test]
    fn echo() {
        let (m, ps) = parts(ECHO);
        let p = Packet::new_checked(&m[..]).unwrap();
        assert_eq!(
            (p.msg_type(), p.code(), p.ident(), p.seq_no()),
            (128, 0, 0x4243, 9)
        );
        assert!(p.is_echo() && !p.is_error());
        assert!(p.verify_checksum(ps));
        assert!(!p.verify_checksum(ps + 1));
    }

    #[test]
    fn neighbor_solicitation() {
        let (m, ps) = parts(NS);
        let p = Packet::new_checked(&m[..]).unwrap();
        assert_eq!(p.msg_type(), msg_type::NEIGHBOR_SOLICIT);
        assert_eq!(p.target_addr(), Some(A2));
        assert!(p.nd_options_valid());
        assert_eq!(
            p.nd_lladdr(nd_option::SOURCE_LLADDR),
            Some([0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb])
        );
        assert_eq!(p.nd_lladdr(nd_option::TARGET_LLADDR), None);
        assert!(p.verify_checksum(ps));
        let mut bad = m.clone();
        bad[25] = 0; // option length 0
        assert!(!Packet::new_checked(&bad[..]).unwrap().nd_options_valid());
        assert_eq!(Packet::new_checked(&bad[..]).unwrap().nd_lladdr(1), None);
        assert_eq!(Packet::new_checked(&m[..20]).unwrap().target_addr(), None);
    }

    #[test]
    fn neighbor_advertisement_construct() {
        let (m, ps) = parts(NA);
        let p = Packet::new_checked(&m[..]).unwrap();
        assert_eq!(p.na_flags(), na_flags::SOLICITED | na_flags::OVERRIDE);
        assert_eq!(
            p.nd_lladdr(nd_option::TARGET_LLADDR),
            Some([0, 0x11, 0x22, 0x33, 0x44, 0x55])
        );
        assert!(p.verify_checksum(ps));
        let mut out = [0xaau8; 32];
        let mut q = Packet::new_unchecked(&mut out[..]);
        q.set_msg_type(136);
        q.set_code(0);
        q.set_na_flags(na_flags::SOLICITED | na_flags::OVERRIDE);
        q.set_target_addr(A2);
        assert!(q.set_first_lladdr_option(2, [0, 0x11, 0x22, 0x33, 0x44, 0x55]));
        q.fill_checksum(ps);
        assert_eq!(&out[..], &m[..]);
    }

    #[test]
    fn error_quotes_ipv6() {
        let (m, ps) = parts(ERR);
        let p = Packet::new_checked(&m[..]).unwrap();
        assert_eq!((p.msg_type(), p.code()), (1, 4));
        assert!(p.is_error());
        assert!(p.verify_checksum(ps));
        let q = Ipv6Packet::new_checked(p.quoted()).unwrap();
        assert_eq!(q.dst_addr(), A2);
        assert_eq!(q.next_header(), 17);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Packet::new_checked(&[0u8; 7][..]).err(),
            Some(Error::Truncated)
        );
    }
}
