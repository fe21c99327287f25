//! IPv6 header view (RFC 8200), extension header walking and the Fragment header.
//!
//! Layer: `wire`. [`Packet::new_checked`] requires 40 bytes, version 6 (else
//! `Malformed`) and `40 + payload_len` within the buffer (else `Truncated`); a zero
//! payload length (jumbogram or empty) is accepted by the view and left to the caller.
//! [`Packet::new_checked_header`] checks only the fixed header (quoted packets).
//! Getters are then infallible; [`Packet::payload`] is clamped to the buffer.
//!
//! [`walk_ext_headers`] follows Hop-by-Hop (0), Routing (43), Fragment (44),
//! Destination Options (60) and AH (51, length `(len+2)*4`) up to a depth limit and
//! stops at the first other header (the upper layer), at No Next Header (59), or at
//! a non-first fragment (whose data is not a header).

use super::checksum;
use super::{Error, Result, get16, get32, put16, put32};

/// Fixed header length.
pub const HEADER_LEN: usize = 40;

/// Extension header and upper-layer numbers handled by [`walk_ext_headers`].
pub mod next_header {
    /// Hop-by-Hop Options.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing.
    pub const ROUTING: u8 = 43;
    /// Fragment.
    pub const FRAGMENT: u8 = 44;
    /// Authentication Header.
    pub const AH: u8 = 51;
    /// No Next Header.
    pub const NO_NEXT: u8 = 59;
    /// Destination Options.
    pub const DEST_OPTS: u8 = 60;
}

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const LENGTH: usize = 4;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// A view of an IPv6 packet.
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

    /// Wraps `buffer` after checking the fixed header and the payload length.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_checked_header(buffer)?;
        if HEADER_LEN + usize::from(p.payload_len()) > p.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Wraps `buffer` after checking only the 40-byte header and the version.
    pub fn new_checked_header(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        Ok(Packet { buffer })
    }

    /// Gives the buffer back.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn word0(&self) -> u32 {
        get32(self.buffer.as_ref(), field::VER_TC_FLOW)
    }

    /// IP version (6 after `new_checked`).
    #[inline]
    pub fn version(&self) -> u8 {
        (self.word0() >> 28) as u8
    }

    /// Traffic class (DSCP << 2 | ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }

    /// DSCP (6 bits).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    /// ECN (2 bits).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 3
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.word0() & 0xf_ffff
    }

    /// Payload length (bytes after the fixed header, extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header after the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }

    /// Payload (bytes 40..40+payload_len), clamped to the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(b.len());
        b.get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// Pseudo-header sum for an upper-layer checksum (RFC 8200 §8.1).
    #[inline]
    pub fn pseudo_sum(&self, upper_proto: u8, upper_len: u32) -> u64 {
        checksum::pseudo_v6(&self.src_addr(), &self.dst_addr(), upper_proto, upper_len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn set_word0(&mut self, w: u32) {
        put32(self.buffer.as_mut(), field::VER_TC_FLOW, w);
    }

    /// Sets version 6, traffic class and flow label at once.
    #[inline]
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        self.set_word0((6 << 28) | (u32::from(tc) << 20) | (flow & 0xf_ffff));
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = (self.word0() & 0xf00f_ffff) | (u32::from(tc) << 20);
        self.set_word0(w);
    }

    /// Sets the DSCP (low 6 bits of `v`), keeping ECN. IPv6 has no header
    /// checksum, and the traffic class is not in any pseudo header.
    #[inline]
    pub fn set_dscp(&mut self, v: u8) {
        self.set_traffic_class(((v & 0x3f) << 2) | self.ecn());
    }

    /// Sets the flow label (low 20 bits).
    #[inline]
    pub fn set_flow_label(&mut self, v: u32) {
        let w = (self.word0() & 0xfff0_0000) | (v & 0xf_ffff);
        self.set_word0(w);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address (upper-layer checksums must be fixed by the caller,
    /// e.g. with `tcp::Packet::update_for_addr`).
    #[inline]
    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }

    /// Sets the destination address (see [`Packet::set_src_addr`]).
    #[inline]
    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }

    /// Mutable payload (clamped like [`Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }
}

/// Length of the Fragment extension header.
pub const FRAG_HEADER_LEN: usize = 8;

/// A view of the IPv6 Fragment extension header.
#[derive(Debug, Clone, Copy)]
pub struct Fragment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Fragment<T> {
    /// Wraps `buffer` without checking its length.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Fragment { buffer }
    }

    /// Wraps `buffer` after checking it holds 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < FRAG_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Fragment { buffer })
    }

    /// Next header of the fragmentable part.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Fragment offset in bytes (the field times 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        get16(self.buffer.as_ref(), 2) & 0xfff8
    }

    /// M flag: more fragments follow.
    #[inline]
    pub fn more_frags(&self) -> bool {
        get16(self.buffer.as_ref(), 2) & 1 != 0
    }

    /// 32-bit identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        get32(self.buffer.as_ref(), 4)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Fragment<T> {
    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[0] = v;
    }

    /// Sets offset (bytes, a multiple of 8) and the M flag; clears the reserved bits.
    #[inline]
    pub fn set_frag(&mut self, offset_bytes: u16, more: bool) {
        put16(
            self.buffer.as_mut(),
            2,
            (offset_bytes & 0xfff8) | u16::from(more),
        );
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u32) {
        put32(self.buffer.as_mut(), 4, v);
    }
}

/// What a Fragment header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragInfo {
    /// Offset in bytes.
    pub offset: u16,
    /// M flag.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// Result of [`walk_ext_headers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtWalk {
    /// The upper-layer protocol (or 59, or the next header of a non-first fragment).
    pub proto: u8,
    /// Offset of the upper-layer header from the start of the IPv6 payload.
    pub offset: usize,
    /// Extension headers walked.
    pub count: usize,
    /// The Fragment header, if one was met.
    pub frag: Option<FragInfo>,
}

/// Why [`walk_ext_headers`] stopped short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtError {
    /// An extension header runs past the payload.
    Truncated,
    /// Hop-by-Hop not first, or a second Fragment header.
    Malformed,
    /// More than the allowed number of extension headers.
    TooMany,
}

/// True for the extension headers [`walk_ext_headers`] steps over.
#[inline]
pub fn is_ext_header(nh: u8) -> bool {
    use next_header::*;
    matches!(nh, HOP_BY_HOP | ROUTING | FRAGMENT | AH | DEST_OPTS)
}

/// Walks the extension headers in `payload` (the IPv6 payload), starting with next
/// header `first`, stepping over at most `max` of them. Never panics.
pub fn walk_ext_headers(
    first: u8,
    payload: &[u8],
    max: usize,
) -> core::result::Result<ExtWalk, ExtError> {
    let mut nh = first;
    let mut off = 0usize;
    let mut count = 0usize;
    let mut frag = None;
    while is_ext_header(nh) {
        if count == max {
            return Err(ExtError::TooMany);
        }
        if nh == next_header::HOP_BY_HOP && count != 0 {
            return Err(ExtError::Malformed);
        }
        let rest = payload.get(off..).unwrap_or(&[]);
        if rest.len() < 2 {
            return Err(ExtError::Truncated);
        }
        let len = match nh {
            next_header::FRAGMENT => FRAG_HEADER_LEN,
            next_header::AH => (usize::from(rest[1]) + 2) * 4,
            _ => (usize::from(rest[1]) + 1) * 8,
        };
        if rest.len() < len {
            return Err(ExtError::Truncated);
        }
        count += 1;
        let next = rest[0];
        off += len;
        if nh == next_header::FRAGMENT {
            if frag.is_some() {
                return Err(ExtError::Malformed);
            }
            let f = Fragment::new_unchecked(rest);
            let info = FragInfo {
                offset: f.frag_offset(),
                more: f.more_frags(),
                ident: f.ident(),
            };
            frag = Some(info);
            if info.offset > 0 {
                // What follows is the middle of the fragmentable part, not a header.
                return Ok(ExtWalk {
                    proto: next,
                    offset: off,
                    count,
                    frag,
                });
            }
        }
        nh = next;
    }
    Ok(ExtWalk {
        proto: nh,
        offset: off,
        count,
        frag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;

    // IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0xb9, fl=0x12345, hlim=17)
    //   /UDP(sport=5353, dport=53)/Raw(b"hello")
    const PKT: &str = "6b912345000d111120010db800000000000000000000000120010db800000000000000000000000214e90035000d4b6f68656c6c6f";
    // IPv6(src="2001:db8::1", dst="2001:db8::2")/IPv6ExtHdrHopByHop()
    //   /IPv6ExtHdrRouting(addresses=["2001:db8::9"])/IPv6ExtHdrDestOpt()
    //   /AH(nh=44, payloadlen=4, spi=0x1000, seq=1, icv=b"\x00"*12)
    //   /IPv6ExtHdrFragment(offset=0, m=1, id=0xdeadbeef, nh=6)/TCP(sport=1, dport=2)
    const EXT: &str = "60000000005c004020010db800000000000000000000000120010db80000000000000000000000022b000104000000003c0200010000000020010db800000000000000000000000933000104000000002c040000000010000000000100000000000000000000000006000001deadbeef0001000200000000000000005002200034640000";
    // IPv6(src="2001:db8::1", dst="2001:db8::2")
    //   /IPv6ExtHdrFragment(offset=100, m=0, id=0x01020304, nh=17)/Raw(b"y"*16)
    const LATER: &str = "6000000000182c4020010db800000000000000000000000120010db8000000000000000000000002110003200102030479797979797979797979797979797979";

    const A1: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const A2: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    #[test]
    fn deconstruct() {
        let b = hex(PKT);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb9);
        assert_eq!((p.dscp(), p.ecn()), (0xb9 >> 2, 1));
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 13);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 17);
        assert_eq!(p.src_addr(), A1);
        assert_eq!(p.dst_addr(), A2);
        assert_eq!(p.payload().len(), 13);
    }

    #[test]
    fn setters_round_trip() {
        let mut b = hex(PKT);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_dscp(46);
        assert_eq!(
            (p.dscp(), p.ecn(), p.flow_label(), p.version()),
            (46, 1, 0x12345, 6)
        );
        p.set_flow_label(0xfffff);
        assert_eq!((p.dscp(), p.flow_label()), (46, 0xfffff));
        p.set_version_tc_flow(0xb9, 0x12345);
        p.set_src_addr(A2);
        p.set_dst_addr(A1);
        p.set_src_addr(A1);
        p.set_dst_addr(A2);
        p.set_hop_limit(17);
        p.set_next_header(17);
        p.set_payload_len(13);
        assert_eq!(b, hex(PKT));
    }

    #[test]
    fn checks() {
        let b = hex(PKT);
        for n in 0..b.len() {
            assert_eq!(Packet::new_checked(&b[..n]).err(), Some(Error::Truncated));
        }
        let mut v = b.clone();
        v[0] = 0x4b;
        assert_eq!(Packet::new_checked(&v[..]).err(), Some(Error::Malformed));
    }

    #[test]
    fn walk_all_ext_headers() {
        let b = hex(EXT);
        let p = Packet::new_checked(&b[..]).unwrap();
        let w = walk_ext_headers(p.next_header(), p.payload(), 8).unwrap();
        // 8 (HBH) + 24 (Routing, 1 address) + 8 (DestOpts) + 24 (AH, 12-byte ICV) + 8
        assert_eq!(w.offset, 72);
        assert_eq!(w.proto, 6);
        assert_eq!(w.count, 5);
        assert_eq!(
            w.frag,
            Some(FragInfo {
                offset: 0,
                more: true,
                ident: 0xdeadbeef
            })
        );
        assert_eq!(
            walk_ext_headers(p.next_header(), p.payload(), 4),
            Err(ExtError::TooMany)
        );
        for cut in [0, 1, 7, 8, 31, 39, 63, 71] {
            assert_eq!(
                walk_ext_headers(p.next_header(), &p.payload()[..cut], 8),
                Err(ExtError::Truncated),
                "cut {cut}"
            );
        }
        // HBH anywhere but first is malformed
        assert_eq!(
            walk_ext_headers(43, &[0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0], 8),
            Err(ExtError::Malformed)
        );
    }

    #[test]
    fn later_fragment_stops_walk() {
        let b = hex(LATER);
        let p = Packet::new_checked(&b[..]).unwrap();
        let w = walk_ext_headers(p.next_header(), p.payload(), 8).unwrap();
        assert_eq!(w.proto, 17);
        assert_eq!(w.offset, 8);
        assert_eq!(
            w.frag,
            Some(FragInfo {
                offset: 800,
                more: false,
                ident: 0x01020304
            })
        );
        let mut f = [0u8; 8];
        let mut v = Fragment::new_checked(&mut f[..]).unwrap();
        v.set_next_header(17);
        v.set_frag(800, false);
        v.set_ident(0x01020304);
        assert_eq!(&f[..], &p.payload()[..8]);
    }

    #[test]
    fn no_next_header() {
        let w = walk_ext_headers(60, &[59, 0, 0, 0, 0, 0, 0, 0], 8).unwrap();
        assert_eq!((w.proto, w.offset, w.count), (59, 8, 1));
    }
}
