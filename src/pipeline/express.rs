//! The express path: the packet of a known load-balanced flow, in the common shape,
//! handled without the general machinery.
//!
//! Layer: `pipeline`. Nearly every packet a load balancer sees is an IPv4 or IPv6 TCP or
//! UDP packet, untagged or with one VLAN tag, of a flow a service already placed on a
//! server. For that case [`Worker::process_burst`](super::Worker::process_burst) skips
//! the general parser ([`Meta`](super::meta::Meta)), the decision tree and the generic
//! rewrite engine:
//!
//! - [`parse`] accepts only an Ethernet frame with no VLAN tag or one, carrying an IPv4
//!   header without options, not fragmented, or an IPv6 header without extension headers
//!   (so not fragmented either) or IPv4-mapped addresses, with a TCP or UDP header; for
//!   every frame it accepts,
//!   [`parse_into`](super::parse::parse_into) would succeed and find the same tuple and
//!   TCP flags (a property test checks this on random and damaged frames).
//! - [`Express`] is compiled with the tables: per (service, server) the route a forward
//!   packet takes, per service the route a response takes, and each direction's QoS
//!   reduced to "maybe push one tag, maybe rewrite the DSCP" (the actions an untagged
//!   IP frame can take without any check that could fail), plus in router mode
//!   (`system.mode: router`) "lower the TTL or hop limit". A service whose QoS needs
//!   anything else (MPLS, popping or rewriting a tag that is not there) has no express
//!   route, and its packets take the general path. A tagged frame keeps its tag: it is
//!   express only on a route that pushes no tag and sets no priority.
//! - The flow must be owned by a service and target one of its servers that is not
//!   down, and must not be a closed TCP connection being reopened by a SYN; everything
//!   else (misses, rule flows, down servers, ARP/ND, ICMP, fragments, two VLAN tags,
//!   MPLS, IPv6 extension headers, in router mode a TTL or hop limit of 1 or 0, and a
//!   frame over `system.mtu`, both answered with an ICMP error) takes the general path,
//!   decided before anything is changed. A frame [`parse`] took whose flow then turns
//!   out not to be express (a new connection's SYN is the common one) is parsed a second
//!   time, by the general parser, for the `Meta` the general path reads; its flow key
//!   and hash are kept.
//!
//! The outcome, the flow's state, the frame's bytes and the counters are exactly what
//! the general path gives: `tests/burst.rs` runs `process_burst` against
//! [`Worker::process`](super::Worker::process), which never takes this path, on
//! generated traffic, damaged copies of it and all the shared captures.

use super::meta::Tuple;
use super::{NONE16, QosSel, Route};
use crate::config::{Mac, Pipeline, QosActions, ServerState, Target};

/// What the express path needs from a frame it accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fast {
    pub tuple: Tuple,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// An IPv6 frame (else IPv4).
    pub v6: bool,
    /// Its TTL or hop limit.
    pub ttl: u8,
    /// It carries one VLAN tag (the IP header starts at byte 18, not 14).
    pub tagged: bool,
}

/// Parses an IPv4 (no options, not fragmented) or IPv6 (no extension headers) TCP or UDP
/// frame, untagged or with one VLAN tag, with at most `mtu` bytes after the Ethernet
/// header and tag; `None` for anything else, including anything the general parser would
/// reject.
#[inline]
pub fn parse(d: &[u8], mtu: usize) -> Option<Fast> {
    // The general parser refuses frames longer than a u16 (TooBig).
    if d.len() > usize::from(u16::MAX) {
        return None;
    }
    match d.get(12..14)? {
        [0x08, 0x00] => ipv4::<14>(d, mtu),
        [0x86, 0xdd] => ipv6::<14>(d, mtu),
        &[t0, t1]
            if crate::wire::ethernet::ethertype::is_vlan_tpid(u16::from_be_bytes([t0, t1])) =>
        {
            match d.get(16..18)? {
                [0x08, 0x00] => ipv4::<18>(d, mtu),
                [0x86, 0xdd] => ipv6::<18>(d, mtu),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The IPv4 header at `L3` (20 bytes: version 4, no options; not a fragment; at 18 after
/// a VLAN tag) and its TCP or UDP header.
#[inline(always)]
fn ipv4<const L3: usize>(d: &[u8], mtu: usize) -> Option<Fast> {
    let h: &[u8; 20] = d.get(L3..L3 + 20)?.try_into().ok()?;
    let tl = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // Not a fragment: MF clear and offset 0 (DF may be set).
    if h[0] != 0x45 || h[6] & 0x3f != 0 || h[7] != 0 || L3 + tl > d.len() || d.len() - L3 > mtu {
        return None;
    }
    // The L4 header as the general parser sees it: bounded by the total length.
    let (proto, l4) = (h[9], d.get(L3 + 20..L3 + tl)?);
    let (src_port, dst_port, tcp_flags) = ports(proto, l4)?;
    let addr = |o: usize| super::parse::v4_mapped([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    Some(Fast {
        tuple: Tuple {
            src: addr(12),
            dst: addr(16),
            src_port,
            dst_port,
            proto,
        },
        tcp_flags,
        v6: false,
        ttl: h[8],
        tagged: L3 == 18,
    })
}

/// The IPv6 header at `L3` (version 6, no extension header; at 18 after a VLAN tag) and
/// its TCP or UDP header.
#[inline(always)]
fn ipv6<const L3: usize>(d: &[u8], mtu: usize) -> Option<Fast> {
    let h: &[u8; 40] = d.get(L3..L3 + 40)?.try_into().ok()?;
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    // Payload length 0 is a jumbogram (refused by the general parser); the next header
    // is the L4 header itself (TCP or UDP, checked by `ports`), bounded by the payload.
    if h[0] >> 4 != 6 || plen == 0 || L3 + 40 + plen > d.len() || d.len() - L3 > mtu {
        return None;
    }
    let (proto, l4) = (h[6], d.get(L3 + 40..L3 + 40 + plen)?);
    let (src_port, dst_port, tcp_flags) = ports(proto, l4)?;
    let addr = |o: usize| -> [u8; 16] { h[o..o + 16].try_into().unwrap_or_default() };
    // IPv4-mapped addresses are refused by the general parser.
    let (src, dst) = (addr(8), addr(24));
    if super::parse::is_v4_mapped(&src) || super::parse::is_v4_mapped(&dst) {
        return None;
    }
    Some(Fast {
        tuple: Tuple {
            src,
            dst,
            src_port,
            dst_port,
            proto,
        },
        tcp_flags,
        v6: true,
        ttl: h[7],
        tagged: L3 == 18,
    })
}

/// The ports and TCP flags of a TCP or UDP header `l4` (bounded by the IP payload), with
/// the general parser's checks; `None` for any other protocol or a header it refuses.
#[inline(always)]
fn ports(proto: u8, l4: &[u8]) -> Option<(u16, u16, u8)> {
    let tcp_flags = match proto {
        6 => {
            let hl = usize::from(*l4.get(12)? >> 4) * 4;
            if hl < 20 || hl > l4.len() {
                return None;
            }
            l4[13]
        }
        17 => {
            let ulen = usize::from(u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]));
            if ulen < 8 || ulen > l4.len() {
                return None;
            }
            0
        }
        _ => return None,
    };
    let p = l4.get(..4)?;
    Some((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
        tcp_flags,
    ))
}

/// A direction's QoS on an untagged IP frame: the actions that cannot fail there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FastQos {
    /// The 802.1Q tag pushed after the MACs (TPID and TCI bytes).
    pub tag: Option<[u8; 4]>,
    pub dscp: Option<u8>,
    /// Lower the TTL or hop limit by one (router mode; the frame's is above 1).
    pub dec_ttl: bool,
}

impl FastQos {
    /// `q` reduced to a tag and a DSCP, as [`crate::action::apply_qos`] applies it to an
    /// untagged IPv4 or IPv6 frame; `None` when `q` does anything else there.
    pub fn of(q: &QosActions) -> Option<FastQos> {
        // On an untagged, unlabelled frame these fail (nothing to pop or rewrite), and a
        // pushed label changes the frame's shape: the general path handles them.
        if q.pop_mpls
            || q.swap_mpls.is_some()
            || q.pop_vlan
            || q.set_vlan.is_some()
            || q.push_mpls.is_some()
        {
            return None;
        }
        let mut tag = q.push_vlan.map(|(tpid, vid, pcp)| {
            let [t0, t1] = tpid.to_be_bytes();
            let [c0, c1] = ((u16::from(pcp) << 13) | (vid & 0x0fff)).to_be_bytes();
            [t0, t1, c0, c1]
        });
        if let Some(pcp) = q.pcp {
            tag = Some(match tag {
                // A pushed tag takes the priority in its TCI.
                Some([t0, t1, c0, c1]) => [t0, t1, (c0 & 0x1f) | (pcp << 5), c1],
                // An untagged frame gets a priority tag (VID 0).
                None => [0x81, 0x00, pcp << 5, 0],
            });
        }
        Some(FastQos {
            tag,
            dscp: q.dscp,
            dec_ttl: false,
        })
    }
}

/// Where an express packet goes, precomputed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastRoute {
    /// Always `Some`: kept as the `Option` an [`Outcome`](super::Outcome) holds, so that
    /// setting it is a plain copy (building `Some(route)` per packet went through the
    /// stack in pieces read back across two stores, a store-forwarding stall).
    pub route: Option<Route>,
    pub qos: FastQos,
    /// The frame's new MAC addresses, destination then source: written with one
    /// 12-byte copy from here (built on the stack per packet, they were read back
    /// across two stores, which the CPU cannot forward: a stall on every packet).
    pub macs: [u8; 12],
}

impl FastRoute {
    fn new(route: Route, qos: FastQos, src: Mac) -> FastRoute {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&route.mac);
        macs[6..].copy_from_slice(&src);
        FastRoute {
            route: Some(route),
            qos,
            macs,
        }
    }
}

/// The express tables of one [`Tables`](super::Tables) snapshot.
#[derive(Clone, Debug, Default)]
pub struct Express {
    /// Router mode: every route lowers the TTL, and a frame whose TTL is 1 or 0 is not
    /// express (`process_burst` leaves it to the general path, which answers it).
    pub router: bool,
    /// `system.mtu`, the smallest of its ports' when it gives one per port (`usize::MAX`
    /// without one): a frame with more bytes after its Ethernet header and tag is not
    /// express (see [`parse`]); the general path checks it against its route's port and
    /// answers it (express routes push no label, so a frame leaves with as many).
    pub mtu: usize,
    servers: usize,
    /// Index `service * servers + server`: the forward route of a flow of that service
    /// on that server; `None` when the server is not a member, is down, or the
    /// service's QoS is not express.
    forward: Vec<Option<FastRoute>>,
    /// Per service: the route of responses; `None` when the reply QoS is not express.
    reply: Vec<Option<FastRoute>>,
    /// Per server: whether it has a passive health check (`max_fails`). The packets of
    /// its flows before it answers are then the general path's, which counts the
    /// failures and moves the connections of a server taken out.
    watched: Vec<bool>,
}

impl Express {
    /// Compiles the express routes of `p`; `member_of` is the (service, server) member
    /// index of [`Tables`](super::Tables).
    pub fn build(p: &Pipeline, member_of: &[u16]) -> Express {
        let n = p.servers.len();
        let router = p.forwarding == crate::config::Forwarding::Router;
        let of = |q: &QosActions| {
            FastQos::of(q).map(|f| FastQos {
                dec_ttl: router,
                ..f
            })
        };
        let mut forward = vec![None; p.services.len() * n];
        let mut reply = Vec::with_capacity(p.services.len());
        for (i, svc) in p.services.iter().enumerate() {
            let i16 = i as u16;
            if let Some(qos) = of(&svc.qos) {
                for (s, srv) in p.servers.iter().enumerate() {
                    let member = member_of[i * n + s];
                    if member == NONE16 || srv.state == ServerState::Down {
                        continue;
                    }
                    let route = super::route_to(
                        p,
                        Target::Server(s as u16),
                        QosSel::Service(i16),
                        i16,
                        member,
                        NONE16,
                    );
                    forward[i * n + s] = Some(FastRoute::new(route, qos, p.mac));
                }
            }
            reply.push(of(&svc.reply_qos).map(|qos| {
                let route = super::route_to(
                    p,
                    Target::Gateway,
                    QosSel::ServiceReply(i16),
                    i16,
                    NONE16,
                    NONE16,
                );
                FastRoute::new(route, qos, p.mac)
            }));
        }
        Express {
            router,
            mtu: p.smallest_mtu().map_or(usize::MAX, usize::from),
            servers: n,
            forward,
            reply,
            watched: p.servers.iter().map(|s| s.max_fails.is_some()).collect(),
        }
    }

    /// Whether server `server` has a passive health check.
    #[inline]
    pub fn watched(&self, server: u16) -> bool {
        self.watched
            .get(usize::from(server))
            .copied()
            .unwrap_or(false)
    }

    /// The route of a packet of a flow of service `svc` on server `server`, in its
    /// creating direction when `forward`.
    #[inline]
    pub fn route(&self, svc: u16, server: u16, forward: bool) -> Option<&FastRoute> {
        if forward {
            if usize::from(server) >= self.servers {
                return None;
            }
            self.forward
                .get(usize::from(svc) * self.servers + usize::from(server))?
                .as_ref()
        } else {
            self.reply.get(usize::from(svc))?.as_ref()
        }
    }
}

/// Rewrites an express frame (validated by [`parse`]; IPv6 when `v6`, with one VLAN tag
/// when `tagged`) for `r`: the TTL, the tag, the DSCP, the MACs (`macs`: destination then
/// source). A tagged frame keeps its tag, and `r` must push none (the caller checks).
/// `Err` when there is no room for the tag (the general path's `too_big`).
#[inline]
pub fn rewrite<B: crate::action::PacketBuf + ?Sized>(
    b: &mut B,
    r: &FastQos,
    macs: &[u8; 12],
    v6: bool,
    tagged: bool,
) -> Result<(), super::meta::DropReason> {
    if r.tag.is_some() && (b.data().len() + 4 > crate::action::MAX_FRAME || !b.prepend(4)) {
        return Err(super::meta::DropReason::TooBig);
    }
    // Every header byte rewritten below lies in the first 38 (MACs, a tag pushed or
    // carried, 20 bytes of IPv4) or 58 (40 bytes of IPv6), which a frame `parse`
    // accepted has: one bounds check.
    let Some(h) = b.data_mut().get_mut(..if v6 { 58 } else { 38 }) else {
        return Err(super::meta::DropReason::RewriteFailed);
    };
    let mut l3 = if tagged { 18 } else { 14 };
    if let Some(tag) = r.tag {
        h.copy_within(4..16, 0);
        h[12..16].copy_from_slice(&tag);
        l3 = 18;
    }
    if v6 {
        let ip = &mut h[l3..l3 + 40];
        if r.dec_ttl {
            // As `action::dec_ttl`.
            ip[7] = ip[7].saturating_sub(1);
        }
        if let Some(dscp) = r.dscp {
            // As `action::set_dscp`: the traffic class spans the first two bytes (after
            // the version, before the flow label); keep its ECN bits. No checksum.
            let tc = (dscp << 2) | ((ip[1] >> 4) & 0x03);
            ip[0] = (ip[0] & 0xf0) | (tc >> 4);
            ip[1] = (ip[1] & 0x0f) | (tc << 4);
        }
    } else {
        let ip = &mut h[l3..l3 + 20];
        if r.dec_ttl {
            // As `action::dec_ttl`: incremental header checksum.
            let old = u16::from_be_bytes([ip[8], ip[9]]);
            ip[8] = ip[8].saturating_sub(1);
            let new = u16::from_be_bytes([ip[8], ip[9]]);
            let ck =
                crate::wire::checksum::update16(u16::from_be_bytes([ip[10], ip[11]]), old, new);
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
        }
        if let Some(dscp) = r.dscp {
            // As `action::set_dscp`: keep ECN, incremental header checksum.
            let old = u16::from_be_bytes([ip[0], ip[1]]);
            let tos = (dscp << 2) | (ip[1] & 0x03);
            let new = (old & 0xff00) | u16::from(tos);
            let ck =
                crate::wire::checksum::update16(u16::from_be_bytes([ip[10], ip[11]]), old, new);
            ip[1] = tos;
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
        }
    }
    h[..12].copy_from_slice(macs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{FrameBuf, PacketBuf, apply_qos};
    use crate::pipeline::meta::Meta;
    use crate::pipeline::parse::parse_into;
    use proptest::prelude::*;

    /// An untagged IPv4 (or with `v6` IPv6) frame: TCP (proto 6) or UDP (17), `pad`
    /// bytes of payload.
    fn frame_of(proto: u8, pad: usize, v6: bool) -> Vec<u8> {
        let l4 = if proto == 6 { 20 } else { 8 };
        let l3 = if v6 { 40 } else { 20 };
        let mut f = vec![0u8; 14 + l3 + l4 + pad];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        if v6 {
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            // Traffic class 0x2e with ECN 2 set, flow label 0x12345.
            f[14..18].copy_from_slice(&[0x62, 0xe1, 0x23, 0x45]);
            f[18..20].copy_from_slice(&((l4 + pad) as u16).to_be_bytes());
            f[20] = proto;
            f[21] = 64;
            f[22..38]
                .copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
            f[38..54]
                .copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10]);
        } else {
            let tl = 20 + l4 + pad;
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            f[14] = 0x45;
            f[15] = 0x2e;
            f[16..18].copy_from_slice(&(tl as u16).to_be_bytes());
            f[22] = 64;
            f[23] = proto;
            f[26..30].copy_from_slice(&[198, 51, 100, 7]);
            f[30..34].copy_from_slice(&[203, 0, 113, 10]);
            let ck = crate::wire::checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&ck.to_be_bytes());
        }
        let o = 14 + l3;
        f[o..o + 4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
        if proto == 6 {
            f[o + 12] = 5 << 4;
            f[o + 13] = 0x18;
        } else {
            f[o + 4..o + 6].copy_from_slice(&((8 + pad) as u16).to_be_bytes());
        }
        f
    }

    fn frame(proto: u8, pad: usize) -> Vec<u8> {
        frame_of(proto, pad, false)
    }

    /// [`super::parse`] with no MTU.
    fn parse(d: &[u8]) -> Option<Fast> {
        super::parse(d, usize::MAX)
    }

    #[test]
    fn frames_over_the_mtu_are_not_express() {
        for v6 in [false, true] {
            // 1400 bytes after the Ethernet header: IPv4 or IPv6, TCP, and padding.
            let f = frame_of(6, 1400 - 20 - if v6 { 40 } else { 20 }, v6);
            assert_eq!(f.len(), 14 + 1400);
            assert!(super::parse(&f, 1400).is_some(), "v6 {v6}: fits");
            assert_eq!(super::parse(&f, 1399), None, "v6 {v6}: one over");
            // A tag does not count.
            let mut tagged = f[..12].to_vec();
            tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            tagged.extend_from_slice(&f[12..]);
            assert!(
                super::parse(&tagged, 1400).is_some(),
                "v6 {v6}: tagged fits"
            );
            assert_eq!(super::parse(&tagged, 1399), None, "v6 {v6}: tagged, over");
        }
    }

    #[test]
    fn parses_tcp_and_udp_and_refuses_the_rest() {
        let t = parse(&frame(6, 0)).expect("tcp");
        assert_eq!(
            (
                t.tuple.src_port,
                t.tuple.dst_port,
                t.tuple.proto,
                t.tcp_flags
            ),
            (40000, 80, 6, 0x18)
        );
        assert_eq!(
            t.tuple.dst,
            super::super::parse::v4_mapped([203, 0, 113, 10])
        );
        let u = parse(&frame(17, 4)).expect("udp");
        assert_eq!((u.tuple.proto, u.tcp_flags), (17, 0));
        // One VLAN tag (any of the three TPIDs) is taken; two are not.
        for (tpid, v6) in [(0x8100u16, false), (0x88a8, true), (0x9100, false)] {
            let mut tagged = frame_of(6, 0, v6);
            let [t0, t1] = tpid.to_be_bytes();
            tagged.splice(12..12, [t0, t1, 0x00, 0x07]);
            let x = parse(&tagged).expect("one tag");
            assert_eq!((x.tagged, x.v6, x.tuple.dst_port), (true, v6, 80));
            let mut qinq = tagged.clone();
            qinq.splice(12..12, [0x88, 0xa8, 0x00, 0x08]);
            assert_eq!(parse(&qinq), None, "two tags take the general path");
        }
        let mut tagged_arp = frame(6, 0);
        tagged_arp.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        tagged_arp[16..18].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse(&tagged_arp), None);
        let mut frag = frame(17, 4);
        frag[20] = 0x20; // more fragments
        assert_eq!(parse(&frag), None);
        let mut opts = frame(6, 4);
        opts[14] = 0x46;
        assert_eq!(parse(&opts), None, "IPv4 options take the general path");
        let mut icmp = frame(6, 0);
        icmp[23] = 1;
        assert_eq!(parse(&icmp), None);

        let t6 = parse(&frame_of(6, 0, true)).expect("tcp over ipv6");
        assert_eq!(
            (t6.tuple.src_port, t6.tuple.dst_port, t6.tcp_flags, t6.v6),
            (40000, 80, 0x18, true)
        );
        assert_eq!(t6.tuple.src[15], 7);
        assert_eq!(t6.tuple.dst[15], 10);
        assert!(!t.v6);
        let u6 = parse(&frame_of(17, 4, true)).expect("udp over ipv6");
        assert_eq!((u6.tuple.proto, u6.tcp_flags), (17, 0));
        // Any extension header (hop-by-hop 0, routing 43, fragment 44, destination
        // options 60, AH 51) takes the general path, as do jumbograms and IPv4 inside an
        // IPv6 EtherType.
        for nh in [0u8, 43, 44, 60, 51, 58] {
            let mut x = frame_of(6, 8, true);
            x[20] = nh;
            assert_eq!(parse(&x), None, "next header {nh}");
        }
        let mut jumbo = frame_of(6, 0, true);
        jumbo[18..20].fill(0);
        assert_eq!(parse(&jumbo), None);
        let mut v4in6 = frame_of(6, 0, true);
        v4in6[14] = 0x42;
        assert_eq!(parse(&v4in6), None);
        // IPv4-mapped addresses (which the general parser drops).
        for at in [22, 38] {
            let mut x = frame_of(6, 0, true);
            x[at..at + 12].copy_from_slice(&super::super::parse::v4_mapped([0; 4])[..12]);
            assert_eq!(parse(&x), None, "mapped at {at}");
        }
        let mut short = frame_of(6, 0, true);
        short[18..20].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(parse(&short), None, "a TCP header longer than the payload");
    }

    proptest! {
        /// Whatever the express parser accepts, the general parser accepts with the same
        /// tuple and TCP flags, with the L3 header right after the MACs.
        #[test]
        fn accepts_only_what_the_general_parser_accepts_alike(
            proto in prop::sample::select(vec![6u8, 17]),
            pad in 0usize..40,
            v6 in any::<bool>(),
            tpid in prop::option::of(prop::sample::select(vec![0x8100u16, 0x88a8, 0x9100])),
            edits in prop::collection::vec((0usize..80, any::<u8>()), 0..4),
            cut in 0usize..110,
        ) {
            let mut f = frame_of(proto, pad, v6);
            if let Some(t) = tpid {
                let [t0, t1] = t.to_be_bytes();
                f.splice(12..12, [t0, t1, 0x20, 0x07]);
            }
            for (at, v) in edits {
                if let Some(b) = f.get_mut(at) {
                    *b = v;
                }
            }
            f.truncate(f.len().min(cut.max(1) + 10));
            if let Some(x) = parse(&f) {
                let mut m = Meta::default();
                prop_assert_eq!(parse_into(&f, &mut m), Ok(()));
                prop_assert_eq!(m.tuple, x.tuple);
                prop_assert_eq!(m.quoted, None);
                prop_assert_eq!(m.tcp_flags, x.tcp_flags);
                let tags = u8::from(x.tagged);
                prop_assert_eq!((m.n_vlans, m.n_mpls, m.l3_off), (tags, 0, 14 + 4 * u16::from(tags)));
                prop_assert_eq!(m.frag, crate::pipeline::meta::Frag::None);
                prop_assert_eq!(m.v6, x.v6);
            }
        }

        /// `rewrite` with `FastQos::of(q)` gives the bytes `apply_qos(q)` + `set_macs`
        /// give, and `of` refuses exactly the actions that would fail or change the
        /// frame's shape on an untagged IPv4 frame.
        #[test]
        fn rewrite_matches_apply_qos(
            proto in prop::sample::select(vec![6u8, 17]),
            v6 in any::<bool>(),
            tagged in any::<bool>(),
            dec_ttl in any::<bool>(),
            pop_mpls in any::<bool>(),
            swap in prop::option::weighted(0.1, 0u32..1 << 20),
            pop_vlan in prop::bool::weighted(0.1),
            set_vlan in prop::option::weighted(0.1, 0u16..4096),
            push_vlan in prop::option::of((prop::sample::select(vec![0x8100u16, 0x88a8]), 0u16..4096, 0u8..8)),
            pcp in prop::option::of(0u8..8),
            push_mpls in prop::option::weighted(0.1, (0u32..1 << 20, 0u8..8, any::<u8>())),
            dscp in prop::option::of(0u8..64),
        ) {
            let q = QosActions {
                pop_mpls: pop_mpls && swap.is_none(),
                swap_mpls: swap,
                pop_vlan,
                set_vlan,
                push_vlan,
                pcp,
                push_mpls,
                dscp,
            };
            let mut f = frame_of(proto, 6, v6);
            if tagged {
                f.splice(12..12, [0x81, 0x00, 0xa0, 0x07]);
            }
            let mut m = Meta::default();
            parse_into(&f, &mut m).expect("valid frame");
            prop_assert_eq!(parse(&f).map(|x| (x.v6, x.tagged)), Some((v6, tagged)));
            let (dst, src) = ([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 0, 1]);
            let mut general = FrameBuf::new(256);
            general.load(&f);
            if dec_ttl {
                // What `Worker::emit` does in router mode, before the QoS.
                let off = usize::from(m.l3_off);
                prop_assert_eq!(crate::action::dec_ttl(general.data_mut(), m.l3, off), Ok(()));
            }
            let ok = apply_qos(&mut general, &m, &q).is_ok();
            crate::action::set_macs(&mut general, dst, src);
            match FastQos::of(&q) {
                // A tagged frame is express only when its QoS pushes no tag (the worker
                // checks `tag`), and then these actions apply to it as to an untagged one.
                Some(fq) if tagged && fq.tag.is_some() => {}
                Some(fq) => {
                    prop_assert!(ok);
                    let fq = FastQos { dec_ttl, ..fq };
                    let mut fast = FrameBuf::new(256);
                    fast.load(&f);
                    let mut macs = [0u8; 12];
                    macs[..6].copy_from_slice(&dst);
                    macs[6..].copy_from_slice(&src);
                    prop_assert_eq!(rewrite(&mut fast, &fq, &macs, v6, tagged), Ok(()));
                    prop_assert_eq!(fast.data(), general.data());
                }
                // (On a tagged frame a pop or set applies; the general path takes it.)
                None => prop_assert!(
                    tagged || !ok || q.push_mpls.is_some(),
                    "refused {:?}, which apply_qos applies", q
                ),
            }
        }
    }
}
