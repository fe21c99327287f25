//! TCP header view (RFC 9293).
//!
//! Layer: `wire`. [`Packet::new_checked`] requires 20 bytes (else `Truncated`), a data
//! offset >= 5 (else `Malformed`) and the whole header (options) within the buffer
//! (else `Truncated`). Getters are then infallible.
//!
//! Checksums take the pseudo-header sum from `wire::checksum::pseudo_v4`/`pseudo_v6`
//! (or `ipv4::Packet::pseudo_sum`); the view's buffer must be exactly the segment
//! (the IP payload). [`Packet::set_src_port`], [`Packet::set_dst_port`] and
//! [`Packet::update_for_addr`] keep the checksum valid incrementally (RFC 1624).

use super::checksum;
use super::{Error, Result, get16, get32, put16, put32};

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;

/// TCP flag bits (the low byte of the flags field).
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// A view of a TCP segment.
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

    /// Wraps `buffer` after checking the header (see module docs).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[field::OFF] >> 4) * 4;
        if hl < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if hl > b.len() {
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        get32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        get32(self.buffer.as_ref(), field::ACK)
    }

    /// Data offset in 32-bit words.
    #[inline]
    pub fn data_offset(&self) -> u8 {
        self.buffer.as_ref()[field::OFF] >> 4
    }

    /// Header length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.data_offset()) * 4
    }

    /// Flags byte (CWR ECE URG ACK PSH RST SYN FIN), see [`flags`].
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Window.
    #[inline]
    pub fn window(&self) -> u16 {
        get16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent(&self) -> u16 {
        get16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options (bytes 20..header length).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// Payload (bytes after the header).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// True when the checksum over pseudo header (`pseudo`) and segment is correct.
    #[inline]
    pub fn verify_checksum(&self, pseudo: u64) -> bool {
        checksum::fold(checksum::add(pseudo, self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Recomputes the checksum over the pseudo header sum `pseudo` and the segment.
    pub fn fill_checksum(&mut self, pseudo: u64) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::add(pseudo, self.buffer.as_ref()));
        self.set_checksum(c);
    }

    /// Sets the source port; checksum updated incrementally.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        let ck = checksum::update16(self.checksum(), self.src_port(), v);
        put16(self.buffer.as_mut(), field::SRC_PORT, v);
        self.set_checksum(ck);
    }

    /// Sets the destination port; checksum updated incrementally.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        let ck = checksum::update16(self.checksum(), self.dst_port(), v);
        put16(self.buffer.as_mut(), field::DST_PORT, v);
        self.set_checksum(ck);
    }

    /// Fixes the checksum after an address in the pseudo header changed from `old`
    /// to `new` (4 or 16 bytes each, same length).
    #[inline]
    pub fn update_for_addr(&mut self, old: &[u8], new: &[u8]) {
        let ck = checksum::update_bytes(self.checksum(), old, new);
        self.set_checksum(ck);
    }

    /// Sets the sequence number (no checksum update).
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets the acknowledgment number (no checksum update).
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        put32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Sets the data offset in words (no checksum update).
    #[inline]
    pub fn set_data_offset(&mut self, words: u8) {
        let b = self.buffer.as_mut();
        b[field::OFF] = (words << 4) | (b[field::OFF] & 0x0f);
    }

    /// Sets the flags byte (no checksum update).
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// Sets the window (no checksum update).
    #[inline]
    pub fn set_window(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Packet, Ipv6Packet, hex, scapy, to_hex};

    // IP(src="10.0.0.1", dst="10.0.0.2")/TCP(sport=12345, dport=80, seq=0x01020304,
    //   ack=0x0a0b0c0d, flags="PA", window=8192, options=[("MSS",1460)])/Raw(b"GET /")
    const PKT: &str = "4500003100010000400666c40a0000010a00000230390050010203040a0b0c0d601820004efc0000020405b4474554202f";
    // IPv6(src="2001:db8::1", dst="2001:db8::2")/TCP(sport=12345, dport=80, flags="S")
    const PKT6: &str = "600000000014064020010db800000000000000000000000120010db80000000000000000000000023039005000000000000000005002200003e50000";

    #[test]
    fn deconstruct() {
        let b = hex(PKT);
        let ip = Ipv4Packet::new_checked(&b[..]).unwrap();
        let t = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (12345, 80));
        assert_eq!(t.seq_number(), 0x01020304);
        assert_eq!(t.ack_number(), 0x0a0b0c0d);
        assert_eq!(t.data_offset(), 6);
        assert_eq!(t.flags(), flags::PSH | flags::ACK);
        assert_eq!(t.window(), 8192);
        assert_eq!(t.checksum(), 0x4efc);
        assert_eq!(t.urgent(), 0);
        assert_eq!(t.options(), &[2, 4, 0x05, 0xb4]);
        assert_eq!(t.payload(), b"GET /");
        assert!(t.verify_checksum(ip.pseudo_sum(ip.payload().len() as u16)));
    }

    #[test]
    fn v6_checksum() {
        let b = hex(PKT6);
        let ip = Ipv6Packet::new_checked(&b[..]).unwrap();
        let t = Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(t.flags(), flags::SYN);
        let ps = ip.pseudo_sum(6, ip.payload().len() as u32);
        assert!(t.verify_checksum(ps));
        assert!(!t.verify_checksum(ps + 1));
        let mut seg = ip.payload().to_vec();
        let mut t = Packet::new_checked(&mut seg[..]).unwrap();
        t.set_checksum(0);
        t.fill_checksum(ps);
        assert_eq!(t.checksum(), 0x03e5);
    }

    #[test]
    fn checks() {
        let b = hex(PKT);
        let seg = &b[20..];
        for n in 0..24 {
            assert_eq!(Packet::new_checked(&seg[..n]).err(), Some(Error::Truncated));
        }
        let mut v = seg.to_vec();
        v[12] = 0x40;
        assert_eq!(Packet::new_checked(&v[..]).err(), Some(Error::Malformed));
    }

    #[test]
    fn incremental_nat_rewrite() {
        let mut b = hex(PKT);
        let (old_dst, new_dst) = ([10, 0, 0, 2], [192, 0, 2, 77]);
        {
            let mut ip = Ipv4Packet::new_checked(&mut b[..]).unwrap();
            ip.set_dst_addr(new_dst);
            let mut t = Packet::new_checked(ip.payload_mut()).unwrap();
            t.set_dst_port(8080);
            t.set_src_port(1);
            t.update_for_addr(&old_dst, &new_dst);
        }
        let ip = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(ip.verify_checksum());
        let t = Packet::new_checked(ip.payload()).unwrap();
        let ps = ip.pseudo_sum(ip.payload().len() as u16);
        assert!(t.verify_checksum(ps));
        let inc = t.checksum();
        let mut seg = ip.payload().to_vec();
        let mut t2 = Packet::new_checked(&mut seg[..]).unwrap();
        t2.fill_checksum(ps);
        assert_eq!(t2.checksum(), inc);
        let h = to_hex(&b);
        if let Some(out) = scapy(&format!(
            "p=IP(bytes.fromhex('{h}'))\nc=p[TCP].chksum\ndel p[TCP].chksum\n\
             q=IP(raw(p))\nprint(c==q[TCP].chksum, q.dst, q[TCP].sport, q[TCP].dport)"
        )) {
            assert_eq!(out, "True 192.0.2.77 1 8080");
        }
    }

    #[test]
    fn raw_setters_round_trip() {
        let mut b = hex(PKT);
        let mut t = Packet::new_checked(&mut b[20..]).unwrap();
        t.set_seq_number(7);
        t.set_ack_number(8);
        t.set_flags(flags::FIN);
        t.set_window(9);
        assert_eq!(
            (t.seq_number(), t.ack_number(), t.flags(), t.window()),
            (7, 8, 1, 9)
        );
        t.set_seq_number(0x01020304);
        t.set_ack_number(0x0a0b0c0d);
        t.set_flags(0x18);
        t.set_window(8192);
        t.set_data_offset(6);
        assert_eq!(b, hex(PKT));
    }
}
