//! Header rewrites: L2 forwarding and QoS attributes, in place on a packet buffer.
//!
//! Layer: `action`, below `pipeline`. Works on any [`PacketBuf`] (the replay frame buffer
//! or a DPDK mbuf) using the offsets the parse stage recorded in [`Meta`]; never
//! allocates. Tags and labels are pushed into headroom in front of the frame and popped by
//! moving the MAC addresses forward, as NIC drivers do.
//!
//! QoS attributes apply in this fixed order, whatever order the YAML lists them in:
//! 1. `pop_mpls` (the outermost label; popping the bottom of stack restores the IPv4/IPv6
//!    EtherType, so it fails on a non-IP payload such as an EoMPLS pseudowire),
//! 2. `swap_mpls` (label of the outermost entry),
//! 3. `pop_vlan` (the outermost tag), 4. `set_vlan` (VID of the outermost tag),
//! 5. `push_vlan` (a new outermost tag), 6. `pcp` (PCP of the outermost tag; an untagged
//!    frame gets an 802.1Q priority tag, VID 0),
//! 7. `push_mpls` (a new top label right after the tags; TTL and TC as configured),
//! 8. `dscp` (IPv4 TOS with an RFC 1624 checksum update, or IPv6 traffic class; ECN kept;
//!    skipped on frames without an IP header, such as ARP or a pseudowire).
//!
//! A rewrite that cannot apply (nothing to pop) fails the frame with
//! [`DropReason::RewriteFailed`]; a push without headroom or past [`MAX_FRAME`] fails it
//! with [`DropReason::TooBig`]. L4 checksums need no change: no rewrite touches the
//! pseudo-header.

use crate::config::{Mac, QosActions};
use crate::pipeline::meta::{DropReason, L3, Meta};
use crate::wire::checksum;

/// Longest frame a rewrite may produce.
pub const MAX_FRAME: usize = 16 * 1024;

/// A frame in a buffer with headroom.
pub trait PacketBuf {
    /// The frame.
    fn data(&self) -> &[u8];
    /// The frame, mutably.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the frame by `n` bytes at the front (contents unspecified); false when
    /// there is not enough headroom.
    fn prepend(&mut self, n: usize) -> bool;
    /// Drops `n` bytes from the front; false when the frame is shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Replaces the frame with `bytes`; false when it does not fit.
    fn set(&mut self, bytes: &[u8]) -> bool;
    /// Drops `n` bytes from the end; false when the frame is shorter.
    fn trim(&mut self, n: usize) -> bool;
}

/// A heap buffer with headroom, reused for every frame (replay, tests, benches).
pub struct FrameBuf {
    buf: Box<[u8]>,
    start: usize,
    len: usize,
}

/// Headroom reserved in front of each frame (room for tags and labels).
pub const HEADROOM: usize = 128;

impl FrameBuf {
    /// A buffer for frames up to `max` bytes (plus headroom).
    pub fn new(max: usize) -> Self {
        FrameBuf {
            buf: vec![0u8; HEADROOM + max].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
        }
    }
    /// Loads `frame` at the standard headroom; false when it does not fit.
    pub fn load(&mut self, frame: &[u8]) -> bool {
        if frame.len() > self.buf.len() - HEADROOM {
            return false;
        }
        self.start = HEADROOM;
        self.len = frame.len();
        self.buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        true
    }
}

impl PacketBuf for FrameBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        self.len += n;
        true
    }
    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.start += n;
        self.len -= n;
        true
    }
    fn set(&mut self, bytes: &[u8]) -> bool {
        self.load(bytes)
    }
    #[inline]
    fn trim(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.len -= n;
        true
    }
}

/// Sets destination and source MAC.
#[inline]
pub fn set_macs<B: PacketBuf + ?Sized>(b: &mut B, dst: Mac, src: Mac) {
    let d = b.data_mut();
    d[0..6].copy_from_slice(&dst);
    d[6..12].copy_from_slice(&src);
}

/// Inserts `bytes` at offset `at`, moving the `at` bytes before it into the headroom.
fn insert<B: PacketBuf + ?Sized>(b: &mut B, at: usize, bytes: &[u8]) -> Result<(), DropReason> {
    if b.data().len() + bytes.len() > MAX_FRAME || !b.prepend(bytes.len()) {
        return Err(DropReason::TooBig);
    }
    let n = bytes.len();
    let d = b.data_mut();
    if at == 12 && n == 4 {
        // The common case (a tag after the MACs): two fixed-size moves, no memmove call.
        let macs: [u8; 12] = d[4..16].try_into().unwrap_or_default();
        d[..12].copy_from_slice(&macs);
    } else {
        d.copy_within(n..n + at, 0);
    }
    d[at..at + n].copy_from_slice(bytes);
    Ok(())
}

/// Removes `n` bytes at offset `at`.
fn remove<B: PacketBuf + ?Sized>(b: &mut B, at: usize, n: usize) -> Result<(), DropReason> {
    if at + n > b.data().len() {
        return Err(DropReason::RewriteFailed);
    }
    b.data_mut().copy_within(0..at, n);
    if b.adj(n) {
        Ok(())
    } else {
        Err(DropReason::RewriteFailed)
    }
}

/// Offset of the EtherType field that names what follows the tags.
#[inline]
fn inner_type_off(n_vlans: u8) -> usize {
    12 + 4 * usize::from(n_vlans)
}

/// Applies `q` to the frame in `b` described by `m`. On error the frame may be partly
/// rewritten and must be dropped.
pub fn apply_qos<B: PacketBuf + ?Sized>(
    b: &mut B,
    m: &Meta,
    q: &QosActions,
) -> Result<(), DropReason> {
    // No `is_empty` shortcut: each step below tests its own field, which costs no more
    // than comparing the whole set with the empty one.
    let mut n_vlans = m.n_vlans;
    let mut n_mpls = m.n_mpls;
    let mut l3_off = m.l3_off as usize;
    let mpls_off = m.mpls_off as usize;

    if q.pop_mpls {
        if n_mpls == 0 {
            return Err(DropReason::RewriteFailed);
        }
        if n_mpls == 1 {
            let et: u16 = match m.l3 {
                L3::Ipv4 => 0x0800,
                L3::Ipv6 => 0x86dd,
                _ => return Err(DropReason::RewriteFailed),
            };
            let o = inner_type_off(n_vlans);
            b.data_mut()[o..o + 2].copy_from_slice(&et.to_be_bytes());
        }
        remove(b, mpls_off, 4)?;
        n_mpls -= 1;
        l3_off -= 4;
    }
    if let Some(label) = q.swap_mpls {
        if n_mpls == 0 {
            return Err(DropReason::RewriteFailed);
        }
        let d = b.data_mut();
        let e = u32::from_be_bytes([
            d[mpls_off],
            d[mpls_off + 1],
            d[mpls_off + 2],
            d[mpls_off + 3],
        ]);
        let e = (label << 12) | (e & 0xfff);
        d[mpls_off..mpls_off + 4].copy_from_slice(&e.to_be_bytes());
    }
    if q.pop_vlan {
        if n_vlans == 0 {
            return Err(DropReason::RewriteFailed);
        }
        remove(b, 12, 4)?;
        n_vlans -= 1;
        l3_off -= 4;
    }
    if let Some(vid) = q.set_vlan {
        if n_vlans == 0 {
            return Err(DropReason::RewriteFailed);
        }
        let d = b.data_mut();
        let tci = u16::from_be_bytes([d[14], d[15]]);
        d[14..16].copy_from_slice(&((tci & 0xf000) | (vid & 0x0fff)).to_be_bytes());
    }
    if let Some((tpid, vid, pcp)) = q.push_vlan {
        let tci = (u16::from(pcp) << 13) | (vid & 0x0fff);
        let t = tpid.to_be_bytes();
        let c = tci.to_be_bytes();
        insert(b, 12, &[t[0], t[1], c[0], c[1]])?;
        n_vlans += 1;
        l3_off += 4;
    }
    if let Some(pcp) = q.pcp {
        if n_vlans == 0 {
            insert(b, 12, &[0x81, 0x00, pcp << 5, 0])?;
            n_vlans += 1;
            l3_off += 4;
        } else {
            let d = b.data_mut();
            d[14] = (d[14] & 0x1f) | (pcp << 5);
        }
    }
    if let Some((label, tc, ttl)) = q.push_mpls {
        let at = inner_type_off(n_vlans) + 2;
        let bos = u32::from(n_mpls == 0);
        if n_mpls == 0 {
            // Only an IP payload can be labelled: its type is implied by the first nibble.
            if !matches!(m.l3, L3::Ipv4 | L3::Ipv6) {
                return Err(DropReason::RewriteFailed);
            }
            let o = inner_type_off(n_vlans);
            b.data_mut()[o..o + 2].copy_from_slice(&0x8847u16.to_be_bytes());
        }
        let e = (label << 12) | (u32::from(tc & 7) << 9) | (bos << 8) | u32::from(ttl);
        insert(b, at, &e.to_be_bytes())?;
        l3_off += 4;
    }
    if let Some(dscp) = q.dscp {
        set_dscp(b.data_mut(), m.l3, l3_off, dscp)?;
    }
    Ok(())
}

/// Rewrites the DSCP of the IP header at `off`, keeping ECN; IPv4 gets an incremental
/// header checksum update.
#[inline]
pub fn set_dscp(d: &mut [u8], l3: L3, off: usize, dscp: u8) -> Result<(), DropReason> {
    match l3 {
        L3::Ipv4 => {
            if off + 20 > d.len() {
                return Err(DropReason::RewriteFailed);
            }
            let old = u16::from_be_bytes([d[off], d[off + 1]]);
            let tos = (dscp << 2) | (d[off + 1] & 0x03);
            let new = (old & 0xff00) | u16::from(tos);
            let ck = u16::from_be_bytes([d[off + 10], d[off + 11]]);
            let ck = checksum::update16(ck, old, new);
            d[off + 1] = tos;
            d[off + 10..off + 12].copy_from_slice(&ck.to_be_bytes());
            Ok(())
        }
        L3::Ipv6 => {
            if off + 40 > d.len() {
                return Err(DropReason::RewriteFailed);
            }
            // Version(4) | Traffic class(8) | Flow label(20): TC spans bytes 0..2.
            let tc = (dscp << 2) | ((d[off + 1] >> 4) & 0x03);
            d[off] = (d[off] & 0xf0) | (tc >> 4);
            d[off + 1] = (d[off + 1] & 0x0f) | (tc << 4);
            Ok(())
        }
        // No IP header (ARP, a pseudowire): nothing to mark; the frame still goes.
        _ => Ok(()),
    }
}

/// Lowers the TTL (IPv4, with an incremental header checksum) or hop limit (IPv6) of the
/// IP header at `off` by one, as a router forwarding the packet does; 0 stays 0 (a
/// router never forwards such a packet: the caller answers it instead). Other frames
/// are left as they are.
pub fn dec_ttl(d: &mut [u8], l3: L3, off: usize) -> Result<(), DropReason> {
    match l3 {
        L3::Ipv4 => {
            let Some(ip) = d.get_mut(off..off + 20) else {
                return Err(DropReason::RewriteFailed);
            };
            let old = u16::from_be_bytes([ip[8], ip[9]]);
            let new = u16::from_be_bytes([ip[8].saturating_sub(1), ip[9]]);
            let ck = checksum::update16(u16::from_be_bytes([ip[10], ip[11]]), old, new);
            ip[8] = ip[8].saturating_sub(1);
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
            Ok(())
        }
        L3::Ipv6 => {
            let Some(hl) = d.get_mut(off + 7) else {
                return Err(DropReason::RewriteFailed);
            };
            *hl = hl.saturating_sub(1);
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::parse;

    /// Ethernet + IPv4 (valid header checksum) + UDP, 60 bytes.
    fn v4_frame() -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8 + 18];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xaa]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xbb]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip.copy_from_slice(&[
            0x45, 0x01, 0, 46, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        let ck = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&ck.to_be_bytes());
        f[34..42].copy_from_slice(&[0x12, 0x34, 0x00, 0x35, 0, 26, 0, 0]);
        f
    }

    #[test]
    fn dec_ttl_lowers_ttl_and_hop_limit_and_keeps_the_header_checksum() {
        let mut f = v4_frame();
        dec_ttl(&mut f, L3::Ipv4, 14).unwrap();
        assert_eq!(f[14 + 8], 63);
        assert_eq!(
            checksum::checksum(&f[14..34]),
            0,
            "header checksum still valid"
        );
        for ttl in [1u8, 0, 255] {
            let mut g = v4_frame();
            g[14 + 8] = ttl;
            g[24..26].fill(0);
            let ck = checksum::checksum(&g[14..34]);
            g[24..26].copy_from_slice(&ck.to_be_bytes());
            dec_ttl(&mut g, L3::Ipv4, 14).unwrap();
            assert_eq!(g[14 + 8], ttl.saturating_sub(1));
            assert_eq!(checksum::checksum(&g[14..34]), 0, "ttl {ttl}");
        }
        let mut v6 = vec![0u8; 54];
        v6[14] = 0x60;
        v6[14 + 7] = 64;
        dec_ttl(&mut v6, L3::Ipv6, 14).unwrap();
        assert_eq!(v6[14 + 7], 63);
        assert_eq!(
            dec_ttl(&mut v6[..20], L3::Ipv4, 14),
            Err(DropReason::RewriteFailed)
        );
        let mut arp = v6.clone();
        dec_ttl(&mut arp, L3::Arp, 14).unwrap();
        assert_eq!(arp, v6, "not IP: untouched");
    }

    fn buf(f: &[u8]) -> FrameBuf {
        let mut b = FrameBuf::new(2048);
        assert!(b.load(f));
        b
    }

    fn apply(b: &mut FrameBuf, q: &QosActions) -> Result<(), DropReason> {
        let m = parse(b.data()).expect("parses");
        apply_qos(b, &m, q)
    }

    #[test]
    fn insert_and_remove_at_offsets() {
        let orig: Vec<u8> = (0u8..40).collect();
        let mut b = buf(&orig);
        insert(&mut b, 12, &[0xa, 0xb, 0xc, 0xd]).unwrap();
        let d = b.data();
        assert_eq!(d.len(), 44);
        assert_eq!(&d[..12], &orig[..12]);
        assert_eq!(&d[12..16], &[0xa, 0xb, 0xc, 0xd]);
        assert_eq!(&d[16..], &orig[12..]);
        remove(&mut b, 12, 4).unwrap();
        assert_eq!(b.data(), &orig[..]);
        // At offset 0 and at the very end.
        insert(&mut b, 0, &[1, 2]).unwrap();
        assert_eq!(&b.data()[..2], &[1, 2]);
        remove(&mut b, 0, 2).unwrap();
        insert(&mut b, 40, &[9]).unwrap();
        assert_eq!(b.data()[40], 9);
        remove(&mut b, 40, 1).unwrap();
        assert_eq!(b.data(), &orig[..]);
        // Out of range removal fails, leaves the frame alone.
        assert_eq!(remove(&mut b, 38, 4), Err(DropReason::RewriteFailed));
        assert_eq!(b.data(), &orig[..]);
    }

    #[test]
    fn insert_without_headroom_is_too_big() {
        let orig: Vec<u8> = vec![0; 60];
        let mut b = buf(&orig);
        assert_eq!(
            insert(&mut b, 12, &[0; HEADROOM + 1]),
            Err(DropReason::TooBig)
        );
        assert_eq!(b.data(), &orig[..]);
        let big = vec![0u8; MAX_FRAME - 2];
        let mut b = FrameBuf::new(MAX_FRAME);
        assert!(b.load(&big));
        assert_eq!(insert(&mut b, 12, &[0; 4]), Err(DropReason::TooBig));
    }

    #[test]
    fn push_then_pop_vlan_gives_back_the_frame() {
        let orig = v4_frame();
        for tpid in [0x8100, 0x88a8, 0x9100] {
            let mut b = buf(&orig);
            apply(
                &mut b,
                &QosActions {
                    push_vlan: Some((tpid, 42, 5)),
                    ..Default::default()
                },
            )
            .unwrap();
            let d = b.data();
            assert_eq!(d.len(), orig.len() + 4);
            assert_eq!(u16::from_be_bytes([d[12], d[13]]), tpid);
            assert_eq!(u16::from_be_bytes([d[14], d[15]]), (5 << 13) | 42);
            assert_eq!(&d[16..], &orig[12..]);
            // And a second tag on top, then both popped.
            apply(
                &mut b,
                &QosActions {
                    push_vlan: Some((0x88a8, 7, 1)),
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(b.data().len(), orig.len() + 8);
            apply(
                &mut b,
                &QosActions {
                    pop_vlan: true,
                    ..Default::default()
                },
            )
            .unwrap();
            apply(
                &mut b,
                &QosActions {
                    pop_vlan: true,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(b.data(), &orig[..]);
        }
    }

    #[test]
    fn push_then_pop_mpls_gives_back_the_frame() {
        let orig = v4_frame();
        let mut b = buf(&orig);
        apply(
            &mut b,
            &QosActions {
                push_mpls: Some((1000, 3, 9)),
                ..Default::default()
            },
        )
        .unwrap();
        let d = b.data();
        assert_eq!(&d[12..14], &[0x88, 0x47]);
        let e = u32::from_be_bytes([d[14], d[15], d[16], d[17]]);
        assert_eq!(e, (1000 << 12) | (3 << 9) | (1 << 8) | 9);
        assert_eq!(&d[18..], &orig[14..]);
        // A second label on top is not bottom of stack.
        apply(
            &mut b,
            &QosActions {
                push_mpls: Some((77, 0, 1)),
                ..Default::default()
            },
        )
        .unwrap();
        let d = b.data();
        assert_eq!(
            u32::from_be_bytes([d[14], d[15], d[16], d[17]]),
            (77 << 12) | 1
        );
        apply(
            &mut b,
            &QosActions {
                pop_mpls: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(&b.data()[12..14], &[0x88, 0x47]);
        apply(
            &mut b,
            &QosActions {
                pop_mpls: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(b.data(), &orig[..]);
        // Behind a tag: the label goes after the tag, and popping restores the tag's type.
        let mut b = buf(&orig);
        apply(
            &mut b,
            &QosActions {
                push_vlan: Some((0x8100, 10, 0)),
                ..Default::default()
            },
        )
        .unwrap();
        let tagged = b.data().to_vec();
        apply(
            &mut b,
            &QosActions {
                push_mpls: Some((5, 0, 64)),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(&b.data()[12..18], &[0x81, 0x00, 0x00, 10, 0x88, 0x47]);
        apply(
            &mut b,
            &QosActions {
                pop_mpls: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(b.data(), &tagged[..]);
    }

    #[test]
    fn pops_without_anything_to_pop_fail() {
        let orig = v4_frame();
        for q in [
            QosActions {
                pop_vlan: true,
                ..Default::default()
            },
            QosActions {
                set_vlan: Some(3),
                ..Default::default()
            },
            QosActions {
                pop_mpls: true,
                ..Default::default()
            },
            QosActions {
                swap_mpls: Some(3),
                ..Default::default()
            },
        ] {
            let mut b = buf(&orig);
            assert_eq!(apply(&mut b, &q), Err(DropReason::RewriteFailed), "{q:?}");
        }
    }

    #[test]
    fn dscp_keeps_ecn_and_checksum_valid() {
        let orig = v4_frame();
        let mut b = buf(&orig);
        apply(
            &mut b,
            &QosActions {
                dscp: Some(46),
                ..Default::default()
            },
        )
        .unwrap();
        let ip = &b.data()[14..34];
        assert_eq!(ip[1], (46 << 2) | 1);
        assert_eq!(checksum::checksum(ip), 0);
    }
}

#[cfg(test)]
mod dscp_tests {
    use super::*;

    #[test]
    fn dscp_skips_frames_without_ip() {
        let mut d = [0u8; 64];
        let before = d;
        assert_eq!(set_dscp(&mut d, L3::Arp, 14, 46), Ok(()));
        assert_eq!(set_dscp(&mut d, L3::Other, 14, 46), Ok(()));
        assert_eq!(d, before);
    }
}
