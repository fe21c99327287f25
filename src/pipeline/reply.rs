//! Answers for ARP requests, IPv6 Neighbor Solicitations and pings to the system, and
//! the ICMP errors it sends: Time Exceeded (a router, for a packet whose TTL or hop limit
//! ran out), Fragmentation Needed / Packet Too Big (for a packet over `system.mtu`) and
//! port unreachable (for a new flow of a `no_server: reject` service no server can take).
//!
//! Layer: `pipeline`, on the `wire` views. Pure functions: a parsed request frame
//! and [`Meta`] in, a reply frame written into a caller's buffer out. Nothing here
//! decides *whether* to answer an ARP or ND request: the caller asks
//! [`arp_request_target`] / [`ns_target`] which address is wanted, checks that the
//! system owns it, then calls [`arp_reply`] / [`nd_advert`]. [`icmp_error`] refuses the
//! packets RFC 1812 and RFC 4443 say must not get an ICMP error; the caller decides which
//! error is due, and applies the rate limit. No allocation,
//! no panics.
//!
//! Replies keep the request's VLAN tags (the bytes between the MAC addresses and the
//! L3 header are copied as they are). Requests inside MPLS are not answered.
//!
//! Validation (a request that fails it gets `None`):
//! - ARP: Ethernet/IPv4, opcode request, unicast sender MAC, not gratuitous
//!   (sender address ≠ target address). Probes (sender 0.0.0.0) are answered.
//! - NS (RFC 4861 §7.1.1): ICMPv6 type 135 code 0, not fragmented, hop limit 255,
//!   at least 24 bytes, valid checksum, well-formed options, target not multicast; a
//!   source of `::` (duplicate address detection) needs a solicited-node multicast
//!   destination and no source link-layer address option.

use crate::pipeline::meta::{Frag, L3, Meta};
use crate::wire::icmpv6::{self, msg_type, na_flags, nd_option};
use crate::wire::ipv4::proto;
use crate::wire::{ArpPacket, EthernetFrame, Icmpv6Packet, Ipv6Packet, arp, ipv6};

/// Minimum Ethernet frame length without FCS; ARP replies are zero-padded to it.
pub const MIN_FRAME_LEN: usize = 60;
/// Bytes of a Neighbor Advertisement with one target link-layer address option.
const NA_LEN: usize = icmpv6::ND_LEN + icmpv6::LLADDR_OPT_LEN;
/// ff02::1, all nodes.
const ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// Ethernet address of ff02::1.
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

fn arp_request<'a>(frame: &'a [u8], meta: &Meta) -> Option<ArpPacket<&'a [u8]>> {
    if meta.l3 != L3::Arp || meta.n_mpls != 0 {
        return None;
    }
    let a = ArpPacket::new_checked(frame.get(usize::from(meta.l3_off)..)?).ok()?;
    let valid = a.op() == arp::OP_REQUEST && a.sha()[0] & 1 == 0 && a.spa() != a.tpa();
    valid.then_some(a)
}

/// The IPv4 address an ARP request asks for, or `None` if `frame` is not a valid
/// ARP request (see the module docs).
pub fn arp_request_target(frame: &[u8], meta: &Meta) -> Option<[u8; 4]> {
    arp_request(frame, meta).map(|a| a.tpa())
}

/// Writes the ARP reply to the request in `frame` into `out`: Ethernet destination
/// the requester, source `our_mac`, same tags; opcode 2, sender `our_mac` and the
/// requested address, target the requester. Zero-padded to 60 bytes. Returns the
/// length written, or `None` if the request is not valid or `out` is too small.
pub fn arp_reply(frame: &[u8], meta: &Meta, our_mac: [u8; 6], out: &mut [u8]) -> Option<usize> {
    let req = arp_request(frame, meta)?;
    let l3 = usize::from(meta.l3_off);
    let len = (l3 + arp::PACKET_LEN).max(MIN_FRAME_LEN);
    let out = out.get_mut(..len)?;
    out[..l3].copy_from_slice(frame.get(..l3)?);
    out[l3..].fill(0);
    let mut eth = EthernetFrame::new_checked(&mut out[..]).ok()?;
    eth.set_dst_addr(req.sha());
    eth.set_src_addr(our_mac);
    let mut a = ArpPacket::new_unchecked(out.get_mut(l3..)?);
    a.set_fixed_fields();
    a.set_op(arp::OP_REPLY);
    a.set_sha(our_mac);
    a.set_spa(req.tpa());
    a.set_tha(req.sha());
    a.set_tpa(req.spa());
    Some(len)
}

/// Writes an announcement that `our_mac` has `addr` into `out` (at least 86 bytes), for
/// hosts and routers to update the entry they may hold from another owner (a standby
/// taking over, a replaced box): for IPv4 a gratuitous ARP request (RFC 5227's ARP
/// Announcement: broadcast, sender and target address `addr`), for IPv6 an unsolicited
/// Neighbor Advertisement (RFC 4861 7.2.6: to all nodes, Override set, Solicited clear,
/// the target's link-layer address). Untagged. Returns the length written.
pub fn announcement(addr: std::net::IpAddr, our_mac: [u8; 6], out: &mut [u8]) -> Option<usize> {
    const ETH: usize = 14;
    match addr {
        std::net::IpAddr::V4(a) => {
            let out = out.get_mut(..MIN_FRAME_LEN)?;
            out.fill(0);
            let mut eth = EthernetFrame::new_checked(&mut out[..]).ok()?;
            eth.set_dst_addr([0xff; 6]);
            eth.set_src_addr(our_mac);
            eth.set_ethertype(crate::wire::ethernet::ethertype::ARP);
            let mut p = ArpPacket::new_unchecked(out.get_mut(ETH..)?);
            p.set_fixed_fields();
            p.set_op(arp::OP_REQUEST);
            p.set_sha(our_mac);
            p.set_spa(a.octets());
            p.set_tpa(a.octets());
            Some(MIN_FRAME_LEN)
        }
        std::net::IpAddr::V6(a) => {
            let len = ETH + ipv6::HEADER_LEN + NA_LEN;
            let out = out.get_mut(..len)?;
            out.fill(0);
            let mut eth = EthernetFrame::new_checked(&mut out[..]).ok()?;
            eth.set_dst_addr(ALL_NODES_MAC);
            eth.set_src_addr(our_mac);
            eth.set_ethertype(crate::wire::ethernet::ethertype::IPV6);
            let (ip_hdr, icmp_buf) = out.get_mut(ETH..)?.split_at_mut(ipv6::HEADER_LEN);
            let mut ip = Ipv6Packet::new_unchecked(ip_hdr);
            ip.set_version_tc_flow(0, 0);
            ip.set_payload_len(NA_LEN as u16);
            ip.set_next_header(proto::ICMPV6);
            ip.set_hop_limit(255);
            ip.set_src_addr(a.octets());
            ip.set_dst_addr(ALL_NODES);
            let mut na = Icmpv6Packet::new_unchecked(icmp_buf);
            na.set_msg_type(msg_type::NEIGHBOR_ADVERT);
            na.set_code(0);
            na.set_na_flags(na_flags::OVERRIDE);
            na.set_target_addr(a.octets());
            if !na.set_first_lladdr_option(nd_option::TARGET_LLADDR, our_mac) {
                return None;
            }
            na.fill_checksum(crate::wire::checksum::pseudo_v6(
                &a.octets(),
                &ALL_NODES,
                proto::ICMPV6,
                NA_LEN as u32,
            ));
            Some(len)
        }
    }
}

/// When to announce which of the system's addresses ([`announcement`]; `flowgate run`'s
/// first worker, between bursts): an address the first time it is owned (at the start,
/// or brought by a reload), `rounds` times `interval_ns` apart, the first right away. An
/// address owned again after a reload took it away is announced again.
#[derive(Debug)]
pub struct Announcer {
    rounds: u32,
    interval_ns: u64,
    owned: Vec<std::net::IpAddr>,
    /// What the next rounds announce, and how many are left.
    pending: Vec<std::net::IpAddr>,
    left: u32,
    next_ns: u64,
}

impl Announcer {
    pub fn new(rounds: u32, interval_ns: u64) -> Announcer {
        Announcer {
            rounds,
            interval_ns,
            owned: Vec::new(),
            pending: Vec::new(),
            left: 0,
            next_ns: 0,
        }
    }

    /// Takes the addresses owned from `now` on: those not owned before are announced
    /// (with any still pending, over `rounds` rounds from now).
    pub fn own(&mut self, addrs: impl Iterator<Item = std::net::IpAddr>, now: u64) {
        let mut owned: Vec<_> = addrs.collect();
        owned.sort_unstable();
        owned.dedup();
        let new: Vec<_> = (owned.iter())
            .filter(|a| self.owned.binary_search(a).is_err())
            .copied()
            .collect();
        if self.left == 0 {
            self.pending.clear(); // their rounds are over
        }
        self.pending.retain(|a| owned.binary_search(a).is_ok());
        if !new.is_empty() && self.rounds > 0 {
            self.pending.extend(new);
            self.left = self.rounds;
            self.next_ns = now;
        }
        if self.pending.is_empty() {
            self.left = 0;
        }
        self.owned = owned;
    }

    /// The addresses to announce at `now`, when a round is due (one call per round).
    pub fn due(&mut self, now: u64) -> Option<&[std::net::IpAddr]> {
        if self.left == 0 || now < self.next_ns {
            return None;
        }
        self.left -= 1;
        self.next_ns = now + self.interval_ns;
        Some(&self.pending)
    }
}

/// A validated Neighbor Solicitation: IPv6 view and ICMPv6 view.
struct Ns<'a> {
    ip: Ipv6Packet<&'a [u8]>,
    icmp: Icmpv6Packet<&'a [u8]>,
    target: [u8; 16],
}

fn is_solicited_node(a: &[u8; 16]) -> bool {
    a[..13] == [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]
}

fn ns<'a>(frame: &'a [u8], meta: &Meta) -> Option<Ns<'a>> {
    if meta.l3 != L3::Ipv6
        || meta.tuple.proto != proto::ICMPV6
        || meta.icmp_type != msg_type::NEIGHBOR_SOLICIT
        || meta.icmp_code != 0
        || meta.frag != Frag::None
        || meta.n_mpls != 0
        || meta.l4_off == 0
    {
        return None;
    }
    let l3 = usize::from(meta.l3_off);
    let ip = Ipv6Packet::new_checked(frame.get(l3..)?).ok()?;
    if ip.hop_limit() != 255 {
        return None;
    }
    let end = l3 + ipv6::HEADER_LEN + usize::from(ip.payload_len());
    let l4 = frame.get(usize::from(meta.l4_off)..end)?;
    let icmp = Icmpv6Packet::new_checked(l4).ok()?;
    let target = icmp.target_addr()?;
    if target[0] == 0xff || !icmp.nd_options_valid() {
        return None;
    }
    let upper_len = u32::try_from(l4.len()).ok()?;
    if !icmp.verify_checksum(ip.pseudo_sum(proto::ICMPV6, upper_len)) {
        return None;
    }
    if ip.src_addr() == [0; 16]
        && (!is_solicited_node(&ip.dst_addr())
            || icmp.nd_lladdr(nd_option::SOURCE_LLADDR).is_some())
    {
        return None;
    }
    Some(Ns { ip, icmp, target })
}

/// The target address of a Neighbor Solicitation, or `None` if `frame` is not a
/// valid one (see the module docs).
pub fn ns_target(frame: &[u8], meta: &Meta) -> Option<[u8; 16]> {
    ns(frame, meta).map(|n| n.target)
}

/// Writes the Neighbor Advertisement answering the NS in `frame` into `out`.
///
/// IPv6 source = the NS target, destination = the NS source, hop limit 255;
/// flags Solicited + Override; target = the NS target; one target link-layer
/// address option = `our_mac`; checksum filled. Ethernet destination is the NS's
/// source link-layer address option, or else its Ethernet source. For a duplicate
/// address detection NS (source `::`) the advertisement goes to ff02::1
/// (33:33:00:00:00:01) with the Solicited flag clear, as RFC 4861 §7.2.4 requires.
/// Returns the length written, or `None` if the NS is not valid or `out` is too small.
pub fn nd_advert(frame: &[u8], meta: &Meta, our_mac: [u8; 6], out: &mut [u8]) -> Option<usize> {
    let req = ns(frame, meta)?;
    let l3 = usize::from(meta.l3_off);
    let len = l3 + ipv6::HEADER_LEN + NA_LEN;
    let out = out.get_mut(..len)?;
    let dad = req.ip.src_addr() == [0; 16];
    let (dst_ip, dst_mac, flags) = if dad {
        (ALL_NODES, ALL_NODES_MAC, na_flags::OVERRIDE)
    } else {
        let eth_src = EthernetFrame::new_checked(frame).ok()?.src_addr();
        let mac = req
            .icmp
            .nd_lladdr(nd_option::SOURCE_LLADDR)
            .unwrap_or(eth_src);
        (
            req.ip.src_addr(),
            mac,
            na_flags::SOLICITED | na_flags::OVERRIDE,
        )
    };

    out[..l3].copy_from_slice(frame.get(..l3)?);
    let mut eth = EthernetFrame::new_checked(&mut out[..]).ok()?;
    eth.set_dst_addr(dst_mac);
    eth.set_src_addr(our_mac);

    let (_, rest) = out.split_at_mut(l3);
    let (ip_hdr, icmp_buf) = rest.split_at_mut(ipv6::HEADER_LEN);
    let mut ip = Ipv6Packet::new_unchecked(ip_hdr);
    ip.set_version_tc_flow(0, 0);
    ip.set_payload_len(NA_LEN as u16);
    ip.set_next_header(proto::ICMPV6);
    ip.set_hop_limit(255);
    ip.set_src_addr(req.target);
    ip.set_dst_addr(dst_ip);

    let mut na = Icmpv6Packet::new_unchecked(icmp_buf);
    na.set_msg_type(msg_type::NEIGHBOR_ADVERT);
    na.set_code(0);
    na.set_na_flags(flags);
    na.set_target_addr(req.target);
    if !na.set_first_lladdr_option(nd_option::TARGET_LLADDR, our_mac) {
        return None;
    }
    na.fill_checksum(crate::wire::checksum::pseudo_v6(
        &req.target,
        &dst_ip,
        proto::ICMPV6,
        NA_LEN as u32,
    ));
    Some(len)
}

/// Writes the echo reply to the ICMP (ICMPv6) echo request in `frame`, sent to an address
/// of the system, into `out`: Ethernet back to the frame's source MAC from `our_mac`,
/// with the frame's VLAN tags; IP from the address asked to the request's source, TTL
/// or hop limit 64 (IPv4: a 20-byte header, no options); the request's identifier,
/// sequence number and data, up to the IP payload's end (not the Ethernet padding).
/// Returns the length written, or `None` when `frame` is not such a request (not an
/// echo request with code 0 and a good checksum, a fragment, inside MPLS, from a source
/// that names no single host; the caller checks that the destination is the system's)
/// or `out` is too small.
pub fn echo_reply(frame: &[u8], m: &Meta, our_mac: [u8; 6], out: &mut [u8]) -> Option<usize> {
    use crate::wire::checksum;
    if !is_echo_request(m)
        || m.icmp_code != 0
        || m.frag != Frag::None
        || m.n_mpls != 0
        || m.l4_off == 0
        || !may_send_error(frame, m, false)
    {
        return None;
    }
    let (l3, l4) = (usize::from(m.l3_off), usize::from(m.l4_off));
    let packet = frame.get(l3..)?;
    // The end of the IP packet as its header says (the parser checked it is in `frame`).
    let end = l3
        + if m.v6 {
            ipv6::HEADER_LEN + usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]))
        } else {
            usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]))
        };
    let icmp_in = frame.get(l4..end)?;
    // A request whose checksum is wrong is not answered (as a host's stack would not).
    let sum = if m.v6 {
        let len = u32::try_from(icmp_in.len()).ok()?;
        checksum::add(
            checksum::pseudo_v6(&m.tuple.src, &m.tuple.dst, proto::ICMPV6, len),
            icmp_in,
        )
    } else {
        checksum::add(0, icmp_in)
    };
    if checksum::fold(sum) != 0xffff {
        return None;
    }
    let hdr = if m.v6 { ipv6::HEADER_LEN } else { 20 };
    let len = (l3 + hdr + icmp_in.len()).max(MIN_FRAME_LEN);
    let out = out.get_mut(..len)?;
    out.fill(0);
    out[..l3].copy_from_slice(frame.get(..l3)?);
    out[..6].copy_from_slice(frame.get(6..12)?);
    out[6..12].copy_from_slice(&our_mac);
    let (ip, icmp) = out[l3..].split_at_mut(hdr);
    let icmp = &mut icmp[..icmp_in.len()];
    icmp.copy_from_slice(icmp_in);
    // Only the type changes (8 to 0, 128 to 129), and swapping the addresses leaves the
    // ICMPv6 pseudo-header's sum as it was: an incremental checksum update.
    let (old, new) = if m.v6 {
        (128u16 << 8, 129u16 << 8)
    } else {
        (8 << 8, 0)
    };
    let ck = checksum::update16(u16::from_be_bytes([icmp[2], icmp[3]]), old, new);
    icmp[0] = (new >> 8) as u8;
    icmp[2..4].copy_from_slice(&ck.to_be_bytes());
    if m.v6 {
        ip[..8].copy_from_slice(packet.get(..8)?);
        ip[7] = 64;
        ip[8..24].copy_from_slice(&m.tuple.dst);
        ip[24..40].copy_from_slice(&m.tuple.src);
    } else {
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((hdr + icmp.len()) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(packet.get(4..6)?);
        ip[8] = 64;
        ip[9] = proto::ICMP;
        ip[12..16].copy_from_slice(m.tuple.dst.get(12..)?);
        ip[16..20].copy_from_slice(m.tuple.src.get(12..)?);
        let ck = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&ck.to_be_bytes());
    }
    Some(len)
}

/// The most of the packet an ICMPv4 error quotes: the error stays within 576 bytes of IP
/// (RFC 1812 §4.3.2.3).
const QUOTE_V4: usize = 576 - 20 - 8;
/// The most an ICMPv6 error quotes: the error stays within the minimum IPv6 MTU, 1280
/// bytes (RFC 4443 §2.4 (c)).
const QUOTE_V6: usize = 1280 - 40 - 8;
/// The IPv6 minimum link MTU (RFC 8200 §5): no Packet Too Big reports less.
pub const MIN_MTU_V6: u16 = 1280;
/// Room [`icmp_error`] may need in its output buffer (Ethernet with the most VLAN tags
/// the parser takes, IPv6, ICMPv6, the longest quote).
pub const ICMP_ERROR_MAX: usize = 14 + 4 * crate::pipeline::meta::MAX_VLANS + 1280;

/// Which ICMP error [`icmp_error`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcmpError {
    /// Time Exceeded, code 0: the TTL or hop limit ran out in transit.
    TimeExceeded,
    /// The packet does not fit the next hop's MTU, `mtu` (the largest IP packet, with
    /// any label stack this system adds taken off): IPv4 Destination Unreachable code 4,
    /// "fragmentation needed and DF set", with the next-hop MTU (RFC 1191 §4), only for
    /// a packet with DF set (one without may be fragmented); ICMPv6 Packet Too Big (RFC
    /// 4443 §3.2) with `mtu`, never less than [`MIN_MTU_V6`] (RFC 8201 §4).
    TooBig { mtu: u16 },
    /// Destination Unreachable, port unreachable (IPv4 code 3, ICMPv6 code 4): nothing
    /// takes the packet at its destination (a service with no server left, answering
    /// from its VIP); a TCP or UDP client's kernel fails the connection at once
    /// ("connection refused").
    PortUnreachable,
}

/// Whether an ICMP error may be sent about the IP packet `m` describes (RFC 1812
/// §4.3.2.7, RFC 4443 §2.4 (e)): not about an ICMP error, a non-first fragment, a
/// link-layer broadcast or multicast, an IP multicast or broadcast destination, or a
/// source that does not name one host (unspecified, multicast, broadcast, loopback).
/// `group_ok`: an IPv6 Packet Too Big, which RFC 4443 §2.4 (e.3) and (e.4) allow about a
/// multicast packet (so that path MTU discovery works for multicast).
fn may_send_error(frame: &[u8], m: &Meta, group_ok: bool) -> bool {
    use std::net::IpAddr;
    let icmp_error = if m.v6 {
        m.tuple.proto == proto::ICMPV6 && m.icmp_type < 128
    } else {
        m.tuple.proto == proto::ICMP && matches!(m.icmp_type, 3 | 4 | 5 | 11 | 12)
    };
    let l2_group = frame.first().is_none_or(|b| b & 1 != 0);
    if icmp_error || m.frag == Frag::Later || (l2_group && !group_ok) {
        return false;
    }
    let group = |a: IpAddr| a.is_multicast() || matches!(a, IpAddr::V4(v) if v.is_broadcast());
    let (s, d) = (m.src_ip(), m.dst_ip());
    !(s.is_unspecified() || s.is_loopback() || group(s) || (group(d) && !group_ok))
}

/// Whether `m` is an ICMP (ICMPv6) echo request.
pub fn is_echo_request(m: &Meta) -> bool {
    if m.v6 {
        m.tuple.proto == proto::ICMPV6 && m.icmp_type == msg_type::ECHO_REQUEST
    } else {
        m.tuple.proto == proto::ICMP && m.icmp_type == 8
    }
}

/// Writes the ICMP error `kind` about the IP packet in `frame` into `out`: Ethernet back
/// to the frame's source MAC from `our_mac`, with the frame's VLAN tags; IP from `src`
/// (an address of the system, in the packet's family) to the packet's source, TTL/hop
/// limit 64 (IPv4 with precedence 6, "internetwork control"); then the start of the
/// packet as it arrived, up to 548 bytes (IPv4) or 1232 (IPv6). Checksums filled;
/// zero-padded to 60 bytes. Returns the length written, or `None` when the packet must
/// not be answered (an ICMP error, a non-first fragment, a link-layer broadcast or
/// multicast, an IP multicast or broadcast destination — both allowed for an IPv6
/// Packet Too Big —, a source that names no single host, a packet inside MPLS, or for
/// [`IcmpError::TooBig`] an IPv4 packet without DF), `src` is of the other family, or
/// `out` is too small.
pub fn icmp_error(
    frame: &[u8],
    m: &Meta,
    our_mac: [u8; 6],
    src: std::net::IpAddr,
    kind: IcmpError,
    out: &mut [u8],
) -> Option<usize> {
    use crate::wire::checksum;
    use std::net::IpAddr;
    let group_ok = m.v6 && matches!(kind, IcmpError::TooBig { .. });
    if !matches!(m.l3, L3::Ipv4 | L3::Ipv6) || m.n_mpls != 0 || !may_send_error(frame, m, group_ok)
    {
        return None;
    }
    let l3 = usize::from(m.l3_off);
    let packet = frame.get(l3..)?;
    if let IcmpError::TooBig { .. } = kind
        && !m.v6
        && packet.get(6)? & 0x40 == 0
    {
        return None;
    }
    // The packet as its IP header bounds it (not the Ethernet padding after it).
    let ip_len = if m.v6 {
        ipv6::HEADER_LEN + usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?]))
    } else {
        usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]))
    };
    let (hdr, quote_max) = if m.v6 { (40, QUOTE_V6) } else { (20, QUOTE_V4) };
    let quote = packet.get(..ip_len.min(packet.len()).min(quote_max))?;
    let len = (l3 + hdr + 8 + quote.len()).max(MIN_FRAME_LEN);
    let out = out.get_mut(..len)?;
    out.fill(0);
    out[..l3].copy_from_slice(frame.get(..l3)?);
    out[..6].copy_from_slice(frame.get(6..12)?);
    out[6..12].copy_from_slice(&our_mac);
    let icmp_len = 8 + quote.len();
    let (ip, icmp) = out[l3..].split_at_mut(hdr);
    let icmp = &mut icmp[..icmp_len];
    icmp[8..].copy_from_slice(quote);
    match (src, m.v6) {
        (IpAddr::V4(s), false) => {
            let dst = super::parse::v4_unmapped(&m.tuple.src)?;
            ip[0] = 0x45;
            ip[1] = 0xc0;
            ip[2..4].copy_from_slice(&((hdr + icmp_len) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = proto::ICMP;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&dst);
            let ck = checksum::checksum(ip);
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
            match kind {
                IcmpError::TimeExceeded => icmp[0] = 11,
                IcmpError::TooBig { mtu } => {
                    icmp[..2].copy_from_slice(&[3, 4]);
                    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
                }
                IcmpError::PortUnreachable => icmp[..2].copy_from_slice(&[3, 3]),
            }
            let ck = checksum::checksum(icmp);
            icmp[2..4].copy_from_slice(&ck.to_be_bytes());
        }
        (IpAddr::V6(s), true) => {
            let (s, dst) = (s.octets(), m.tuple.src);
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
            ip[6] = proto::ICMPV6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s);
            ip[24..40].copy_from_slice(&dst);
            match kind {
                IcmpError::TimeExceeded => icmp[0] = msg_type::TIME_EXCEEDED,
                IcmpError::TooBig { mtu } => {
                    icmp[0] = msg_type::PKT_TOO_BIG;
                    let mtu = u32::from(mtu.max(MIN_MTU_V6));
                    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
                }
                IcmpError::PortUnreachable => {
                    icmp[..2].copy_from_slice(&[msg_type::DST_UNREACH, 4]);
                }
            }
            let pseudo = checksum::pseudo_v6(&s, &dst, proto::ICMPV6, icmp_len as u32);
            let ck = !checksum::fold(checksum::add(pseudo, icmp));
            icmp[2..4].copy_from_slice(&ck.to_be_bytes());
        }
        _ => return None,
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::parse;
    use crate::wire::{hex, scapy, to_hex};

    const OUR: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
    const TTL: IcmpError = IcmpError::TimeExceeded;

    // Ether(dst="ff:ff:ff:ff:ff:ff", src="66:77:88:99:aa:bb")/Dot1Q(vlan=7)/ARP(op=1,
    //   hwsrc="66:77:88:99:aa:bb", psrc="192.0.2.1", pdst="192.0.2.254")
    const ARP_REQ: &str = "ffffffffffff66778899aabb810000070806000108000604000166778899aabbc0000201000000000000c00002fe";
    // Ether(dst="ff:ff:ff:ff:ff:ff", src="66:77:88:99:aa:bb")/ARP(op=1,
    //   hwsrc="66:77:88:99:aa:bb", psrc="192.0.2.1", pdst="192.0.2.1")  (gratuitous)
    const ARP_GRAT: &str =
        "ffffffffffff66778899aabb0806000108000604000166778899aabbc0000201000000000000c0000201";
    // Ether(dst="33:33:ff:00:00:02", src="66:77:88:99:aa:bb")/Dot1Q(vlan=5)
    //   /IPv6(src="2001:db8::1", dst="ff02::1:ff00:2", hlim=255)/ICMPv6ND_NS(tgt="2001:db8::2")
    //   /ICMPv6NDOptSrcLLAddr(lladdr="66:77:88:99:aa:bb")
    const NS: &str = "3333ff00000266778899aabb8100000586dd6000000000203aff20010db8000000000000000000000001ff0200000000000000000001ff0000028700845b0000000020010db8000000000000000000000002010166778899aabb";
    // Same with hlim=64 (must be ignored).
    const NS_HLIM64: &str = "3333ff00000266778899aabb8100000586dd6000000000203a4020010db8000000000000000000000001ff0200000000000000000001ff0000028700845b0000000020010db8000000000000000000000002010166778899aabb";
    // Ether(dst="33:33:ff:00:00:02", src="66:77:88:99:aa:bb")/IPv6(src="::",
    //   dst="ff02::1:ff00:2", hlim=255)/ICMPv6ND_NS(tgt="2001:db8::2")  (DAD)
    const NS_DAD: &str = "3333ff00000266778899aabb86dd6000000000183aff00000000000000000000000000000000ff0200000000000000000001ff00000287004ceb0000000020010db8000000000000000000000002";

    const T6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn meta(f: &[u8]) -> Meta {
        parse(f).unwrap()
    }

    #[test]
    fn arp_reply_fields() {
        let f = hex(ARP_REQ);
        let m = meta(&f);
        assert_eq!(arp_request_target(&f, &m), Some([192, 0, 2, 254]));
        let mut out = [0u8; 128];
        let n = arp_reply(&f, &m, OUR, &mut out).unwrap();
        assert_eq!(n, 60);
        let r = &out[..n];
        let rm = parse(r).unwrap();
        assert_eq!((rm.l3, rm.n_vlans, rm.vlans[0].tci), (L3::Arp, 1, 7));
        let eth = EthernetFrame::new_checked(r).unwrap();
        assert_eq!(eth.dst_addr(), [0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb]);
        assert_eq!(eth.src_addr(), OUR);
        let a = ArpPacket::new_checked(&r[18..]).unwrap();
        assert_eq!(a.op(), 2);
        assert_eq!((a.sha(), a.spa()), (OUR, [192, 0, 2, 254]));
        assert_eq!(
            (a.tha(), a.tpa()),
            ([0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb], [192, 0, 2, 1])
        );
        // A reply is not a request.
        assert_eq!(arp_request_target(r, &rm), None);
        if let Some(o) = scapy(&format!(
            "p=Ether(bytes.fromhex('{}'))\na=p[ARP]\n\
             print(p.dst, p.src, p[Dot1Q].vlan, a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst, a.hwlen, a.plen, a.ptype)",
            to_hex(r)
        )) {
            assert_eq!(
                o,
                "66:77:88:99:aa:bb 02:00:00:00:00:99 7 2 02:00:00:00:00:99 192.0.2.254 \
                 66:77:88:99:aa:bb 192.0.2.1 6 4 2048"
            );
        }
    }

    #[test]
    fn arp_refusals() {
        let f = hex(ARP_REQ);
        let m = meta(&f);
        let mut small = [0u8; 59];
        assert_eq!(arp_reply(&f, &m, OUR, &mut small), None);
        let g = hex(ARP_GRAT);
        assert_eq!(arp_request_target(&g, &meta(&g)), None);
        let mut mc = f.clone();
        mc[18 + 8] = 0x01; // multicast sender MAC
        assert_eq!(arp_request_target(&mc, &meta(&mc)), None);
        let ns = hex(NS);
        assert_eq!(arp_reply(&ns, &meta(&ns), OUR, &mut [0u8; 128]), None);
    }

    #[test]
    fn neighbor_advert() {
        let f = hex(NS);
        let m = meta(&f);
        assert_eq!(ns_target(&f, &m), Some(T6));
        let mut out = [0u8; 256];
        let n = nd_advert(&f, &m, OUR, &mut out).unwrap();
        assert_eq!(n, 18 + 40 + 32);
        let r = &out[..n];
        let rm = parse(r).unwrap();
        assert_eq!((rm.icmp_type, rm.n_vlans, rm.vlans[0].tci), (136, 1, 5));
        let ip = Ipv6Packet::new_checked(&r[18..]).unwrap();
        assert_eq!(ip.src_addr(), T6);
        assert_eq!(ip.dst_addr()[15], 1);
        assert_eq!(ip.hop_limit(), 255);
        let na = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(na.verify_checksum(ip.pseudo_sum(58, 32)));
        assert_eq!(na.na_flags(), na_flags::SOLICITED | na_flags::OVERRIDE);
        assert_eq!(na.nd_lladdr(nd_option::TARGET_LLADDR), Some(OUR));
        if let Some(o) = scapy(&format!(
            "p=Ether(bytes.fromhex('{}'))\nna=p[ICMPv6ND_NA]\nc=na.cksum\ndel na.cksum\n\
             q=Ether(raw(p))\nprint(c==q[ICMPv6ND_NA].cksum, p.dst, p.src, p[Dot1Q].vlan, \
             p[IPv6].src, p[IPv6].dst, p[IPv6].hlim, p[IPv6].plen, na.R, na.S, na.O, na.tgt, \
             p[ICMPv6NDOptDstLLAddr].lladdr)",
            to_hex(r)
        )) {
            assert_eq!(
                o,
                "True 66:77:88:99:aa:bb 02:00:00:00:00:99 5 2001:db8::2 2001:db8::1 255 32 \
                 0 1 1 2001:db8::2 02:00:00:00:00:99"
            );
        }
    }

    #[test]
    fn neighbor_advert_for_dad() {
        let f = hex(NS_DAD);
        let m = meta(&f);
        assert_eq!(ns_target(&f, &m), Some(T6));
        let mut out = [0u8; 256];
        let n = nd_advert(&f, &m, OUR, &mut out).unwrap();
        let r = &out[..n];
        if let Some(o) = scapy(&format!(
            "p=Ether(bytes.fromhex('{}'))\nna=p[ICMPv6ND_NA]\nc=na.cksum\ndel na.cksum\n\
             q=Ether(raw(p))\nprint(c==q[ICMPv6ND_NA].cksum, p.dst, p[IPv6].src, p[IPv6].dst, \
             na.S, na.O)",
            to_hex(r)
        )) {
            assert_eq!(o, "True 33:33:00:00:00:01 2001:db8::2 ff02::1 0 1");
        }
        let ip = Ipv6Packet::new_checked(&r[14..]).unwrap();
        assert_eq!(ip.dst_addr(), ALL_NODES);
    }

    #[test]
    fn ns_refusals() {
        let h = hex(NS_HLIM64);
        assert_eq!(ns_target(&h, &meta(&h)), None);
        let mut bad = hex(NS);
        let last = bad.len() - 1;
        bad[last] ^= 1; // checksum no longer matches
        assert_eq!(ns_target(&bad, &meta(&bad)), None);
        let f = hex(NS);
        let m = meta(&f);
        assert_eq!(nd_advert(&f, &m, OUR, &mut [0u8; 89]), None);
        let a = hex(ARP_REQ);
        assert_eq!(ns_target(&a, &meta(&a)), None);
        // DAD NS carrying a source link-layer option is invalid.
        let mut d = hex(NS);
        d[18 + 8..18 + 24].fill(0);
        {
            let mut ip = Ipv6Packet::new_checked(&mut d[18..]).unwrap();
            let ps = ip.pseudo_sum(58, 32);
            Icmpv6Packet::new_checked(ip.payload_mut())
                .unwrap()
                .fill_checksum(ps);
        }
        let m = meta(&d);
        assert_eq!(ns_target(&d, &m), None);
        // Without the option (and with its length removed) it is a valid DAD NS.
        let mut d2 = d[..d.len() - 8].to_vec();
        d2[18 + 5] = 24;
        {
            let mut ip = Ipv6Packet::new_checked(&mut d2[18..]).unwrap();
            let ps = ip.pseudo_sum(58, 24);
            Icmpv6Packet::new_checked(ip.payload_mut())
                .unwrap()
                .fill_checksum(ps);
        }
        assert_eq!(ns_target(&d2, &meta(&d2)), Some(T6));
    }

    /// Frame bytes built by scapy from `expr` (None without scapy, outside CI).
    fn scapy_frame(expr: &str) -> Option<Vec<u8>> {
        scapy(&format!("print(bytes({expr}).hex())")).map(|h| hex(&h))
    }

    /// scapy's reading of an ICMP Time Exceeded: addresses, TTL, ICMP type/code, whether
    /// both checksums are what scapy computes, and the quoted packet's length and
    /// source.
    fn scapy_reads_error(r: &[u8], v6: bool) -> Option<String> {
        let (ip, icmp, quote) = if v6 {
            ("IPv6", "ICMPv6TimeExceeded", "IPerror6")
        } else {
            ("IP", "ICMP", "IPerror")
        };
        let ck = if v6 {
            "del q[ICMPv6TimeExceeded].cksum"
        } else {
            "del q[IP].chksum; del q[ICMP].chksum"
        };
        let ck_eq = if v6 {
            "q[ICMPv6TimeExceeded].cksum == p[ICMPv6TimeExceeded].cksum"
        } else {
            "q[IP].chksum == p[IP].chksum and q[ICMP].chksum == p[ICMP].chksum"
        };
        let ttl = if v6 { "hlim" } else { "ttl" };
        scapy(&format!(
            "p=Ether(bytes.fromhex('{}'))\nq=p.copy(); {ck}; q=Ether(bytes(q))\n\
             e=p[{icmp}]\n\
             print(p.dst, p.src, p[Dot1Q].vlan if Dot1Q in p else '-', p[{ip}].src, p[{ip}].dst, \
             p[{ip}].{ttl}, e.type, e.code, {ck_eq}, len(bytes(p[{quote}])), p[{quote}].src)",
            to_hex(r)
        ))
    }

    #[test]
    fn announcer_announces_each_address_first_owned_so_many_times() {
        let a = |s: &str| -> std::net::IpAddr { s.parse().unwrap() };
        let sec = 1_000_000_000;
        let mut n = Announcer::new(3, sec);
        assert_eq!(n.due(0), None, "nothing owned");
        n.own(
            [a("192.0.2.1"), a("2001:db8::1"), a("192.0.2.1")].into_iter(),
            10,
        );
        assert_eq!(n.due(9), None);
        let first = [a("192.0.2.1"), a("2001:db8::1")];
        assert_eq!(n.due(10), Some(&first[..]));
        assert_eq!(n.due(10 + sec - 1), None, "a second apart");
        assert_eq!(n.due(10 + sec), Some(&first[..]));
        // A reload that keeps them announces nothing more than the rounds left.
        n.own(first.into_iter(), 10 + sec + 5);
        assert_eq!(n.due(10 + 3 * sec), Some(&first[..]));
        assert_eq!(n.due(10 + 9 * sec), None, "three rounds");
        // One more address: it (and only it) gets its three rounds.
        let more = [a("192.0.2.1"), a("2001:db8::1"), a("198.51.100.10")];
        n.own(more.into_iter(), 20 * sec);
        for k in 0..3 {
            assert_eq!(
                n.due(20 * sec + k * sec),
                Some(&[a("198.51.100.10")][..]),
                "{k}"
            );
        }
        assert_eq!(n.due(30 * sec), None);
        // Taken away, then back: announced again; gone while pending: dropped.
        n.own(first.into_iter(), 40 * sec);
        assert_eq!(n.due(40 * sec), None);
        n.own(more.into_iter(), 41 * sec);
        assert_eq!(n.due(41 * sec), Some(&[a("198.51.100.10")][..]));
        n.own(first.into_iter(), 41 * sec + 1);
        assert_eq!(n.due(42 * sec), None, "no longer owned");
        // No rounds: never.
        let mut off = Announcer::new(0, sec);
        off.own(first.into_iter(), 0);
        assert_eq!(off.due(0), None);
    }

    #[test]
    fn announcements_check_out_in_scapy() {
        let mut out = [0u8; 128];
        let v4 = announcement("192.0.2.10".parse().unwrap(), OUR, &mut out).unwrap();
        let Some(got) = scapy(&format!(
            "p=Ether(bytes.fromhex('{}'))\na=p[ARP]\n\
             print(p.dst, p.src, a.op, a.hwsrc, a.psrc, a.hwdst, a.pdst, len(p))",
            to_hex(&out[..v4])
        )) else {
            return;
        };
        assert_eq!(
            got,
            "ff:ff:ff:ff:ff:ff 02:00:00:00:00:99 1 02:00:00:00:00:99 192.0.2.10 00:00:00:00:00:00 192.0.2.10 60"
        );
        let v6 = announcement("2001:db8::10".parse().unwrap(), OUR, &mut out).unwrap();
        let got = scapy(&format!(
            "p=Ether(bytes.fromhex('{}'))\nn=p[ICMPv6ND_NA]\n\
             q=p.copy(); del q[ICMPv6ND_NA].cksum; q=Ether(bytes(q))\n\
             print(p.dst, p.src, p[IPv6].src, p[IPv6].dst, p[IPv6].hlim, n.R, n.S, n.O, n.tgt, \
             p[ICMPv6NDOptDstLLAddr].lladdr, q[ICMPv6ND_NA].cksum == n.cksum)",
            to_hex(&out[..v6])
        ))
        .unwrap();
        assert_eq!(
            got,
            "33:33:00:00:00:01 02:00:00:00:00:99 2001:db8::10 ff02::1 255 0 0 1 2001:db8::10 02:00:00:00:00:99 True"
        );
        assert_eq!(
            announcement("2001:db8::10".parse().unwrap(), OUR, &mut out[..85]),
            None
        );
    }

    #[test]
    fn echo_replies_check_out_in_scapy() {
        let e = "Ether(dst='02:00:00:00:00:01', src='66:77:88:99:aa:bb')";
        let cases = [
            (
                format!(
                    "{e}/Dot1Q(vlan=7)/IP(src='198.51.100.7', dst='192.0.2.1', ttl=1, id=77)/ICMP(type=8, id=0x1234, seq=9)/Raw(b'ping'*20)"
                ),
                "p=Ether(bytes.fromhex(H)); q=p.copy(); del q[IP].chksum; del q[ICMP].chksum; q=Ether(bytes(q))\n\
                 print(p.dst, p.src, p[Dot1Q].vlan, p[IP].src, p[IP].dst, p[IP].ttl, p[ICMP].type, p[ICMP].code, \
                 hex(p[ICMP].id), p[ICMP].seq, len(p[Raw].load), q[IP].chksum == p[IP].chksum and q[ICMP].chksum == p[ICMP].chksum)",
                "66:77:88:99:aa:bb 02:00:00:00:00:99 7 192.0.2.1 198.51.100.7 64 0 0 0x1234 9 80 True",
            ),
            (
                format!(
                    "{e}/IPv6(src='2001:db8:1::7', dst='2001:db8::1', hlim=3)/ICMPv6EchoRequest(id=0x4321, seq=2, data=b'x'*1000)"
                ),
                "p=Ether(bytes.fromhex(H)); q=p.copy(); del q[ICMPv6EchoReply].cksum; q=Ether(bytes(q))\n\
                 r=p[ICMPv6EchoReply]\n\
                 print(p.dst, p.src, '-', p[IPv6].src, p[IPv6].dst, p[IPv6].hlim, r.type, r.code, hex(r.id), r.seq, len(r.data), \
                 q[ICMPv6EchoReply].cksum == r.cksum)",
                "66:77:88:99:aa:bb 02:00:00:00:00:99 - 2001:db8::1 2001:db8:1::7 64 129 0 0x4321 2 1000 True",
            ),
        ];
        let mut out = vec![0u8; 2048];
        for (frame, read, expect) in cases {
            let Some(f) = scapy_frame(&frame) else {
                return;
            };
            let m = parse(&f).unwrap();
            let n = echo_reply(&f, &m, OUR, &mut out).expect("answered");
            let got = scapy(&format!("H='{}'\n{read}", to_hex(&out[..n]))).unwrap();
            assert_eq!(got, expect, "{frame}");
            assert_eq!(
                echo_reply(&f, &m, OUR, &mut out[..n - 1]),
                None,
                "too small"
            );
        }
        // Not answered: a bad checksum, a reply, code 1, a fragment, a multicast source.
        for frame in [
            format!("{e}/IP(src='198.51.100.7', dst='192.0.2.1')/ICMP(type=8, chksum=0x1111)"),
            format!("{e}/IP(src='198.51.100.7', dst='192.0.2.1')/ICMP(type=0)"),
            format!("{e}/IP(src='198.51.100.7', dst='192.0.2.1')/ICMP(type=8, code=1)"),
            format!(
                "{e}/IP(src='198.51.100.7', dst='192.0.2.1', flags='MF')/ICMP(type=8)/Raw(b'z'*64)"
            ),
            format!("{e}/IP(src='224.0.0.9', dst='192.0.2.1')/ICMP(type=8)"),
            format!(
                "{e}/IPv6(src='2001:db8:1::7', dst='2001:db8::1')/ICMPv6EchoRequest(cksum=0x2222)"
            ),
        ] {
            let Some(f) = scapy_frame(&frame) else {
                return;
            };
            let m = parse(&f).unwrap();
            assert_eq!(echo_reply(&f, &m, OUR, &mut out), None, "{frame}");
        }
    }

    #[test]
    fn time_exceeded_v4_quotes_548_bytes_and_checks_out() {
        let Some(f) = scapy_frame(
            "Ether(dst='02:00:00:00:00:01', src='66:77:88:99:aa:bb')/Dot1Q(vlan=7)\
             /IP(src='198.51.100.7', dst='203.0.113.10', ttl=1)/UDP(sport=1234, dport=53)\
             /Raw(b'x'*700)",
        ) else {
            return;
        };
        let m = parse(&f).unwrap();
        assert_eq!(m.ttl, 1);
        let mut out = vec![0u8; ICMP_ERROR_MAX];
        let src = "192.0.2.1".parse().unwrap();
        let n = icmp_error(&f, &m, OUR, src, TTL, &mut out).expect("answered");
        // Ethernet + tag + IPv4 + ICMP + 548 quoted bytes: 576 bytes of IP.
        assert_eq!(n, 18 + 576);
        let r = &out[..n];
        assert_eq!(
            scapy_reads_error(r, false).unwrap(),
            "66:77:88:99:aa:bb 02:00:00:00:00:99 7 192.0.2.1 198.51.100.7 64 11 0 True 548 198.51.100.7"
        );
        assert_eq!(&r[18 + 28..], &f[18..18 + 548], "the packet as it arrived");
        // An IPv6 address of the system cannot answer an IPv4 packet.
        let v6src = "2001:db8::1".parse().unwrap();
        assert_eq!(icmp_error(&f, &m, OUR, v6src, TTL, &mut out), None);
        assert_eq!(icmp_error(&f, &m, OUR, src, TTL, &mut out[..n - 1]), None);
    }

    #[test]
    fn time_exceeded_v6_quotes_up_to_the_minimum_mtu() {
        let Some(f) = scapy_frame(
            "Ether(dst='02:00:00:00:00:01', src='66:77:88:99:aa:bb')\
             /IPv6(src='2001:db8:1::7', dst='2001:db8::10', hlim=1)/TCP(sport=40000, dport=80, flags='A')\
             /Raw(b'y'*1400)",
        ) else {
            return;
        };
        let m = parse(&f).unwrap();
        let mut out = vec![0u8; ICMP_ERROR_MAX];
        let src = "2001:db8::1".parse().unwrap();
        let n = icmp_error(&f, &m, OUR, src, TTL, &mut out).expect("answered");
        assert_eq!(n, 14 + 1280);
        assert_eq!(
            scapy_reads_error(&out[..n], true).unwrap(),
            "66:77:88:99:aa:bb 02:00:00:00:00:99 - 2001:db8::1 2001:db8:1::7 64 3 0 True 1232 2001:db8:1::7"
        );
        // A short packet is quoted whole, without the Ethernet padding after it.
        let Some(g) = scapy_frame(
            "Ether(dst='02:00:00:00:00:01', src='66:77:88:99:aa:bb')\
             /IPv6(src='2001:db8:1::7', dst='2001:db8::10', hlim=0)/UDP(sport=5, dport=6)",
        ) else {
            return;
        };
        let mut padded = g.clone();
        padded.extend_from_slice(&[0xee; 10]);
        let m = parse(&padded).unwrap();
        let n = icmp_error(&padded, &m, OUR, src, TTL, &mut out).expect("answered");
        assert_eq!(n, 14 + 48 + (g.len() - 14));
        assert_eq!(&out[14 + 48..n], &g[14..]);
    }

    #[test]
    fn time_exceeded_refusals() {
        let src4: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let src6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let mut out = vec![0u8; ICMP_ERROR_MAX];
        let e = "Ether(dst='02:00:00:00:00:01', src='66:77:88:99:aa:bb')";
        let cases = [
            // An ICMP error is never answered with one.
            (format!("{e}/IP(src='198.51.100.7', dst='203.0.113.10', ttl=1)/ICMP(type=3, code=1)/IPerror(src='203.0.113.10', dst='198.51.100.7')/UDPerror()"), false),
            (format!("{e}/IPv6(src='2001:db8:1::7', dst='2001:db8::10', hlim=1)/ICMPv6DestUnreach()/IPerror6()/UDPerror()"), false),
            // Nor a non-first fragment, a link-layer broadcast, a multicast destination,
            // a source that is no one host.
            (format!("{e}/IP(src='198.51.100.7', dst='203.0.113.10', ttl=1, frag=100)/Raw(b'z'*16)"), false),
            ("Ether(dst='ff:ff:ff:ff:ff:ff', src='66:77:88:99:aa:bb')/IP(src='198.51.100.7', dst='203.0.113.10', ttl=1)/UDP()".to_string(), false),
            (format!("{e}/IP(src='198.51.100.7', dst='239.1.2.3', ttl=1)/UDP()"), false),
            (format!("{e}/IP(src='0.0.0.0', dst='203.0.113.10', ttl=1)/UDP()"), false),
            (format!("{e}/IP(src='127.0.0.1', dst='203.0.113.10', ttl=1)/UDP()"), false),
            (format!("{e}/IPv6(src='ff02::1', dst='2001:db8::10', hlim=1)/UDP()"), false),
            (format!("{e}/IPv6(src='2001:db8:1::7', dst='ff02::1', hlim=1)/UDP()"), false),
            // Inside MPLS: not answered.
            (format!("{e}/__import__('scapy.contrib.mpls', fromlist=['MPLS']).MPLS(label=100, s=1, ttl=1)/IP(src='198.51.100.7', dst='203.0.113.10', ttl=1)/UDP()"), false),
            // An echo request and a first fragment are.
            (format!("{e}/IP(src='198.51.100.7', dst='203.0.113.10', ttl=1)/ICMP(type=8)"), true),
            (format!("{e}/IP(src='198.51.100.7', dst='203.0.113.10', ttl=1, flags='MF')/UDP()/Raw(b'q'*40)"), true),
            (format!("{e}/IPv6(src='2001:db8:1::7', dst='2001:db8::10', hlim=1)/ICMPv6EchoRequest()"), true),
        ];
        for (expr, answered) in cases {
            let Some(f) = scapy_frame(&expr) else {
                return;
            };
            let m = parse(&f).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
            let src = if m.v6 { src6 } else { src4 };
            assert_eq!(
                icmp_error(&f, &m, OUR, src, TTL, &mut out).is_some(),
                answered,
                "{expr}"
            );
        }
    }

    #[test]
    fn too_big_names_the_mtu_and_checks_out_in_scapy() {
        let e = "Ether(dst='02:00:00:00:00:01', src='66:77:88:99:aa:bb')";
        let read4 = "p=Ether(bytes.fromhex(H)); q=p.copy(); del q[IP].chksum; del q[ICMP].chksum; q=Ether(bytes(q))\n\
             print(p.dst, p.src, p[Dot1Q].vlan if Dot1Q in p else '-', p[IP].src, p[IP].dst, p[IP].ttl, p[ICMP].type, p[ICMP].code, \
             p[ICMP].nexthopmtu, q[IP].chksum == p[IP].chksum and q[ICMP].chksum == p[ICMP].chksum, len(bytes(p[IPerror])), p[IPerror].dst)";
        let read6 = "p=Ether(bytes.fromhex(H)); q=p.copy(); del q[ICMPv6PacketTooBig].cksum; q=Ether(bytes(q))\n\
             r=p[ICMPv6PacketTooBig]\n\
             print(p.dst, p.src, '-', p[IPv6].src, p[IPv6].dst, p[IPv6].hlim, r.type, r.code, r.mtu, \
             q[ICMPv6PacketTooBig].cksum == r.cksum, len(bytes(p[IPerror6])), p[IPerror6].dst)";
        let cases = [
            // IPv4 with DF, tagged: Fragmentation Needed with the next-hop MTU.
            (
                format!(
                    "{e}/Dot1Q(vlan=7)/IP(src='198.51.100.7', dst='203.0.113.10', flags='DF')/TCP(sport=40000, dport=80, flags='A')/Raw(b'x'*1460)"
                ),
                "192.0.2.1",
                1400,
                read4,
                "66:77:88:99:aa:bb 02:00:00:00:00:99 7 192.0.2.1 198.51.100.7 64 3 4 1400 True 548 203.0.113.10",
            ),
            // IPv6: Packet Too Big with the MTU...
            (
                format!(
                    "{e}/IPv6(src='2001:db8:1::7', dst='2001:db8::10')/TCP(sport=40000, dport=80, flags='A')/Raw(b'y'*1440)"
                ),
                "2001:db8::1",
                1396,
                read6,
                "66:77:88:99:aa:bb 02:00:00:00:00:99 - 2001:db8::1 2001:db8:1::7 64 2 0 1396 True 1232 2001:db8::10",
            ),
            // ... never below 1280, and also about a multicast packet (RFC 4443 §2.4 (e.3)).
            (
                "Ether(dst='33:33:00:00:00:01', src='66:77:88:99:aa:bb')/IPv6(src='2001:db8:1::7', dst='ff0e::1')/UDP(sport=5000, dport=5001)/Raw(b'z'*1300)".to_string(),
                "2001:db8::1",
                1276,
                read6,
                "66:77:88:99:aa:bb 02:00:00:00:00:99 - 2001:db8::1 2001:db8:1::7 64 2 0 1280 True 1232 ff0e::1",
            ),
        ];
        let mut out = vec![0u8; ICMP_ERROR_MAX];
        for (frame, src, mtu, read, expect) in cases {
            let Some(f) = scapy_frame(&frame) else {
                return;
            };
            let m = parse(&f).unwrap();
            let kind = IcmpError::TooBig { mtu };
            let src = src.parse().unwrap();
            let n = icmp_error(&f, &m, OUR, src, kind, &mut out).expect("answered");
            let got = scapy(&format!("H='{}'\n{read}", to_hex(&out[..n]))).unwrap();
            assert_eq!(got, expect, "{frame}");
        }
        // Not answered: IPv4 without DF (it may be fragmented), an IPv4 multicast, an
        // ICMP error; while a Time Exceeded about the IPv6 multicast is not sent either.
        let src4: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        let kind = IcmpError::TooBig { mtu: 1400 };
        for frame in [
            format!("{e}/IP(src='198.51.100.7', dst='203.0.113.10')/UDP()/Raw(b'x'*1460)"),
            format!("{e}/IP(src='198.51.100.7', dst='239.1.2.3', flags='DF')/UDP()/Raw(b'x'*1460)"),
            format!(
                "{e}/IP(src='198.51.100.7', dst='203.0.113.10', flags='DF')/ICMP(type=11)/IPerror()/Raw(b'x'*1460)"
            ),
        ] {
            let Some(f) = scapy_frame(&frame) else {
                return;
            };
            let m = parse(&f).unwrap();
            assert_eq!(
                icmp_error(&f, &m, OUR, src4, kind, &mut out),
                None,
                "{frame}"
            );
        }
        let Some(f) = scapy_frame(
            "Ether(dst='33:33:00:00:00:01', src='66:77:88:99:aa:bb')/IPv6(src='2001:db8:1::7', dst='ff0e::1', hlim=1)/UDP()",
        ) else {
            return;
        };
        let src6 = "2001:db8::1".parse().unwrap();
        assert_eq!(
            icmp_error(&f, &parse(&f).unwrap(), OUR, src6, TTL, &mut out),
            None
        );
    }

    #[test]
    fn port_unreachable_checks_out_in_scapy() {
        let e = "Ether(dst='02:00:00:00:00:01', src='66:77:88:99:aa:bb')";
        let cases = [
            (
                format!(
                    "{e}/IP(src='198.51.100.7', dst='203.0.113.10')/TCP(sport=40000, dport=80, flags='S')"
                ),
                "203.0.113.10",
                "p=Ether(bytes.fromhex(H)); q=p.copy(); del q[IP].chksum; del q[ICMP].chksum; q=Ether(bytes(q))\n\
                 print(p.dst, p[IP].src, p[IP].dst, p[ICMP].type, p[ICMP].code, \
                 q[IP].chksum == p[IP].chksum and q[ICMP].chksum == p[ICMP].chksum, p[TCPerror].dport, p[TCPerror].flags)",
                "66:77:88:99:aa:bb 203.0.113.10 198.51.100.7 3 3 True 80 S",
            ),
            (
                format!(
                    "{e}/IPv6(src='2001:db8:1::7', dst='2001:db8::10')/UDP(sport=5000, dport=53)/Raw(b'q'*30)"
                ),
                "2001:db8::10",
                "p=Ether(bytes.fromhex(H)); q=p.copy(); del q[ICMPv6DestUnreach].cksum; q=Ether(bytes(q))\n\
                 r=p[ICMPv6DestUnreach]\n\
                 print(p.dst, p[IPv6].src, p[IPv6].dst, r.type, r.code, q[ICMPv6DestUnreach].cksum == r.cksum, \
                 p[UDPerror].dport, len(p[UDPerror].payload))",
                "66:77:88:99:aa:bb 2001:db8::10 2001:db8:1::7 1 4 True 53 30",
            ),
        ];
        let mut out = vec![0u8; ICMP_ERROR_MAX];
        for (frame, src, read, expect) in cases {
            let Some(f) = scapy_frame(&frame) else {
                return;
            };
            let m = parse(&f).unwrap();
            let kind = IcmpError::PortUnreachable;
            let n =
                icmp_error(&f, &m, OUR, src.parse().unwrap(), kind, &mut out).expect("answered");
            let got = scapy(&format!("H='{}'\n{read}", to_hex(&out[..n]))).unwrap();
            assert_eq!(got, expect, "{frame}");
        }
    }

    proptest::proptest! {
        /// Any IP frame (its TTL or hop limit run out, too big, or unwanted), damaged or not:
        /// `icmp_error` never panics, never writes past what it returns, and what it writes parses as
        /// an ICMP error from the system to the packet's source whose quote keys the same
        /// flow as the packet (for TCP and UDP, whose ports the quote holds), so it
        /// follows that flow back.
        #[test]
        fn icmp_errors_parse_and_quote_the_flow(
            v6 in proptest::prelude::any::<bool>(),
            tagged in proptest::prelude::any::<bool>(),
            proto in proptest::sample::select(vec![6u8, 17, 1, 58, 50, 47]),
            payload in 0usize..1500,
            flips in proptest::collection::vec((0usize..80, 0u8..=255), 0..3),
            out_len in 0usize..1400,
            kind in 0u8..3,
            df in proptest::prelude::any::<bool>(),
        ) {
            let mut f = vec![0u8; 12];
            f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
            if tagged {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            }
            let l4 = vec![0x40u8; 20 + payload];
            let l3 = f.len() + 2;
            if v6 {
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                f.extend_from_slice(&[proto, 1]);
                f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
                f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10]);
            } else {
                f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
                f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                let flags = if df { 0x40 } else { 0 };
                f.extend_from_slice(&[0, 1, flags, 0, 1, proto, 0, 0, 198, 51, 100, 7, 203, 0, 113, 10]);
                let ck = crate::wire::checksum::checksum(&f[l3..l3 + 20]);
                f[l3 + 10..l3 + 12].copy_from_slice(&ck.to_be_bytes());
            }
            f.extend_from_slice(&l4);
            // A TCP header's data offset, a UDP header's length: valid unless flipped.
            let o = l3 + if v6 { 40 } else { 20 };
            f[o + 12] = 5 << 4;
            if proto == 17 {
                f[o + 4..o + 6].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
            }
            if proto == 1 || proto == 58 {
                f[o] = if proto == 1 { 8 } else { 128 }; // echo request
            }
            for (at, x) in flips {
                if let Some(b) = f.get_mut(at) {
                    *b ^= x;
                }
            }
            let Ok(m) = parse(&f) else { return Ok(()) };
            let src: std::net::IpAddr = if m.v6 {
                "2001:db8::1".parse().unwrap()
            } else {
                "192.0.2.1".parse().unwrap()
            };
            let mut out = vec![0xa5u8; out_len + 8];
            let kind = match kind {
                0 => TTL,
                1 => IcmpError::TooBig { mtu: 1280 },
                _ => IcmpError::PortUnreachable,
            };
            let Some(n) = icmp_error(&f, &m, OUR, src, kind, &mut out[..out_len]) else {
                return Ok(());
            };
            proptest::prop_assert!(n <= out_len);
            proptest::prop_assert_eq!(&out[out_len..], &[0xa5u8; 8][..]);
            let e = parse(&out[..n]).expect("the error parses");
            let from = match src {
                std::net::IpAddr::V4(a) => crate::pipeline::parse::v4_mapped(a.octets()),
                std::net::IpAddr::V6(a) => a.octets(),
            };
            proptest::prop_assert_eq!(e.tuple.src, from);
            proptest::prop_assert_eq!(e.tuple.dst, m.tuple.src);
            proptest::prop_assert_eq!((e.n_vlans, e.v6), (m.n_vlans, m.v6));
            if matches!(m.tuple.proto, 6 | 17) {
                proptest::prop_assert_eq!(e.quoted, Some(m.tuple), "quotes the flow");
            }
        }

        #[test]
        fn never_panics_and_replies_parse(
            which in 0usize..5,
            flips in proptest::collection::vec((proptest::prelude::any::<proptest::sample::Index>(), 0u8..=255), 0..4),
            out_len in 0usize..200,
        ) {
            let mut f = hex([ARP_REQ, ARP_GRAT, NS, NS_HLIM64, NS_DAD][which]);
            for (i, x) in flips {
                let at = i.index(f.len());
                f[at] ^= x;
            }
            if let Ok(m) = parse(&f) {
                let mut out = vec![0u8; out_len];
                for r in [
                    arp_reply(&f, &m, OUR, &mut out),
                    nd_advert(&f, &m, OUR, &mut out),
                ]
                .into_iter()
                .flatten()
                {
                    proptest::prop_assert!(r <= out_len);
                    let rm = parse(&out[..r]);
                    proptest::prop_assert!(rm.is_ok());
                }
            }
        }
    }
}
