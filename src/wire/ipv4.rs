//! IPv4 header view (RFC 791).
//!
//! Layer: `wire`. [`Packet::new_checked`] requires: 20 bytes, version 4, IHL >= 5,
//! total length >= IHL*4 (else `Malformed`), and the header and total length within
//! the buffer (else `Truncated`). [`Packet::new_checked_header`] checks only the
//! header (for quoted packets inside ICMP errors, whose total length exceeds what
//! was quoted). After either, no getter panics; [`Packet::payload`] is clamped to
//! the buffer.
//!
//! Checksums: [`Packet::set_dscp`], [`Packet::set_ecn`], [`Packet::set_ttl`],
//! [`Packet::set_src_addr`] and [`Packet::set_dst_addr`] keep the header checksum
//! valid with an RFC 1624 incremental update; the `raw_` setters and
//! [`Packet::set_total_len`]/[`Packet::set_ident`]/[`Packet::set_proto`] do not
//! (call [`Packet::fill_checksum`] after them).

use super::checksum;
use super::{Error, Result, get16, put16};

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// IP protocol numbers used in this crate.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ESP.
    pub const ESP: u8 = 50;
    /// AH.
    pub const AH: u8 = 51;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// A view of an IPv4 packet.
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

    /// Wraps `buffer` after checking header and total length (see module docs).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_checked_header(buffer)?;
        let tl = usize::from(p.total_len());
        if tl < p.header_len() {
            return Err(Error::Malformed);
        }
        if tl > p.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Wraps `buffer` after checking only the header: 20 bytes, version 4, IHL >= 5,
    /// IHL*4 bytes present. The total length field is not checked.
    pub fn new_checked_header(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 || b[field::VER_IHL] & 0xf < 5 {
            return Err(Error::Malformed);
        }
        if usize::from(b[field::VER_IHL] & 0xf) * 4 > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4 after `new_checked`).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The IHL field (header length in 32-bit words).
    #[inline]
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0xf
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// The whole TOS byte (DSCP << 2 | ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Differentiated services code point (6 bits).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// Explicit congestion notification (2 bits).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 3
    }

    /// Total length (header + payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        get16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        get16(self.buffer.as_ref(), field::FLG_OFF) & 0x4000 != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        get16(self.buffer.as_ref(), field::FLG_OFF) & 0x2000 != 0
    }

    /// Fragment offset in bytes (the field times 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (get16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn proto(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 4] {
        let mut a = [0; 4];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// Options (bytes 20..IHL*4).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// The header (bytes 0..IHL*4).
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Payload: bytes IHL*4..total length, clamped to the buffer (so trailing
    /// Ethernet padding is excluded and a quoted, cut-short packet yields what is there).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(b.len());
        b.get(self.header_len()..end).unwrap_or(&[])
    }

    /// True when the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    /// Pseudo-header sum for this packet's TCP/UDP checksum, given the L4 length.
    #[inline]
    pub fn pseudo_sum(&self, l4_len: u16) -> u64 {
        checksum::pseudo_v4(self.src_addr(), self.dst_addr(), self.proto(), l4_len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 4 and the IHL (header length in words); no checksum update.
    #[inline]
    pub fn raw_set_version_ihl(&mut self, ihl: u8) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | (ihl & 0xf);
    }

    /// Sets the TOS byte; no checksum update.
    #[inline]
    pub fn raw_set_tos(&mut self, v: u8) {
        self.buffer.as_mut()[field::TOS] = v;
    }

    /// Sets the total length; no checksum update.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the identification; no checksum update.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Sets DF, MF and the fragment offset (in bytes, must be a multiple of 8);
    /// no checksum update.
    #[inline]
    pub fn raw_set_frag(&mut self, df: bool, mf: bool, offset_bytes: u16) {
        let v = (u16::from(df) << 14) | (u16::from(mf) << 13) | ((offset_bytes >> 3) & 0x1fff);
        put16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    /// Sets the protocol; no checksum update.
    #[inline]
    pub fn set_proto(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Sets the TOS byte and updates the checksum incrementally (word 0 changes).
    #[inline]
    fn set_tos_incremental(&mut self, tos: u8) {
        let b = self.buffer.as_ref();
        let old = get16(b, field::VER_IHL);
        let new = (old & 0xff00) | u16::from(tos);
        let ck = checksum::update16(self.checksum(), old, new);
        self.buffer.as_mut()[field::TOS] = tos;
        self.set_checksum(ck);
    }

    /// Sets DSCP (low 6 bits of `v`), keeping ECN; checksum updated incrementally.
    #[inline]
    pub fn set_dscp(&mut self, v: u8) {
        self.set_tos_incremental(((v & 0x3f) << 2) | self.ecn());
    }

    /// Sets ECN (low 2 bits of `v`), keeping DSCP; checksum updated incrementally.
    #[inline]
    pub fn set_ecn(&mut self, v: u8) {
        self.set_tos_incremental((self.tos() & 0xfc) | (v & 3));
    }

    /// Sets the TTL; checksum updated incrementally.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        let b = self.buffer.as_ref();
        let old = get16(b, field::TTL);
        let new = (u16::from(v) << 8) | (old & 0xff);
        let ck = checksum::update16(self.checksum(), old, new);
        self.buffer.as_mut()[field::TTL] = v;
        self.set_checksum(ck);
    }

    /// Sets the source address; checksum updated incrementally.
    #[inline]
    pub fn set_src_addr(&mut self, a: [u8; 4]) {
        let old = u32::from_be_bytes(self.src_addr());
        let ck = checksum::update32(self.checksum(), old, u32::from_be_bytes(a));
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
        self.set_checksum(ck);
    }

    /// Sets the destination address; checksum updated incrementally.
    #[inline]
    pub fn set_dst_addr(&mut self, a: [u8; 4]) {
        let old = u32::from_be_bytes(self.dst_addr());
        let ck = checksum::update32(self.checksum(), old, u32::from_be_bytes(a));
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
        self.set_checksum(ck);
    }

    /// Mutable payload (clamped like [`Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = usize::from(self.total_len()).min(self.buffer.as_ref().len());
        self.buffer.as_mut().get_mut(hl..end).unwrap_or(&mut [])
    }
}

/// The IPv4 option at offset `i` of the options `o` (RFC 791, 3.1): its type and
/// length (1 for a no-operation); `None` at the end of the list (end-of-list, or past
/// the options); [`Error::Malformed`] when its length byte is missing, below 2, or runs
/// past them.
pub fn option_at(o: &[u8], i: usize) -> Option<Result<(u8, usize)>> {
    let &t = o.get(i)?;
    Some(match t {
        0 => return None,
        1 => Ok((1, 1)),
        _ => match o.get(i + 1) {
            Some(&n) if n >= 2 && i + usize::from(n) <= o.len() => Ok((t, usize::from(n))),
            _ => Err(Error::Malformed),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{hex, scapy, to_hex};

    // IP(src="192.168.1.10", dst="10.1.2.3", tos=0xb9, id=0x1234, flags="DF", ttl=63,
    //    options=[IPOption_RR(routers=["1.2.3.4"])])/TCP(sport=40000, dport=443,
    //    flags="S", seq=1000)
    const PKT: &str = "47b90030123440003f06481ac0a8010a0a01020307070401020304009c4001bb000003e8000000005002200020490000";
    // IP(src="192.168.1.10", dst="10.1.2.3", id=7, flags="MF", frag=185, proto=17)/Raw(b"x"*8)
    const FRAG: &str = "4500001c000720b940118c5bc0a8010a0a0102037878787878787878";

    #[test]
    fn deconstruct() {
        let b = hex(PKT);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.ihl(), 7);
        assert_eq!(p.header_len(), 28);
        assert_eq!((p.dscp(), p.ecn()), (0xb9 >> 2, 1));
        assert_eq!(p.total_len(), 48);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 63);
        assert_eq!(p.proto(), proto::TCP);
        assert_eq!(p.checksum(), 0x481a);
        assert_eq!(p.src_addr(), [192, 168, 1, 10]);
        assert_eq!(p.dst_addr(), [10, 1, 2, 3]);
        // RR option: type 7, len 7, pointer 4, one address, then EOL padding.
        assert_eq!(p.options(), &[7, 7, 4, 1, 2, 3, 4, 0]);
        assert_eq!(p.payload().len(), 20);
        assert!(p.verify_checksum());
    }

    #[test]
    fn fragment_fields() {
        let b = hex(FRAG);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.more_frags() && !p.dont_frag());
        assert_eq!(p.frag_offset(), 185 * 8);
        assert_eq!(p.ident(), 7);
        assert!(p.verify_checksum());
    }

    #[test]
    fn checks() {
        let b = hex(PKT);
        for n in 0..48 {
            assert_eq!(
                Packet::new_checked(&b[..n]).err(),
                Some(Error::Truncated),
                "len {n}"
            );
        }
        // header-only check passes once the 28 header bytes are there
        assert!(Packet::new_checked_header(&b[..28]).is_ok());
        assert_eq!(
            Packet::new_checked_header(&b[..27]).err(),
            Some(Error::Truncated)
        );
        let mut v = b.clone();
        v[0] = 0x67;
        assert_eq!(Packet::new_checked(&v[..]).err(), Some(Error::Malformed));
        let mut v = b.clone();
        v[0] = 0x44;
        assert_eq!(Packet::new_checked(&v[..]).err(), Some(Error::Malformed));
        let mut v = b.clone();
        v[3] = 27; // total length < header length
        assert_eq!(Packet::new_checked(&v[..]).err(), Some(Error::Malformed));
        // trailing padding is not payload
        let mut v = b.clone();
        v.extend_from_slice(&[0; 6]);
        assert_eq!(Packet::new_checked(&v[..]).unwrap().payload().len(), 20);
    }

    #[test]
    fn incremental_rewrites_verify() {
        let mut b = hex(PKT);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_dscp(10);
        assert_eq!((p.dscp(), p.ecn()), (10, 1));
        assert!(p.verify_checksum());
        p.set_ecn(3);
        assert_eq!((p.dscp(), p.ecn()), (10, 3));
        p.set_ttl(5);
        p.set_src_addr([172, 16, 0, 1]);
        p.set_dst_addr([10, 9, 8, 7]);
        assert!(p.verify_checksum());
        let incremental = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), incremental);
        assert_eq!(p.src_addr(), [172, 16, 0, 1]);
        assert_eq!(p.dst_addr(), [10, 9, 8, 7]);
        assert_eq!(p.ttl(), 5);
        // scapy recomputes the header checksum of the rewritten bytes independently.
        let h = to_hex(&b);
        if let Some(out) = scapy(&format!(
            "p=IP(bytes.fromhex('{h}'))\nc=p.chksum\ndel p.chksum\n\
             q=IP(raw(p))\nprint(c==q.chksum, q.tos, q.ttl, q.src, q.dst)"
        )) {
            assert_eq!(out, format!("True {} 5 172.16.0.1 10.9.8.7", (10 << 2) | 3));
        }
    }

    #[test]
    fn construct_from_zero() {
        let orig = hex(FRAG);
        let mut b = vec![0u8; orig.len()];
        b[20..].copy_from_slice(&orig[20..]);
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.raw_set_version_ihl(5);
        p.raw_set_tos(0);
        p.set_total_len(28);
        p.set_ident(7);
        p.raw_set_frag(false, true, 185 * 8);
        p.buffer[field::TTL] = 64;
        p.set_proto(17);
        p.buffer[field::SRC].copy_from_slice(&[192, 168, 1, 10]);
        p.buffer[field::DST].copy_from_slice(&[10, 1, 2, 3]);
        p.fill_checksum();
        assert_eq!(b, orig);
    }
}
