//! Answers for ARP requests and IPv6 Neighbor Solicitations.
//!
//! Layer: `pipeline`, on the `wire` views. Pure functions: a parsed request frame
//! and [`Meta`] in, a reply frame written into a caller's buffer out. Nothing here
//! decides *whether* to answer: the caller asks [`arp_request_target`] /
//! [`ns_target`] which address is wanted, checks that the system owns it, then calls
//! [`arp_reply`] / [`nd_advert`]. No allocation, no panics.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::parse;
    use crate::wire::{hex, scapy, to_hex};

    const OUR: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

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

    proptest::proptest! {
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
