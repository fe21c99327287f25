//! Frame assembly into a caller-owned, reused buffer.
//!
//! Layer: tooling (`gen`). A frame is written front to back: [`begin`] (Ethernet, tags,
//! IP header with zero lengths), an L4 header ([`tcp`], [`udp`], [`icmp_echo`]), the
//! payload (appended by the caller), then [`finish`] fills every length and checksum
//! (IPv4 header, TCP, UDP, ICMP, ICMPv6). Nothing here allocates as long as the buffer's
//! capacity covers the frame (the generator reserves 4 KiB once).

use std::net::IpAddr;

use crate::wire::checksum;

/// One 802.1Q/802.1ad tag or MPLS label stack entry, outermost first in [`Tags`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A VLAN tag: TPID (0x8100 or 0x88a8), PCP, VID.
    Vlan {
        /// Tag protocol identifier.
        tpid: u16,
        /// Priority code point (0-7).
        pcp: u8,
        /// VLAN id (12 bits).
        vid: u16,
    },
    /// An MPLS label (20 bits) with TC 0 and TTL 64.
    Mpls(u32),
}

/// Up to 3 tags: VLAN tags must come before MPLS labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tags {
    /// Number of valid entries.
    pub n: u8,
    /// Entries, outermost first.
    pub t: [Option<Tag>; 3],
}

impl Tags {
    /// No tags.
    pub const NONE: Tags = Tags { n: 0, t: [None; 3] };

    /// Builds a stack from a slice (extra entries are ignored).
    pub fn from_slice(tags: &[Tag]) -> Tags {
        let mut s = Tags::NONE;
        for tag in tags.iter().take(3) {
            s.t[s.n as usize] = Some(*tag);
            s.n += 1;
        }
        s
    }
}

/// IP protocol numbers used here.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;
/// ESP.
pub const ESP: u8 = 50;
/// ICMP.
pub const ICMP: u8 = 1;
/// ICMPv6.
pub const ICMPV6: u8 = 58;

/// Where [`begin`] put the layers.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    l3: usize,
    l4: usize,
    v6: bool,
    proto: u8,
}

/// Writes Ethernet (+ tags) and an IP header with zero length/checksum fields.
/// `src`/`dst` must be the same family (a mismatch writes the IPv4 form of `dst`'s family
/// with an unspecified other address; callers never mix).
#[allow(clippy::too_many_arguments)]
pub fn begin(
    buf: &mut Vec<u8>,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    tags: &Tags,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ip_id: u16,
) -> Layout {
    buf.clear();
    buf.extend_from_slice(&dst_mac);
    buf.extend_from_slice(&src_mac);
    let v6 = dst.is_ipv6();
    let ip_type: u16 = if v6 { 0x86dd } else { 0x0800 };
    let n = usize::from(tags.n).min(3);
    let mut i = 0;
    while i < n {
        match tags.t[i] {
            Some(Tag::Vlan { tpid, pcp, vid }) => {
                buf.extend_from_slice(&tpid.to_be_bytes());
                let tci = (u16::from(pcp & 7) << 13) | (vid & 0x0fff);
                buf.extend_from_slice(&tci.to_be_bytes());
            }
            Some(Tag::Mpls(_)) | None => break,
        }
        i += 1;
    }
    if i < n {
        buf.extend_from_slice(&0x8847u16.to_be_bytes());
        while i < n {
            if let Some(Tag::Mpls(label)) = tags.t[i] {
                let bottom = u32::from(i + 1 == n);
                let e = ((label & 0xf_ffff) << 12) | (bottom << 8) | 64;
                buf.extend_from_slice(&e.to_be_bytes());
            }
            i += 1;
        }
    } else {
        buf.extend_from_slice(&ip_type.to_be_bytes());
    }
    let l3 = buf.len();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let frag: u16 = if proto == TCP { 0x4000 } else { 0 };
            buf.extend_from_slice(&[0x45, 0, 0, 0]);
            buf.extend_from_slice(&ip_id.to_be_bytes());
            buf.extend_from_slice(&frag.to_be_bytes());
            buf.extend_from_slice(&[64, proto, 0, 0]);
            buf.extend_from_slice(&s.octets());
            buf.extend_from_slice(&d.octets());
        }
        _ => {
            let s = match src {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            let d = match dst {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            let flow = u32::from(ip_id) & 0xf_ffff;
            buf.extend_from_slice(&(0x6000_0000u32 | flow).to_be_bytes());
            buf.extend_from_slice(&[0, 0, proto, 64]);
            buf.extend_from_slice(&s);
            buf.extend_from_slice(&d);
        }
    }
    Layout {
        l3,
        l4: buf.len(),
        v6,
        proto,
    }
}

/// TCP flag bits.
pub mod flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
}

/// TCP header; SYN segments carry an MSS option (1460).
pub fn tcp(buf: &mut Vec<u8>, sport: u16, dport: u16, seq: u32, ack: u32, fl: u8) {
    let syn = fl & flags::SYN != 0;
    buf.extend_from_slice(&sport.to_be_bytes());
    buf.extend_from_slice(&dport.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&ack.to_be_bytes());
    buf.push(if syn { 6 << 4 } else { 5 << 4 });
    buf.push(fl);
    buf.extend_from_slice(&64240u16.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]);
    if syn {
        buf.extend_from_slice(&[2, 4, 0x05, 0xb4]);
    }
}

/// UDP header (length and checksum filled by [`finish`]).
pub fn udp(buf: &mut Vec<u8>, sport: u16, dport: u16) {
    buf.extend_from_slice(&sport.to_be_bytes());
    buf.extend_from_slice(&dport.to_be_bytes());
    buf.extend_from_slice(&[0, 0, 0, 0]);
}

/// ICMP/ICMPv6 echo header: `ty` is 8/0 (v4) or 128/129 (v6).
pub fn icmp_echo(buf: &mut Vec<u8>, ty: u8, id: u16, seq: u16) {
    buf.extend_from_slice(&[ty, 0, 0, 0]);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&seq.to_be_bytes());
}

/// Fills IP lengths, the IPv4 header checksum and the L4 checksum.
pub fn finish(buf: &mut [u8], lay: Layout) {
    let l4_len = buf.len() - lay.l4;
    let ip_len = buf.len() - lay.l3;
    let sum = if lay.v6 {
        let pl = (l4_len as u16).to_be_bytes();
        buf[lay.l3 + 4..lay.l3 + 6].copy_from_slice(&pl);
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&buf[lay.l3 + 8..lay.l3 + 24]);
        d.copy_from_slice(&buf[lay.l3 + 24..lay.l3 + 40]);
        checksum::pseudo_v6(&s, &d, lay.proto, l4_len as u32)
    } else {
        buf[lay.l3 + 2..lay.l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        let ck = checksum::checksum(&buf[lay.l3..lay.l4]);
        buf[lay.l3 + 10..lay.l3 + 12].copy_from_slice(&ck.to_be_bytes());
        let mut s = [0u8; 4];
        let mut d = [0u8; 4];
        s.copy_from_slice(&buf[lay.l3 + 12..lay.l3 + 16]);
        d.copy_from_slice(&buf[lay.l3 + 16..lay.l3 + 20]);
        checksum::pseudo_v4(s, d, lay.proto, l4_len as u16)
    };
    let l4 = lay.l4;
    let at = match lay.proto {
        TCP => Some((16, sum)),
        UDP => {
            buf[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            Some((6, sum))
        }
        ICMP => Some((2, 0)),
        ICMPV6 => Some((2, sum)),
        _ => None,
    };
    if let Some((off, pseudo)) = at {
        let mut ck = !checksum::fold(checksum::add(pseudo, &buf[l4..]));
        if lay.proto == UDP && ck == 0 {
            ck = 0xffff;
        }
        buf[l4 + off..l4 + off + 2].copy_from_slice(&ck.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv4_udp_verifies() {
        let mut b = Vec::with_capacity(256);
        let lay = begin(
            &mut b,
            [1; 6],
            [2; 6],
            &Tags::NONE,
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
            UDP,
            7,
        );
        udp(&mut b, 1234, 53);
        b.extend_from_slice(b"hello");
        finish(&mut b, lay);
        assert_eq!(b.len(), 14 + 20 + 8 + 5);
        assert_eq!(checksum::checksum(&b[14..34]), 0);
        let pseudo = checksum::pseudo_v4([198, 18, 0, 1], [203, 0, 113, 10], UDP, 13);
        assert_eq!(!checksum::fold(checksum::add(pseudo, &b[34..])), 0);
    }

    #[test]
    fn tags_and_v6_tcp() {
        let mut b = Vec::with_capacity(256);
        let tags = Tags::from_slice(&[
            Tag::Vlan {
                tpid: 0x8100,
                pcp: 5,
                vid: 100,
            },
            Tag::Mpls(1000),
            Tag::Mpls(2000),
        ]);
        let src = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1));
        let dst = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10));
        let lay = begin(&mut b, [1; 6], [2; 6], &tags, src, dst, TCP, 0);
        tcp(&mut b, 40000, 443, 1, 0, flags::SYN);
        finish(&mut b, lay);
        assert_eq!(&b[12..16], &[0x81, 0x00, 0xa0, 100]);
        assert_eq!(&b[16..18], &[0x88, 0x47]);
        // first label: 1000 << 12, S=0, TTL 64; second: 2000, S=1
        assert_eq!(
            u32::from_be_bytes([b[18], b[19], b[20], b[21]]),
            (1000 << 12) | 64
        );
        assert_eq!(
            u32::from_be_bytes([b[22], b[23], b[24], b[25]]),
            (2000 << 12) | 0x100 | 64
        );
        assert_eq!(b[26] >> 4, 6);
        assert_eq!(b.len(), 26 + 40 + 24);
    }
}
