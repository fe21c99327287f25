//! UDP header view (RFC 768).
//!
//! Layer: `wire`. [`Packet::new_checked`] requires 8 bytes, a length field >= 8
//! (else `Malformed`) and the length within the buffer (else `Truncated`). Getters
//! are then infallible; [`Packet::payload`] ends at the length field.
//!
//! A checksum field of 0 means "no checksum" over IPv4 ([`Packet::has_checksum`]);
//! [`Packet::verify_checksum`] does the arithmetic only, so check that first. Over
//! IPv6 a zero checksum is invalid. Incremental setters leave a zero checksum zero.

use super::checksum;
use super::{Error, Result, get16, put16};

/// Header length.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram.
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

    /// Wraps `buffer` after checking the header and length field.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(get16(b, field::LENGTH));
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header + payload).
    #[inline]
    pub fn len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// False when the checksum field is 0 (no checksum, IPv4 only).
    #[inline]
    pub fn has_checksum(&self) -> bool {
        self.checksum() != 0
    }

    /// The datagram as the length field bounds it (clamped to the buffer).
    #[inline]
    fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..usize::from(self.len()).min(b.len())]
    }

    /// Payload: bytes 8..length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }

    /// True when the checksum over pseudo header and datagram is correct.
    #[inline]
    pub fn verify_checksum(&self, pseudo: u64) -> bool {
        checksum::fold(checksum::add(pseudo, self.datagram())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the length field (no checksum update).
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Recomputes the checksum (a computed 0 is sent as 0xffff).
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::add(pseudo, self.datagram()));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    #[inline]
    fn fix(&mut self, ck: u16) {
        if self.has_checksum() {
            self.set_checksum(if ck == 0 { 0xffff } else { ck });
        }
    }

    /// Sets the source port; checksum (if any) updated incrementally.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        let ck = checksum::update16(self.checksum(), self.src_port(), v);
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
        self.fix(ck);
    }

    /// Sets the destination port; checksum (if any) updated incrementally.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        let ck = checksum::update16(self.checksum(), self.dst_port(), v);
        put16(self.buffer.as_mut(), field::DST_PORT, v);
        self.fix(ck);
    }

    /// Fixes the checksum (if any) after a pseudo-header address changed.
    #[inline]
    pub fn update_for_addr(&mut self, old: &[u8], new: &[u8]) {
        let ck = checksum::update_bytes(self.checksum(), old, new);
        self.fix(ck);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Packet, Ipv6Packet, hex, scapy, to_hex};

    // IP(src="10.0.0.1", dst="10.0.0.2")/UDP(sport=5000, dport=53)/Raw(b"abcde")
    const PKT: &str = "4500002100010000401166c90a0000010a00000213880035000dae4d6162636465";
    // IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0xb9, fl=0x12345, hlim=17)
    //   /UDP(sport=5353, dport=53)/Raw(b"hello")
    const PKT6: &str = "6b912345000d111120010db800000000000000000000000120010db800000000000000000000000214e90035000d4b6f68656c6c6f";

    #[test]
    fn deconstruct() {
        let b = hex(PKT);
        let ip = Ipv4Packet::new_checked(&b[..]).unwrap();
        let u = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (5000, 53, 13));
        assert_eq!(u.checksum(), 0xae4d);
        assert_eq!(u.payload(), b"abcde");
        assert!(u.verify_checksum(ip.pseudo_sum(13)));
        let b6 = hex(PKT6);
        let ip6 = Ipv6Packet::new_checked(&b6[..]).unwrap();
        let u6 = Packet::new_checked(ip6.payload()).unwrap();
        assert_eq!((u6.src_port(), u6.dst_port()), (5353, 53));
        assert!(u6.verify_checksum(ip6.pseudo_sum(17, 13)));
    }

    #[test]
    fn checks() {
        let b = hex(PKT);
        let d = &b[20..];
        for n in 0..d.len() {
            assert_eq!(Packet::new_checked(&d[..n]).err(), Some(Error::Truncated));
        }
        let mut v = d.to_vec();
        v[5] = 7;
        assert_eq!(Packet::new_checked(&v[..]).err(), Some(Error::Malformed));
        // trailing bytes past the length are not payload
        let mut v = d.to_vec();
        v.push(0xee);
        assert_eq!(Packet::new_checked(&v[..]).unwrap().payload(), b"abcde");
    }

    #[test]
    fn incremental_rewrite() {
        let mut b = hex(PKT);
        let (old, new) = ([10, 0, 0, 1], [198, 51, 100, 9]);
        {
            let mut ip = Ipv4Packet::new_checked(&mut b[..]).unwrap();
            ip.set_src_addr(new);
            let mut u = Packet::new_checked(ip.payload_mut()).unwrap();
            u.update_for_addr(&old, &new);
            u.set_src_port(40000);
            u.set_dst_port(5353);
        }
        let ip = Ipv4Packet::new_checked(&b[..]).unwrap();
        let u = Packet::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(ip.pseudo_sum(13)));
        let inc = u.checksum();
        let mut d = ip.payload().to_vec();
        let mut u2 = Packet::new_checked(&mut d[..]).unwrap();
        u2.fill_checksum(ip.pseudo_sum(13));
        assert_eq!(u2.checksum(), inc);
        let h = to_hex(&b);
        if let Some(out) = scapy(&format!(
            "p=IP(bytes.fromhex('{h}'))\nc=p[UDP].chksum\ndel p[UDP].chksum\n\
             q=IP(raw(p))\nprint(c==q[UDP].chksum, q.src, q[UDP].sport, q[UDP].dport)"
        )) {
            assert_eq!(out, "True 198.51.100.9 40000 5353");
        }
    }

    #[test]
    fn zero_checksum_stays_zero() {
        let mut b = hex(PKT);
        b[26] = 0;
        b[27] = 0;
        let mut u = Packet::new_checked(&mut b[20..]).unwrap();
        assert!(!u.has_checksum());
        u.set_dst_port(1);
        u.update_for_addr(&[1, 2, 3, 4], &[5, 6, 7, 8]);
        assert_eq!(u.checksum(), 0);
        u.set_len(13);
        assert_eq!(u.len(), 13);
    }
}
