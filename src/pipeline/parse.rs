//! The parse stage: one frame's bytes into a [`Meta`], or a [`DropReason`].
//!
//! Layer: `pipeline`, built on the `wire` views. [`parse`] never allocates and never
//! panics, whatever the input: every read goes through a view whose length was
//! checked, or through `get`.
//!
//! What it understands, outermost first:
//! - Ethernet II; up to [`MAX_VLANS`] stacked tags with TPID 0x8100, 0x88a8 or
//!   0x9100 (more: [`DropReason::TooManyVlans`]).
//! - MPLS (0x8847/0x8848): up to [`MAX_MPLS`] label stack entries (more:
//!   [`DropReason::TooManyLabels`]); the payload after bottom of stack is IPv4 or IPv6
//!   by its first nibble, anything else (pseudowires with a control word, ...) is
//!   [`L3::Other`]. An empty MPLS payload is [`DropReason::Truncated`].
//! - ARP (Ethernet/IPv4 only, else [`DropReason::BadArp`]).
//! - IPv4 with options and fragments; bytes past the total length are Ethernet
//!   padding and ignored. IPv6 with Hop-by-Hop, Routing, Fragment, Destination
//!   Options and AH extension headers, up to [`MAX_IPV6_EXT`]; jumbograms (payload
//!   length 0) are rejected.
//! - TCP, UDP, SCTP ports; ICMP/ICMPv6 type/code, echo identifier as both ports and
//!   the quoted packet's tuple for errors; ESP SPI; GRE recognised (no ports).
//!   Other upper layers leave `l4_off` 0.
//! - A first fragment (offset 0, more fragments) may hold only part of its TCP/UDP/
//!   SCTP header: it needs just the 4 port bytes (else `Truncated`); TCP flags are 0
//!   if byte 13 is missing, a visible bad data offset / UDP length is still `Bad*`, and
//!   the UDP length is not compared with the fragment's payload.
//!
//! - `l3_off` is also set for [`L3::Other`]: where the payload after the tags (and
//!   labels) starts. Frames longer than 65535 bytes are [`DropReason::TooBig`].
//! - ICMP errors: a quoted header that is not IPv4/IPv6 (or whose IPv6 extension
//!   headers cannot be walked in the bytes quoted) gives `quoted: None`; a quoted L4
//!   header shorter than 4 bytes gives quoted ports 0. Neither is a drop.
//!
//! Checksums are not verified here (a later stage that rewrites headers keeps them
//! as they were, incrementally).
//!
//! ```
//! use flowgate::pipeline::{meta::L3, parse::parse};
//! let mut f = [0u8; 60];
//! f[12] = 0x08; f[13] = 0x06; // ARP
//! f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
//! let m = parse(&f).unwrap();
//! assert_eq!(m.l3, L3::Arp);
//! assert_eq!(parse(&f[..13]).unwrap_err().as_str(), "truncated");
//! ```

use crate::pipeline::meta::{
    DropReason, Frag, L3, MAX_IPV6_EXT, MAX_MPLS, MAX_VLANS, Meta, Tuple, VlanTag,
};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::ipv4::proto;
use crate::wire::ipv6::{ExtError, walk_ext_headers};
use crate::wire::{
    ArpPacket, EspPacket, EthernetFrame, GrePacket, Ipv4Packet, Ipv6Packet, MplsEntry, TcpPacket,
    VlanHeader, icmp, icmpv6,
};
use crate::wire::{Error as WireError, ipv6};

/// Length of the SCTP common header (ports, verification tag, checksum).
const SCTP_HEADER_LEN: usize = 12;

/// The IPv4-mapped IPv6 form (`::ffff:a.b.c.d`) of an IPv4 address, as stored in
/// [`Tuple`].
#[inline]
pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    // Built in a register and stored whole: the flow-key hash reads these 16 bytes
    // back as wide words right away, and a 12 + 4 byte store pattern would stall it.
    (0xffff_u128 << 32 | u128::from(u32::from_be_bytes(a))).to_be_bytes()
}

/// Whether `a` is an IPv4-mapped address (`::ffff:0:0/96`), the form an IPv4 address
/// takes in a [`Tuple`].
#[inline]
pub fn is_v4_mapped(a: &[u8; 16]) -> bool {
    // One wide compare (the express parser runs it on every IPv6 frame; two 12-byte
    // slice compares there cost IPv4's hit path 3.6 instructions a packet in callgrind).
    u128::from_be_bytes(*a) >> 32 == 0xffff
}

/// The IPv4 address inside an IPv4-mapped address, if it is one.
#[inline]
pub fn v4_unmapped(a: &[u8; 16]) -> Option<[u8; 4]> {
    is_v4_mapped(a).then(|| [a[12], a[13], a[14], a[15]])
}

#[inline]
fn wire_err(e: WireError, malformed: DropReason) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Truncated,
        WireError::Malformed => malformed,
    }
}

#[inline]
fn off16(off: usize) -> u16 {
    // Frames longer than u16::MAX are rejected up front, so every offset fits.
    u16::try_from(off).unwrap_or(u16::MAX)
}

/// Parses one Ethernet frame. See the module docs for what is understood and
/// [`Meta`]'s field docs for what is filled in.
///
/// Frames longer than 65535 bytes (offsets would not fit `Meta`) are dropped with
/// [`DropReason::TooBig`].
pub fn parse(frame: &[u8]) -> Result<Meta, DropReason> {
    let mut m = Meta::default();
    parse_into(frame, &mut m)?;
    Ok(m)
}

/// [`parse`] into a caller's `Meta` (overwritten in full): the burst path parses
/// straight into its array instead of moving a returned `Meta` into it. On an error
/// `m` holds what was read before it.
#[inline]
pub fn parse_into(frame: &[u8], m: &mut Meta) -> Result<(), DropReason> {
    let len = u16::try_from(frame.len()).map_err(|_| DropReason::TooBig)?;
    *m = Meta {
        len,
        ..Meta::default()
    };
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Truncated)?;
    let mut et = eth.ethertype();
    let mut off = ethernet::HEADER_LEN;

    let mut n = 0usize;
    while ethertype::is_vlan_tpid(et) {
        if n == MAX_VLANS {
            return Err(DropReason::TooManyVlans);
        }
        // `off` is just past the EtherType field; the tag view starts at that
        // field, which held this tag's TPID.
        let tpid_off = off - 2;
        let tag = VlanHeader::new_checked(frame.get(tpid_off..).unwrap_or(&[]))
            .map_err(|_| DropReason::Truncated)?;
        m.vlans[n] = VlanTag {
            off: off16(tpid_off),
            tpid: et,
            tci: tag.tci(),
        };
        n += 1;
        et = tag.ethertype();
        off += crate::wire::vlan::TAG_LEN;
    }
    m.n_vlans = n as u8;
    m.ethertype = et;

    let l3 = if ethertype::is_mpls(et) {
        m.mpls_off = off16(off);
        let mut count = 0usize;
        loop {
            if count == MAX_MPLS {
                return Err(DropReason::TooManyLabels);
            }
            let e = MplsEntry::new_checked(frame.get(off..).unwrap_or(&[]))
                .map_err(|_| DropReason::Truncated)?;
            if count == 0 {
                m.mpls_label = e.label();
            }
            count += 1;
            off += crate::wire::mpls::ENTRY_LEN;
            if e.bos() {
                break;
            }
        }
        m.n_mpls = count as u8;
        match frame.get(off).map(|b| b >> 4) {
            None => return Err(DropReason::Truncated),
            Some(4) => L3::Ipv4,
            Some(6) => L3::Ipv6,
            Some(_) => L3::Other,
        }
    } else {
        match et {
            ethertype::IPV4 => L3::Ipv4,
            ethertype::IPV6 => L3::Ipv6,
            ethertype::ARP => L3::Arp,
            _ => L3::Other,
        }
    };
    m.l3 = l3;
    m.l3_off = off16(off);
    let rest = frame.get(off..).unwrap_or(&[]);
    match l3 {
        L3::Other => {}
        L3::Arp => {
            ArpPacket::new_checked(rest).map_err(|e| wire_err(e, DropReason::BadArp))?;
        }
        L3::Ipv4 => parse_ipv4(rest, off, m)?,
        L3::Ipv6 => parse_ipv6(rest, off, m)?,
    }
    Ok(())
}

fn parse_ipv4(b: &[u8], off: usize, m: &mut Meta) -> Result<(), DropReason> {
    let ip = Ipv4Packet::new_checked(b).map_err(|e| wire_err(e, DropReason::BadIpv4))?;
    m.v6 = false;
    m.dscp = ip.dscp();
    m.ttl = ip.ttl();
    m.tuple.src = v4_mapped(ip.src_addr());
    m.tuple.dst = v4_mapped(ip.dst_addr());
    m.tuple.proto = ip.proto();
    m.frag_id = u32::from(ip.ident());
    m.frag = if ip.frag_offset() > 0 {
        Frag::Later
    } else if ip.more_frags() {
        Frag::First
    } else {
        Frag::None
    };
    if m.frag == Frag::Later {
        return Ok(());
    }
    parse_l4(ip.proto(), ip.payload(), off + ip.header_len(), false, m)
}

fn parse_ipv6(b: &[u8], off: usize, m: &mut Meta) -> Result<(), DropReason> {
    let ip = Ipv6Packet::new_checked_header(b).map_err(|e| wire_err(e, DropReason::BadIpv6))?;
    if ip.payload_len() == 0 {
        return Err(DropReason::BadIpv6);
    }
    if ipv6::HEADER_LEN + usize::from(ip.payload_len()) > b.len() {
        return Err(DropReason::Truncated);
    }
    m.v6 = true;
    m.dscp = ip.dscp();
    m.ttl = ip.hop_limit();
    m.tuple.src = ip.src_addr();
    m.tuple.dst = ip.dst_addr();
    // An IPv4-mapped address (`::ffff:a.b.c.d`) is the form IPv6 software gives an IPv4
    // node (RFC 4291 2.5.5.2), not an address of the wire: here it would be the IPv4
    // address it maps, matching IPv4 services and the flows of IPv4 connections.
    if is_v4_mapped(&m.tuple.src) || is_v4_mapped(&m.tuple.dst) {
        return Err(DropReason::BadIpv6);
    }
    let payload = ip.payload();
    let w = walk_ext_headers(ip.next_header(), payload, MAX_IPV6_EXT).map_err(|e| match e {
        ExtError::Truncated => DropReason::Truncated,
        ExtError::Malformed => DropReason::BadIpv6,
        ExtError::TooMany => DropReason::TooManyExtHeaders,
    })?;
    m.tuple.proto = w.proto;
    if let Some(f) = w.frag {
        m.frag_id = f.ident;
        m.frag = if f.offset > 0 {
            Frag::Later
        } else if f.more {
            Frag::First
        } else {
            Frag::None
        };
    }
    if m.frag == Frag::Later {
        return Ok(());
    }
    let l4 = payload.get(w.offset..).unwrap_or(&[]);
    parse_l4(w.proto, l4, off + ipv6::HEADER_LEN + w.offset, true, m)
}

/// Reads the L4 header `l4` (bounded by the IP payload) of protocol `p` at frame
/// offset `l4_off`.
fn parse_l4(p: u8, l4: &[u8], l4_off: usize, v6: bool, m: &mut Meta) -> Result<(), DropReason> {
    if m.frag == Frag::First && matches!(p, proto::TCP | proto::UDP | proto::SCTP) {
        // A first fragment may carry only part of the L4 header (options, or a
        // deliberately tiny first fragment); the ports are what the flow needs.
        let Some(h) = l4.get(..4) else {
            return Err(DropReason::Truncated);
        };
        m.tuple.src_port = u16::from_be_bytes([h[0], h[1]]);
        m.tuple.dst_port = u16::from_be_bytes([h[2], h[3]]);
        match p {
            proto::TCP => {
                if let Some(&off) = l4.get(12)
                    && off >> 4 < 5
                {
                    return Err(DropReason::BadTcp);
                }
                m.tcp_flags = l4.get(13).copied().unwrap_or(0);
            }
            proto::UDP => {
                if let Some(h) = l4.get(4..6)
                    && usize::from(u16::from_be_bytes([h[0], h[1]])) < crate::wire::udp::HEADER_LEN
                {
                    return Err(DropReason::BadUdp);
                }
            }
            _ => {}
        }
        m.l4_off = off16(l4_off);
        return Ok(());
    }
    match p {
        proto::TCP => {
            if l4.len() < crate::wire::tcp::MIN_HEADER_LEN {
                return Err(DropReason::Truncated);
            }
            let t = TcpPacket::new_checked(l4).map_err(|_| DropReason::BadTcp)?;
            m.tuple.src_port = t.src_port();
            m.tuple.dst_port = t.dst_port();
            m.tcp_flags = t.flags();
        }
        proto::UDP => {
            let Some(h) = l4.get(..crate::wire::udp::HEADER_LEN) else {
                return Err(DropReason::Truncated);
            };
            let ulen = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if ulen < crate::wire::udp::HEADER_LEN || ulen > l4.len() {
                return Err(DropReason::BadUdp);
            }
            m.tuple.src_port = u16::from_be_bytes([h[0], h[1]]);
            m.tuple.dst_port = u16::from_be_bytes([h[2], h[3]]);
        }
        proto::SCTP => {
            let Some(h) = l4.get(..SCTP_HEADER_LEN) else {
                return Err(DropReason::Truncated);
            };
            m.tuple.src_port = u16::from_be_bytes([h[0], h[1]]);
            m.tuple.dst_port = u16::from_be_bytes([h[2], h[3]]);
        }
        proto::ICMP if !v6 => {
            let i = crate::wire::IcmpPacket::new_checked(l4).map_err(|_| DropReason::Truncated)?;
            m.icmp_type = i.msg_type();
            m.icmp_code = i.code();
            if i.is_echo() {
                m.tuple.src_port = i.ident();
                m.tuple.dst_port = i.ident();
            } else if i.is_error() {
                m.quoted = quoted_v4(i.quoted());
            }
        }
        proto::ICMPV6 if v6 => {
            let i =
                crate::wire::Icmpv6Packet::new_checked(l4).map_err(|_| DropReason::Truncated)?;
            m.icmp_type = i.msg_type();
            m.icmp_code = i.code();
            if i.is_echo() {
                m.tuple.src_port = i.ident();
                m.tuple.dst_port = i.ident();
            } else if i.is_error() {
                m.quoted = quoted_v6(i.quoted());
            } else if matches!(
                i.msg_type(),
                icmpv6::msg_type::NEIGHBOR_SOLICIT | icmpv6::msg_type::NEIGHBOR_ADVERT
            ) && l4.len() < icmpv6::ND_LEN
            {
                return Err(DropReason::BadIcmp);
            }
        }
        proto::ESP => {
            let e = EspPacket::new_checked(l4).map_err(|_| DropReason::Truncated)?;
            m.spi = e.spi();
        }
        proto::GRE => {
            GrePacket::new_checked(l4).map_err(|_| DropReason::Truncated)?;
        }
        _ => return Ok(()),
    }
    m.l4_off = off16(l4_off);
    Ok(())
}

/// Ports of a quoted L4 header: the first 4 bytes for TCP/UDP/SCTP, and for ESP, whose
/// SPI they are (high half as the source port, as `Meta::flow_tuple` keys ESP); the
/// identifier (as both ports, like the flow key of the echo itself) for an ICMP echo; 0
/// when the quote is too short or the protocol has no ports.
fn quoted_ports(p: u8, l4: &[u8], t: &mut Tuple) {
    match p {
        proto::TCP | proto::UDP | proto::SCTP | proto::ESP => {
            if let Some(h) = l4.get(..4) {
                t.src_port = u16::from_be_bytes([h[0], h[1]]);
                t.dst_port = u16::from_be_bytes([h[2], h[3]]);
            }
        }
        proto::ICMP | proto::ICMPV6 => {
            let echo = if p == proto::ICMP {
                [icmp::msg_type::ECHO_REQUEST, icmp::msg_type::ECHO_REPLY]
            } else {
                [icmpv6::msg_type::ECHO_REQUEST, icmpv6::msg_type::ECHO_REPLY]
            };
            if let Some(h) = l4.get(..8)
                && echo.contains(&h[0])
            {
                let id = u16::from_be_bytes([h[4], h[5]]);
                t.src_port = id;
                t.dst_port = id;
            }
        }
        _ => {}
    }
}

/// The tuple of the IPv4 packet quoted in an ICMP error; `None` if its header is
/// not a plausible IPv4 header.
fn quoted_v4(q: &[u8]) -> Option<Tuple> {
    let ip = Ipv4Packet::new_checked_header(q).ok()?;
    let mut t = Tuple {
        src: v4_mapped(ip.src_addr()),
        dst: v4_mapped(ip.dst_addr()),
        proto: ip.proto(),
        ..Tuple::default()
    };
    if ip.frag_offset() == 0 {
        quoted_ports(ip.proto(), ip.payload(), &mut t);
    }
    Some(t)
}

/// The tuple of the IPv6 packet quoted in an ICMPv6 error; `None` if its header is
/// not a plausible IPv6 header or its extension headers cannot be walked in the
/// bytes quoted.
fn quoted_v6(q: &[u8]) -> Option<Tuple> {
    let ip = Ipv6Packet::new_checked_header(q).ok()?;
    let payload = ip.payload();
    let w = walk_ext_headers(ip.next_header(), payload, MAX_IPV6_EXT).ok()?;
    let mut t = Tuple {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        proto: w.proto,
        ..Tuple::default()
    };
    // (An IPv4-mapped address would name an IPv4 flow: see `parse_ipv6`.)
    if is_v4_mapped(&t.src) || is_v4_mapped(&t.dst) {
        return None;
    }
    if w.frag.is_none_or(|f| f.offset == 0) {
        quoted_ports(w.proto, payload.get(w.offset..).unwrap_or(&[]), &mut t);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::hex;
    use proptest::prelude::*;

    // Vectors built by scapy 2.5 (/usr/bin/python3), expression above each. E() is
    // Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb", **k);
    // V4 = dict(src="192.0.2.1", dst="198.51.100.2"); V6 = dict(src="2001:db8::1",
    // dst="2001:db8::2"). Expected values below are the ones scapy was told.
    // E()/IP(src="192.0.2.1", dst="198.51.100.2", tos=0x2e<<2)/TCP(sport=1234, dport=80, flags="S")
    const TCP4: &str = "00112233445566778899aabb080045b800280001000040068de0c0000201c633640204d200500000000000000000500220009e890000";
    // E()/Dot1AD(prio=3, vlan=10)/Dot1Q(prio=1, vlan=20)/IP(**V4)/UDP(sport=53, dport=5353)
    const VLAN3: &str = "00112233445566778899aabb88a8600a8100201408004500001c0001000040118e99c0000201c6336402003514e90008fe88";
    // E(type=0x9100)/Dot1Q(prio=7, id=1, vlan=30, type=0x88a8)/Dot1Q(vlan=40, type=0x8100)/Dot1Q(vlan=50, type=0x8100)/Dot1Q(vlan=4094)/IPv6(**V6)/UDP(sport=1000, dport=2000)
    const VLAN4: &str = "00112233445566778899aabb9100f01e88a800288100003281000ffe86dd600000000008114020010db800000000000000000000000120010db800000000000000000000000203e807d0000898b1";
    // E(type=0x8847)/MPLS(label=100, s=0, ttl=64)/MPLS(label=200, s=0, ttl=64)/MPLS(label=300, s=1, ttl=64)/IP(**V4, tos=0x28)/UDP(sport=7, dport=9)
    const MPLS3: &str = "00112233445566778899aabb884700064040000c80400012c1404528001c0001000040118e71c0000201c63364020007000900081397";
    // E(type=0x8848)/MPLS(label=17, s=1, ttl=5)/IPv6(**V6, tc=0xb8)/TCP(sport=443, dport=50000, flags="A")
    const MPLS6: &str = "00112233445566778899aabb8848000111056b8000000014064020010db800000000000000000000000120010db800000000000000000000000201bbc3500000000000000000501020006f540000";
    // E(type=0x8847)/MPLS(label=1000, s=1)/Raw(b"\x00\x00\x00\x00")/Ether(dst="00:00:00:00:00:01", src="00:00:00:00:00:02")/IP(**V4)
    const EOMPLS: &str = "00112233445566778899aabb8847003e8100000000000000000000010000000000020800450000140001000040008eb2c0000201c6336402";
    // E(dst="ff:ff:ff:ff:ff:ff")/Dot1Q(vlan=7)/ARP(op=1, hwsrc="66:77:88:99:aa:bb", psrc="192.0.2.1", pdst="192.0.2.254")
    const ARP: &str = "ffffffffffff66778899aabb810000070806000108000604000166778899aabbc0000201000000000000c00002fe";
    // E()/IP(**V4, options=[IPOption_RR(routers=["1.2.3.4","5.6.7.8"])])/UDP(sport=1, dport=2)/Raw(b"data")
    const IPOPT: &str = "00112233445566778899aabb08004800002c0001000040116c6ec0000201c6336402070b0401020304050607080000010002000c3ad964617461";
    // E()/IP(**V4, id=0xbeef, flags="MF", frag=0, proto=17)/Raw(bytes(UDP(sport=4444, dport=53, len=1000, chksum=0x1234))+b"z"*16)
    const FRAG1: &str = "00112233445566778899aabb08004500002cbeef20004011af9ac0000201c6336402115c003503e812347a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";
    // E()/IP(**V4, id=0xbeef, frag=3, proto=17)/Raw(b"z"*24)
    const FRAGN: &str = "00112233445566778899aabb08004500002cbeef00034011cf97c0000201c63364027a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";
    // E()/IPv6(**V6)/IPv6ExtHdrHopByHop()/IPv6ExtHdrRouting(addresses=["2001:db8::9"])/IPv6ExtHdrDestOpt()/AH(nh=44, payloadlen=4, spi=0x1000, seq=1, icv=b"\x00"*12)/IPv6ExtHdrFragment(offset=0, m=1, id=0xdeadbeef, nh=6)/TCP(sport=1, dport=2, flags="S")
    const V6EXT: &str = "00112233445566778899aabb86dd60000000005c004020010db800000000000000000000000120010db80000000000000000000000022b000104000000003c0200010000000020010db800000000000000000000000933000104000000002c040000000010000000000100000000000000000000000006000001deadbeef0001000200000000000000005002200034640000";
    // E()/IPv6(**V6)/IPv6ExtHdrFragment(offset=100, m=0, id=0x01020304, nh=17)/Raw(b"y"*16)
    const V6LATER: &str = "00112233445566778899aabb86dd6000000000182c4020010db800000000000000000000000120010db8000000000000000000000002110003200102030479797979797979797979797979797979";
    // E()/IPv6(**V6)/IPv6ExtHdrFragment(offset=0, m=0, id=0x0a0b0c0d)/UDP(sport=10, dport=20)
    const V6ATOMIC: &str = "00112233445566778899aabb86dd6000000000102c4020010db800000000000000000000000120010db8000000000000000000000002110000000a0b0c0d000a00140008a44b";
    // E()/IPv6(**V6)/AH(nh=17, payloadlen=4, spi=0x2000, seq=2, icv=b"\x00"*12)/UDP(sport=11, dport=22)
    const V6AH: &str = "00112233445566778899aabb86dd600000000020334020010db800000000000000000000000120010db8000000000000000000000002110400000000200000000002000000000000000000000000000b001600080000";
    // E()/IPv6(**V6, nh=60)/IPv6ExtHdrDestOpt(nh=59)
    const V6NONEXT: &str = "00112233445566778899aabb86dd6000000000083c4020010db800000000000000000000000120010db80000000000000000000000023b00010400000000";
    // E()/IP(**V4)/ICMP(type=8, id=0x1234, seq=1)/Raw(b"abcdefgh")
    const ICMP4ECHO: &str = "00112233445566778899aabb0800450000240001000040018ea1c0000201c633640208005435123400016162636465666768";
    // E()/IP(src="203.0.113.9", dst="192.0.2.1")/ICMP(type=11, code=0)/IP(**V4, ttl=1)/TCP(sport=33000, dport=443, flags="S")
    const ICMP4ERR_TCP: &str = "00112233445566778899aabb0800450000440001000040017cadcb007109c00002010b00e1510000000045000028000100000106cd98c0000201c633640280e801bb00000000000000005002200021080000";
    // E()/IP(src="203.0.113.9", dst="192.0.2.1")/ICMP(type=3, code=4, nexthopmtu=1400)/IP(**V4)/UDP(sport=33001, dport=53)
    const ICMP4ERR_UDP: &str = "00112233445566778899aabb0800450000380001000040017cb9cb007109c00002010304e3d4000005784500001c0001000040118e99c0000201c633640280e9003500089288";
    // E()/IP(src="203.0.113.9", dst="192.0.2.1")/ICMP(type=3, code=4, nexthopmtu=1400)/IP(**V4)/ESP(spi=0xcafe0001, seq=42, data=b"\x00"*16)
    const ICMP4ERR_ESP: &str = "00112233445566778899aabb0800450000480001000040017ca9cb007109c000020103042c5a000005784500002c0001000040328e68c0000201c6336402cafe00010000002a00000000000000000000000000000000";
    // E()/IP(src="203.0.113.9", dst="192.0.2.1")/ICMP(type=3, code=1)/Raw(bytes(IP(**V4, proto=6, len=60))[:20]+b"\x80\xe8")
    const ICMP4ERR_SHORT: &str = "00112233445566778899aabb0800450000320001000040017cbfcb007109c000020103017c16000000004500003c0001000040068e84c0000201c633640280e8";
    // E()/IP(src="203.0.113.9", dst="192.0.2.1")/ICMP(type=12, code=0)/Raw(b"\x99"*28)
    const ICMP4ERR_GARBAGE: &str = "00112233445566778899aabb0800450000380001000040017cb9cb007109c00002010c008d990000000099999999999999999999999999999999999999999999999999999999";
    // E()/IPv6(**V6)/ICMPv6EchoReply(id=0x4321, seq=3)
    const ICMP6ECHO: &str = "00112233445566778899aabb86dd6000000000083a4020010db800000000000000000000000120010db80000000000000000000000028100e02343210003";
    // E()/IPv6(src="2001:db8::fe", dst="2001:db8::1")/ICMPv6PacketTooBig(mtu=1280)/IPv6(**V6)/TCP(sport=40000, dport=22, flags="A")
    const ICMP6ERR_TCP: &str = "00112233445566778899aabb86dd6000000000443a4020010db80000000000000000000000fe20010db8000000000000000000000001020035d600000500600000000014064020010db800000000000000000000000120010db80000000000000000000000029c40001600000000000000005010200098090000";
    // E()/IPv6(src="2001:db8::fe", dst="2001:db8::1")/ICMPv6TimeExceeded()/IPv6(**V6)/IPv6ExtHdrDestOpt()/UDP(sport=40001, dport=123)
    const ICMP6ERR_UDP: &str = "00112233445566778899aabb86dd6000000000403a4020010db80000000000000000000000fe20010db80000000000000000000000010300f1d8000000006000000000103c4020010db800000000000000000000000120010db800000000000000000000000211000104000000009c41007b000807ad";
    // E(dst="33:33:ff:00:00:02")/Dot1Q(vlan=5)/IPv6(src="2001:db8::1", dst="ff02::1:ff00:2", hlim=255)/ICMPv6ND_NS(tgt="2001:db8::2")/ICMPv6NDOptSrcLLAddr(lladdr="66:77:88:99:aa:bb")
    const ICMP6NS: &str = "3333ff00000266778899aabb8100000586dd6000000000203aff20010db8000000000000000000000001ff0200000000000000000001ff0000028700845b0000000020010db8000000000000000000000002010166778899aabb";
    // E()/IP(**V4)/ESP(spi=0xcafe0001, seq=42, data=b"\x00"*16)
    const ESP4: &str = "00112233445566778899aabb08004500002c0001000040328e68c0000201c6336402cafe00010000002a00000000000000000000000000000000";
    // E()/IPv6(**V6)/ESP(spi=0x00000101, seq=1, data=b"\x00"*8)
    const ESP6: &str = "00112233445566778899aabb86dd600000000010324020010db800000000000000000000000120010db800000000000000000000000200000101000000010000000000000000";
    // E()/IP(**V4)/GRE(key_present=1, key=0x11223344, proto=0x0800)/IP(src="1.1.1.1", dst="2.2.2.2")
    const GRE: &str = "00112233445566778899aabb08004500003000010000402f8e67c0000201c633640220000800112233444500001400010000400074e40101010102020202";
    // E()/IP(**V4)/SCTP(sport=2905, dport=2906)
    const SCTP: &str = "00112233445566778899aabb0800450000200001000040848e22c0000201c63364020b590b5a00000000f921060c";
    // E(type=0x88cc)/Raw(b"\x02\x07\x04"+b"\x00"*40)
    const OTHER: &str = "00112233445566778899aabb88cc02070400000000000000000000000000000000000000000000000000000000000000000000000000000000";

    const ALL: &[&str] = &[
        TCP4,
        VLAN3,
        VLAN4,
        MPLS3,
        MPLS6,
        EOMPLS,
        ARP,
        IPOPT,
        FRAG1,
        FRAGN,
        V6EXT,
        V6LATER,
        V6ATOMIC,
        V6AH,
        V6NONEXT,
        ICMP4ECHO,
        ICMP4ERR_TCP,
        ICMP4ERR_UDP,
        ICMP4ERR_ESP,
        ICMP4ERR_SHORT,
        ICMP4ERR_GARBAGE,
        ICMP6ECHO,
        ICMP6ERR_TCP,
        ICMP6ERR_UDP,
        ICMP6NS,
        ESP4,
        ESP6,
        GRE,
        SCTP,
        OTHER,
        FRAG1_TCP24,
        FRAG1_TCP8,
    ];

    const S4: [u8; 4] = [192, 0, 2, 1];
    const D4: [u8; 4] = [198, 51, 100, 2];
    const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const D6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const FE6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe,
    ];

    fn p(h: &str) -> Meta {
        parse(&hex(h)).unwrap()
    }

    fn tuple(src: [u8; 16], dst: [u8; 16], proto: u8, sp: u16, dp: u16) -> Tuple {
        Tuple {
            src,
            dst,
            src_port: sp,
            dst_port: dp,
            proto,
        }
    }

    fn v4t(src: [u8; 4], dst: [u8; 4], proto: u8, sp: u16, dp: u16) -> Tuple {
        tuple(v4_mapped(src), v4_mapped(dst), proto, sp, dp)
    }

    #[test]
    fn mapped_addresses() {
        let m = v4_mapped([192, 0, 2, 1]);
        assert_eq!(
            std::net::Ipv6Addr::from(m),
            std::net::Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()
        );
        assert_eq!(v4_unmapped(&m), Some([192, 0, 2, 1]));
        assert_eq!(v4_unmapped(&S6), None);
    }

    #[test]
    fn tcp_v4() {
        let m = p(TCP4);
        assert_eq!(m.len as usize, hex(TCP4).len());
        assert_eq!((m.n_vlans, m.n_mpls, m.ethertype), (0, 0, 0x0800));
        assert_eq!((m.l3, m.l3_off, m.l4_off), (L3::Ipv4, 14, 34));
        assert_eq!(m.tuple, v4t(S4, D4, 6, 1234, 80));
        assert_eq!(m.tcp_flags, 0x02);
        assert_eq!(m.dscp, 0x2e);
        assert!(!m.v6);
        assert_eq!(m.frag, Frag::None);
        assert_eq!(m.frag_id, 1); // scapy's default IP id
        assert_eq!(m.quoted, None);
    }

    #[test]
    fn stacked_vlans_all_tpids() {
        let m = p(VLAN3);
        assert_eq!(m.n_vlans, 2);
        assert_eq!(
            m.vlans[0],
            VlanTag {
                off: 12,
                tpid: 0x88a8,
                tci: (3 << 13) | 10
            }
        );
        assert_eq!(
            m.vlans[1],
            VlanTag {
                off: 16,
                tpid: 0x8100,
                tci: (1 << 13) | 20
            }
        );
        assert_eq!(m.outer_vlan().map(|v| v.tci & 0xfff), Some(10));
        assert_eq!(
            (m.ethertype, m.l3_off, m.after_vlans_off()),
            (0x0800, 22, 22)
        );
        assert_eq!(m.tuple, v4t(S4, D4, 17, 53, 5353));
        assert_eq!(m.l4_off, 42);

        let m = p(VLAN4);
        assert_eq!(m.n_vlans, 4);
        let tp: Vec<u16> = m.vlans.iter().map(|v| v.tpid).collect();
        assert_eq!(tp, [0x9100, 0x88a8, 0x8100, 0x8100]);
        let vids: Vec<u16> = m.vlans.iter().map(|v| v.tci & 0xfff).collect();
        assert_eq!(vids, [30, 40, 50, 4094]);
        assert_eq!(m.vlans[0].tci >> 13, 7);
        assert_eq!(m.vlans[0].tci & 0x1000, 0x1000); // id=1 is DEI
        assert_eq!(m.vlans[3].off, 24);
        assert_eq!((m.ethertype, m.l3, m.l3_off), (0x86dd, L3::Ipv6, 30));
        assert_eq!(m.tuple, tuple(S6, D6, 17, 1000, 2000));

        // A fifth tag is one too many.
        let mut f = hex(VLAN4);
        f.splice(28..28, [0x81, 0x00, 0x00, 0x05]);
        assert_eq!(parse(&f).unwrap_err(), DropReason::TooManyVlans);
    }

    #[test]
    fn mpls() {
        let m = p(MPLS3);
        assert_eq!(
            (m.ethertype, m.n_mpls, m.mpls_off, m.mpls_label),
            (0x8847, 3, 14, 100)
        );
        assert_eq!((m.l3, m.l3_off, m.l4_off), (L3::Ipv4, 26, 46));
        assert_eq!(m.dscp, 0x28 >> 2);
        assert_eq!(m.tuple, v4t(S4, D4, 17, 7, 9));

        let m = p(MPLS6);
        assert_eq!((m.ethertype, m.n_mpls, m.mpls_label), (0x8848, 1, 17));
        assert_eq!((m.l3, m.l3_off, m.l4_off), (L3::Ipv6, 18, 58));
        assert!(m.v6);
        assert_eq!(m.dscp, 0xb8 >> 2);
        assert_eq!(m.tuple, tuple(S6, D6, 6, 443, 50000));
        assert_eq!(m.tcp_flags, 0x10);

        // Ethernet over MPLS with a control word: not IP.
        let m = p(EOMPLS);
        assert_eq!(
            (m.n_mpls, m.mpls_label, m.l3, m.l3_off),
            (1, 1000, L3::Other, 18)
        );
        assert_eq!(m.tuple, Tuple::default());

        // Nine labels without bottom of stack.
        let mut f = hex(MPLS3)[..14].to_vec();
        for _ in 0..9 {
            f.extend_from_slice(&[0, 0x06, 0x40, 0x40]);
        }
        f.extend_from_slice(&hex(MPLS3)[26..]);
        assert_eq!(parse(&f).unwrap_err(), DropReason::TooManyLabels);
        // Eight with the last at bottom of stack is fine.
        let mut f = hex(MPLS3)[..14].to_vec();
        for i in 0..8 {
            f.extend_from_slice(&[0, 0x06, 0x40 | u8::from(i == 7), 0x40]);
        }
        f.extend_from_slice(&hex(MPLS3)[26..]);
        let m = parse(&f).unwrap();
        assert_eq!((m.n_mpls, m.l3, m.l4_off), (8, L3::Ipv4, 14 + 32 + 20));
    }

    #[test]
    fn arp() {
        let m = p(ARP);
        assert_eq!(
            (m.l3, m.l3_off, m.n_vlans, m.ethertype),
            (L3::Arp, 18, 1, 0x0806)
        );
        let mut f = hex(ARP);
        f[18 + 4] = 8; // hlen 8
        assert_eq!(parse(&f).unwrap_err(), DropReason::BadArp);
        let f = hex(ARP);
        assert_eq!(parse(&f[..18 + 27]).unwrap_err(), DropReason::Truncated);
    }

    #[test]
    fn ipv4_options_and_padding() {
        let m = p(IPOPT);
        // RR with 2 addresses: 3 + 8 = 11 bytes, padded to 12: IHL 8.
        assert_eq!(m.l4_off, 14 + 32);
        assert_eq!(m.tuple, v4t(S4, D4, 17, 1, 2));
        let mut f = hex(IPOPT);
        f.extend_from_slice(&[0xee; 20]); // Ethernet padding / trailer
        let m2 = parse(&f).unwrap();
        assert_eq!((m2.tuple, m2.l4_off), (m.tuple, m.l4_off));
    }

    #[test]
    fn ipv4_header_errors() {
        let f = hex(TCP4);
        let mut v = f.clone();
        v[14] = 0x55; // version 5
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadIpv4);
        let mut v = f.clone();
        v[14] = 0x44; // IHL 4
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadIpv4);
        let mut v = f.clone();
        v[17] = 19; // total length < header
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadIpv4);
        let mut v = f.clone();
        v[17] += 1; // total length past the frame
        assert_eq!(parse(&v).unwrap_err(), DropReason::Truncated);
        let mut v = f.clone();
        v[14 + 20 + 12] = 0x40; // TCP data offset 4
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadTcp);
        let mut v = f.clone();
        v[14 + 20 + 12] = 0x60; // data offset 6 past the segment
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadTcp);
    }

    #[test]
    fn udp_length_errors() {
        let f = hex(VLAN3);
        let mut v = f.clone();
        v[42 + 5] = 7;
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadUdp);
        let mut v = f.clone();
        v[42 + 5] = 9; // 9 > 8 bytes of IP payload
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadUdp);
    }

    #[test]
    fn ipv4_fragments() {
        let m = p(FRAG1);
        assert_eq!(m.frag, Frag::First);
        assert_eq!(m.frag_id, 0xbeef);
        // UDP length 1000 covers the whole datagram, more than this fragment: fine.
        assert_eq!(m.tuple, v4t(S4, D4, 17, 4444, 53));
        assert_eq!(m.l4_off, 34);
        let m = p(FRAGN);
        assert_eq!((m.frag, m.frag_id, m.l4_off), (Frag::Later, 0xbeef, 0));
        assert_eq!(m.tuple, v4t(S4, D4, 17, 0, 0));
    }

    // t = bytes(TCP(sport=1111, dport=22, flags="S", options=[("MSS",1460),
    //   ("SAckOK",b""),("Timestamp",(1,0)),("NOP",None),("WScale",7)]))  (40 bytes)
    // E()/IP(**V4, id=0x77, flags="MF", proto=6)/Raw(t[:24])
    const FRAG1_TCP24: &str = "00112233445566778899aabb08004500002c0077200040066e1ec0000201c6336402045700160000000000000000a002200000000000020405b4";
    // E()/IP(**V4, id=0x78, flags="MF", proto=6)/Raw(t[:8])
    const FRAG1_TCP8: &str =
        "00112233445566778899aabb08004500001c0078200040066e2dc0000201c63364020457001600000000";
    // E()/IP(**V4, id=0x79, flags="MF", proto=6)/Raw(t[:3])
    const FRAG1_TCP3: &str =
        "00112233445566778899aabb0800450000170079200040066e31c0000201c6336402045700";

    #[test]
    fn first_fragment_with_partial_l4_header() {
        // Data offset 10 (40 bytes) but only 24 bytes in this fragment: ports and flags.
        let m = p(FRAG1_TCP24);
        assert_eq!((m.frag, m.frag_id, m.l4_off), (Frag::First, 0x77, 34));
        assert_eq!(m.tuple, v4t(S4, D4, 6, 1111, 22));
        assert_eq!(m.tcp_flags, 0x02);
        // Only 8 bytes: ports, flags unknown.
        let m = p(FRAG1_TCP8);
        assert_eq!(m.tuple, v4t(S4, D4, 6, 1111, 22));
        assert_eq!(m.tcp_flags, 0);
        // 3 bytes: not even the ports.
        assert_eq!(parse(&hex(FRAG1_TCP3)).unwrap_err(), DropReason::Truncated);
        // A visible bad data offset is still malformed.
        let mut f = hex(FRAG1_TCP24);
        f[34 + 12] = 0x30;
        assert_eq!(parse(&f).unwrap_err(), DropReason::BadTcp);
        // Not a fragment: the same cut header is malformed.
        let mut f = hex(FRAG1_TCP24);
        f[20] = 0;
        assert_eq!(parse(&f).unwrap_err(), DropReason::BadTcp);
    }

    #[test]
    fn ipv6_ext_headers() {
        let m = p(V6EXT);
        // 8 HBH + 24 Routing + 8 DestOpts + 24 AH + 8 Fragment after the fixed header
        assert_eq!(m.l4_off, 14 + 40 + 72);
        assert_eq!(m.tuple, tuple(S6, D6, 6, 1, 2));
        assert_eq!((m.frag, m.frag_id), (Frag::First, 0xdeadbeef));
        assert_eq!(m.tcp_flags, 0x02);

        let m = p(V6LATER);
        assert_eq!((m.frag, m.frag_id, m.l4_off), (Frag::Later, 0x01020304, 0));
        assert_eq!(m.tuple, tuple(S6, D6, 17, 0, 0));

        let m = p(V6ATOMIC);
        assert_eq!((m.frag, m.frag_id), (Frag::None, 0x0a0b0c0d));
        assert_eq!(m.tuple, tuple(S6, D6, 17, 10, 20));
        assert_eq!(m.l4_off, 14 + 48);

        let m = p(V6AH);
        assert_eq!(m.tuple, tuple(S6, D6, 17, 11, 22));
        assert_eq!(m.l4_off, 14 + 40 + 24);

        let m = p(V6NONEXT);
        assert_eq!((m.tuple.proto, m.l4_off), (59, 0));
    }

    #[test]
    fn ipv6_errors() {
        // An IPv4-mapped source or destination.
        for at in [22, 38] {
            let mut v = hex(V6NONEXT);
            v[at..at + 12].copy_from_slice(&v4_mapped([0; 4])[..12]);
            assert_eq!(
                parse(&v).unwrap_err(),
                DropReason::BadIpv6,
                "mapped at {at}"
            );
        }
        let f = hex(V6EXT);
        let mut v = f.clone();
        v[14] = 0x40;
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadIpv6);
        let mut v = f.clone();
        v[18] = 0;
        v[19] = 0; // payload length 0 (jumbogram)
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadIpv6);
        let mut v = f.clone();
        v[19] += 1;
        assert_eq!(parse(&v).unwrap_err(), DropReason::Truncated);
        // Routing header's next header -> Hop-by-Hop (not first): malformed.
        let mut v = f.clone();
        v[14 + 48] = 0;
        assert_eq!(parse(&v).unwrap_err(), DropReason::BadIpv6);
        // Nine Destination Options headers.
        let mut v = hex(V6NONEXT);
        for _ in 0..8 {
            v.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        v[14 + 40] = 60;
        let last = v.len() - 8;
        v[last] = 59;
        v[19] = 72;
        assert_eq!(parse(&v).unwrap_err(), DropReason::TooManyExtHeaders);
        // ... but eight are fine
        let mut v8 = v[..v.len() - 8].to_vec();
        let last = v8.len() - 8;
        v8[last] = 59;
        v8[19] = 64;
        assert_eq!(parse(&v8).unwrap().tuple.proto, 59);
    }

    #[test]
    fn icmp_v4() {
        let m = p(ICMP4ECHO);
        assert_eq!((m.icmp_type, m.icmp_code), (8, 0));
        assert_eq!(m.tuple, v4t(S4, D4, 1, 0x1234, 0x1234));
        assert_eq!(m.l4_off, 34);

        let m = p(ICMP4ERR_TCP);
        assert_eq!((m.icmp_type, m.icmp_code), (11, 0));
        assert_eq!(m.tuple, v4t([203, 0, 113, 9], S4, 1, 0, 0));
        assert_eq!(m.quoted, Some(v4t(S4, D4, 6, 33000, 443)));

        let m = p(ICMP4ERR_UDP);
        assert_eq!((m.icmp_type, m.icmp_code), (3, 4));
        assert_eq!(m.quoted, Some(v4t(S4, D4, 17, 33001, 53)));

        // A quoted ESP header: its SPI where the ports go, so the error keys the flow
        // of the security association it quotes (ESP4 is that packet).
        let m = p(ICMP4ERR_ESP);
        assert_eq!(m.quoted, Some(v4t(S4, D4, 50, 0xcafe, 0x0001)));
        let esp = p(ESP4);
        assert_eq!(esp.tuple, v4t(S4, D4, 50, 0, 0), "ESP has no ports");
        assert_eq!(m.flow_tuple(), esp.flow_tuple());

        // Quoted TCP header cut to 2 bytes: ports unknown.
        let m = p(ICMP4ERR_SHORT);
        assert_eq!(m.quoted, Some(v4t(S4, D4, 6, 0, 0)));

        // Quoted garbage: no quoted tuple, not a drop.
        let m = p(ICMP4ERR_GARBAGE);
        assert_eq!((m.icmp_type, m.quoted), (12, None));
    }

    #[test]
    fn icmp_v6() {
        let m = p(ICMP6ECHO);
        assert_eq!((m.icmp_type, m.icmp_code), (129, 0));
        assert_eq!(m.tuple, tuple(S6, D6, 58, 0x4321, 0x4321));

        let m = p(ICMP6ERR_TCP);
        assert_eq!(m.icmp_type, 2);
        assert_eq!(m.tuple, tuple(FE6, S6, 58, 0, 0));
        assert_eq!(m.quoted, Some(tuple(S6, D6, 6, 40000, 22)));

        let m = p(ICMP6ERR_UDP);
        assert_eq!(m.icmp_type, 3);
        assert_eq!(m.quoted, Some(tuple(S6, D6, 17, 40001, 123)));

        // A quoted packet with an IPv4-mapped source or destination names no flow (it
        // would name an IPv4 one).
        for at in [70, 86] {
            let mut f = hex(ICMP6ERR_TCP);
            f[at..at + 12].copy_from_slice(&v4_mapped([0; 4])[..12]);
            let mut m = Meta::default();
            assert_eq!(parse_into(&f, &mut m), Ok(()));
            assert_eq!((m.icmp_type, m.quoted), (2, None), "mapped at {at}");
        }

        let m = p(ICMP6NS);
        assert_eq!(
            (m.icmp_type, m.n_vlans, m.l3_off, m.l4_off),
            (135, 1, 18, 58)
        );

        // NS shorter than 24 bytes.
        let mut f = hex(ICMP6NS);
        f.truncate(58 + 16);
        f[18 + 5] = 16;
        assert_eq!(parse(&f).unwrap_err(), DropReason::BadIcmp);
    }

    #[test]
    fn esp_gre_sctp_other() {
        let m = p(ESP4);
        assert_eq!((m.spi, m.l4_off), (0xcafe0001, 34));
        assert_eq!(m.tuple, v4t(S4, D4, 50, 0, 0));
        let m = p(ESP6);
        assert_eq!((m.spi, m.l4_off), (0x101, 54));
        assert_eq!(m.tuple, tuple(S6, D6, 50, 0, 0));
        let m = p(GRE);
        assert_eq!((m.tuple, m.l4_off), (v4t(S4, D4, 47, 0, 0), 34));
        let m = p(SCTP);
        assert_eq!(m.tuple, v4t(S4, D4, 132, 2905, 2906));
        let m = p(OTHER);
        assert_eq!(
            (m.l3, m.ethertype, m.l3_off, m.l4_off),
            (L3::Other, 0x88cc, 14, 0)
        );
    }

    #[test]
    fn every_truncation_is_truncated() {
        // Every IP frame's length fields cover it to the last byte, so any cut
        // (at every header boundary and inside each header) must be `Truncated`.
        for (i, h) in ALL.iter().enumerate() {
            let f = hex(h);
            let m = parse(&f).unwrap();
            let end = match m.l3 {
                L3::Ipv4 | L3::Ipv6 => f.len(),
                L3::Arp => usize::from(m.l3_off) + 28,
                L3::Other => usize::from(m.l3_off) + usize::from(m.n_mpls > 0),
            };
            for n in 0..end {
                assert_eq!(
                    parse(&f[..n]).unwrap_err(),
                    DropReason::Truncated,
                    "vector {i} cut at {n}"
                );
            }
            for n in end..=f.len() {
                assert!(parse(&f[..n]).is_ok(), "vector {i} cut at {n}");
            }
        }
    }

    #[test]
    fn every_single_bit_flip_is_handled() {
        for h in ALL {
            let f = hex(h);
            for bit in 0..f.len() * 8 {
                let mut v = f.clone();
                v[bit / 8] ^= 1 << (bit % 8);
                let _ = parse(&v);
            }
        }
    }

    #[test]
    fn too_long_frame() {
        assert_eq!(parse(&vec![0u8; 65536]).unwrap_err(), DropReason::TooBig);
        assert!(parse(&vec![0u8; 65535]).is_ok());
    }

    /// Seeded random frames built by scapy (VLAN stacks of all three TPIDs, MPLS
    /// stacks, IPv4 with/without options, IPv6 with extension headers, TCP, UDP,
    /// SCTP, ESP, ICMP echo): every field scapy was told must come back from `parse`.
    const SCAPY_RANDOM: &str = r#"
import random
from scapy.contrib.mpls import MPLS
from scapy.layers.sctp import SCTP
rng = random.Random(1234)
def v4(): return ".".join(str(rng.randrange(1, 255)) for _ in range(4))
def v6(): return "2001:db8:%x::%x:%x" % (rng.randrange(65536), rng.randrange(65536), rng.randrange(1, 65536))
for i in range(300):
    tags = [rng.choice([0x8100, 0x88a8, 0x9100]) for _ in range(rng.randrange(4))]
    vids = [rng.randrange(4096) for _ in tags]
    pcps = [rng.randrange(8) for _ in tags]
    labels = [rng.randrange(16, 1 << 20) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
    is6 = rng.random() < 0.5
    dscp = rng.randrange(64)
    proto = rng.choice([6, 17, 132, 50, 1])
    sp, dp = rng.randrange(65536), rng.randrange(65536)
    src, dst = (v6(), v6()) if is6 else (v4(), v4())
    if proto == 6: l4 = TCP(sport=sp, dport=dp, flags="S")
    elif proto == 17: l4 = UDP(sport=sp, dport=dp) / Raw(b"x" * rng.randrange(20))
    elif proto == 132: l4 = SCTP(sport=sp, dport=dp)
    elif proto == 50: l4 = ESP(spi=sp << 16 | dp, seq=1, data=b"\0" * 8)
    else:
        l4 = (ICMPv6EchoRequest(id=sp, seq=dp) if is6 else ICMP(type=8, id=sp, seq=dp))
        dp = sp
        proto = 58 if is6 else 1
    nexts = []
    if is6:
        ip = IPv6(src=src, dst=dst, tc=dscp << 2 | rng.randrange(4))
        for e in rng.sample(["hbh", "rt", "dst"], rng.randrange(4)):
            nexts.append(e)
        order = {"hbh": 0, "rt": 1, "dst": 2}
        nexts.sort(key=order.get)
        for e in nexts:
            ip = ip / {"hbh": IPv6ExtHdrHopByHop(), "rt": IPv6ExtHdrRouting(addresses=[v6()]), "dst": IPv6ExtHdrDestOpt()}[e]
    else:
        opts = [IPOption_RR(routers=[v4()])] if rng.random() < 0.3 else []
        ip = IP(src=src, dst=dst, tos=dscp << 2, options=opts)
    if proto == 50 and is6 and nexts:
        ip.lastlayer().nh = 50
    pkt = ip / l4
    if labels:
        stack = None
        for j, l in enumerate(labels):
            m = MPLS(label=l, s=int(j == len(labels) - 1), ttl=64)
            stack = m if stack is None else stack / m
        inner = stack / pkt
        et = 0x8847
    else:
        inner = pkt
        et = 0x86dd if is6 else 0x0800
    types = tags + [et]
    fr = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb", type=types[0])
    for j, t in enumerate(tags):
        fr = fr / Dot1Q(prio=pcps[j], vlan=vids[j], type=types[j + 1])
    fr = fr / inner
    exp_et = et
    spi = (sp << 16 | dp) if proto == 50 else 0
    if proto == 50: sp = dp = 0
    print(bytes(fr).hex(), len(tags), ",".join("%x/%d/%d" % (t, v, p) for t, v, p in zip(tags, vids, pcps)) or "-",
          len(labels), labels[0] if labels else 0, exp_et, int(is6), src, dst, proto, sp, dp, dscp, spi)
"#;

    #[test]
    fn differential_against_scapy_random_frames() {
        let Some(out) = crate::wire::scapy(SCAPY_RANDOM) else {
            return;
        };
        let addr = |s: &str| -> [u8; 16] {
            match s
                .parse::<std::net::IpAddr>()
                .expect("scapy printed an address")
            {
                std::net::IpAddr::V4(a) => v4_mapped(a.octets()),
                std::net::IpAddr::V6(a) => a.octets(),
            }
        };
        let mut n = 0;
        for line in out.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            assert_eq!(w.len(), 14, "{line}");
            let num = |i: usize| -> u64 { w[i].parse().expect("number") };
            let m = parse(&hex(w[0])).unwrap_or_else(|e| panic!("{e:?} for {line}"));
            assert_eq!(u64::from(m.n_vlans), num(1), "{line}");
            if w[2] != "-" {
                for (i, t) in w[2].split(',').enumerate() {
                    let f: Vec<&str> = t.split('/').collect();
                    let v = m.vlans[i];
                    assert_eq!(format!("{:x}", v.tpid), f[0], "{line}");
                    assert_eq!((v.tci & 0xfff).to_string(), f[1], "{line}");
                    assert_eq!((v.tci >> 13).to_string(), f[2], "{line}");
                }
            }
            assert_eq!(u64::from(m.n_mpls), num(3), "{line}");
            assert_eq!(u64::from(m.mpls_label), num(4), "{line}");
            assert_eq!(u64::from(m.ethertype), num(5), "{line}");
            assert_eq!(m.v6, num(6) == 1, "{line}");
            assert_eq!(m.l3, if m.v6 { L3::Ipv6 } else { L3::Ipv4 }, "{line}");
            assert_eq!(m.tuple.src, addr(w[7]), "{line}");
            assert_eq!(m.tuple.dst, addr(w[8]), "{line}");
            assert_eq!(u64::from(m.tuple.proto), num(9), "{line}");
            assert_eq!(u64::from(m.tuple.src_port), num(10), "{line}");
            assert_eq!(u64::from(m.tuple.dst_port), num(11), "{line}");
            assert_eq!(u64::from(m.dscp), num(12), "{line}");
            assert_eq!(u64::from(m.spi), num(13), "{line}");
            assert!(m.l4_off > m.l3_off, "{line}");
            n += 1;
        }
        assert_eq!(n, 300);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&b);
        }

        #[test]
        fn never_panics_with_plausible_headers(
            et in prop::sample::select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x9100, 0x8847, 0x8848]),
            first in prop::sample::select(vec![0x45u8, 0x46, 0x4f, 0x60, 0x00, 0x81]),
            rest in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&et.to_be_bytes());
            f.push(first);
            f.extend_from_slice(&rest);
            if let Ok(m) = parse(&f) {
                prop_assert!(usize::from(m.l3_off) <= f.len());
                prop_assert!(usize::from(m.l4_off) <= f.len());
                prop_assert!(usize::from(m.n_vlans) <= MAX_VLANS);
                prop_assert!(usize::from(m.n_mpls) <= MAX_MPLS);
            }
        }

        #[test]
        fn never_panics_on_mutated_vectors(
            which in 0..ALL.len(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = hex(ALL[which]);
            for (i, x) in flips {
                let at = i.index(f.len());
                f[at] ^= x;
            }
            let n = cut.index(f.len() + 1);
            if let Ok(m) = parse(&f[..n]) {
                prop_assert!(usize::from(m.l4_off) <= n);
            }
        }
    }
}
