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
//! 8. `dscp` (IPv4 TOS with an RFC 1624 checksum update, or IPv6 traffic class; ECN kept).
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
        FrameBuf { buf: vec![0u8; HEADROOM + max].into_boxed_slice(), start: HEADROOM, len: 0 }
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
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        self.len += n;
        true
    }
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
    d.copy_within(n..n + at, 0);
    d[at..at + n].copy_from_slice(bytes);
    Ok(())
}

/// Removes `n` bytes at offset `at`.
fn remove<B: PacketBuf + ?Sized>(b: &mut B, at: usize, n: usize) -> Result<(), DropReason> {
    if at + n > b.data().len() {
        return Err(DropReason::RewriteFailed);
    }
    b.data_mut().copy_within(0..at, n);
    if b.adj(n) { Ok(()) } else { Err(DropReason::RewriteFailed) }
}

/// Offset of the EtherType field that names what follows the tags.
#[inline]
fn inner_type_off(n_vlans: u8) -> usize {
    12 + 4 * usize::from(n_vlans)
}

/// Applies `q` to the frame in `b` described by `m`. On error the frame may be partly
/// rewritten and must be dropped.
pub fn apply_qos<B: PacketBuf + ?Sized>(b: &mut B, m: &Meta, q: &QosActions) -> Result<(), DropReason> {
    if q.is_empty() {
        return Ok(());
    }
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
        let e = u32::from_be_bytes([d[mpls_off], d[mpls_off + 1], d[mpls_off + 2], d[mpls_off + 3]]);
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
        _ => Err(DropReason::RewriteFailed),
    }
}
