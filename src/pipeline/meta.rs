//! `Meta`: what the parse stage learns about one frame, and `DropReason`.
//!
//! `Meta` is a small `Copy` struct of offsets and key fields, filled once per frame by
//! [`crate::pipeline::parse::parse`]; later stages read it instead of re-parsing.
//! IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so one 16-byte form serves
//! both families in flow keys and classifier keys.

/// Most VLAN tags (802.1Q/802.1ad/0x9100) parsed before a frame is dropped.
pub const MAX_VLANS: usize = 4;
/// Most MPLS label stack entries parsed before a frame is dropped.
pub const MAX_MPLS: usize = 8;
/// Most IPv6 extension headers walked before a frame is dropped.
pub const MAX_IPV6_EXT: usize = 8;

/// One VLAN tag as found in the frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VlanTag {
    /// Offset of the tag's TPID in the frame.
    pub off: u16,
    /// 0x8100, 0x88a8 or 0x9100.
    pub tpid: u16,
    /// PCP (3 bits) | DEI (1 bit) | VID (12 bits).
    pub tci: u16,
}

/// Which network layer the frame carries (after tags and labels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L3 {
    /// Not IP or ARP (or the MPLS payload could not be identified).
    #[default]
    Other,
    Arp,
    Ipv4,
    Ipv6,
}

/// Fragment position of an IP packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frag {
    /// Not a fragment (an IPv6 atomic fragment, offset 0 and M=0, counts as this).
    #[default]
    None,
    /// Offset 0, more fragments follow: carries the L4 header.
    First,
    /// Offset > 0: no L4 header; follows its first fragment.
    Later,
}

/// The 5-tuple a flow is keyed on, as seen in one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

impl Tuple {
    /// The same flow seen from the other end.
    #[inline]
    pub fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }
}

/// Everything the later stages need to know about a frame.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meta {
    /// Frame length in bytes.
    pub len: u16,
    /// Number of valid entries in `vlans`, outermost first.
    pub n_vlans: u8,
    pub vlans: [VlanTag; MAX_VLANS],
    /// Number of MPLS label stack entries (0 = no MPLS).
    pub n_mpls: u8,
    /// Offset of the first (top) label stack entry.
    pub mpls_off: u16,
    /// The top label (20 bits), valid when `n_mpls > 0`.
    pub mpls_label: u32,
    /// EtherType of the payload after the tags (0x8847/0x8848 for MPLS).
    pub ethertype: u16,
    /// Network layer found (inside MPLS when the payload was recognised).
    pub l3: L3,
    /// Offset of the L3 header (ARP, IPv4 or IPv6).
    pub l3_off: u16,
    /// Offset of the L4 header; 0 when there is none (non-first fragment, unknown).
    pub l4_off: u16,
    /// The outer IP's addresses and L4 protocol/ports (ports 0 when not TCP/UDP/SCTP;
    /// ICMP echo: both ports hold the identifier). For IPv6, `proto` is the upper-layer
    /// protocol after the extension headers.
    pub tuple: Tuple,
    /// For ICMP/ICMPv6 errors: the tuple of the quoted packet (as it was sent), which
    /// ties the error to the flow of that packet (a quoted ESP header's SPI in the ports,
    /// as [`Meta::flow_tuple`] keys ESP).
    pub quoted: Option<Tuple>,
    /// True for IPv6.
    pub v6: bool,
    /// DSCP (6 bits) of the outer IP header.
    pub dscp: u8,
    /// IPv4 TTL or IPv6 hop limit (0 for other frames).
    pub ttl: u8,
    /// TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10).
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type and code (when `tuple.proto` is 1 or 58).
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// ESP SPI (0 when not ESP).
    pub spi: u32,
    /// Fragment position and identification (IPv4: 16-bit ID; IPv6: 32-bit).
    pub frag: Frag,
    pub frag_id: u32,
}

/// The ports an ESP flow's key holds for `spi` (high half, low half: the order of a
/// quoted ESP header's first four bytes, read as ports).
#[inline]
pub fn esp_ports(spi: u32) -> (u16, u16) {
    ((spi >> 16) as u16, spi as u16)
}

/// The SPI of an ESP flow key's ports ([`esp_ports`] undone).
#[inline]
pub fn esp_spi(src_port: u16, dst_port: u16) -> u32 {
    u32::from(src_port) << 16 | u32::from(dst_port)
}

impl Meta {
    /// The source address as an `IpAddr` (IPv4 when the frame is IPv4).
    pub fn src_ip(&self) -> std::net::IpAddr {
        self.ip(&self.tuple.src)
    }

    /// The destination address as an `IpAddr` (IPv4 when the frame is IPv4).
    pub fn dst_ip(&self) -> std::net::IpAddr {
        self.ip(&self.tuple.dst)
    }

    fn ip(&self, a: &[u8; 16]) -> std::net::IpAddr {
        match super::parse::v4_unmapped(a) {
            Some(v4) if !self.v6 => std::net::IpAddr::from(v4),
            _ => std::net::IpAddr::from(*a),
        }
    }

    /// The tuple that keys this frame's flow: the quoted packet's for an ICMP error, else
    /// the frame's own. ESP has no ports: its SPI takes their place (high half as the
    /// source port, as for a quoted ESP header), so each security association is a flow
    /// of its own, steered by the SPI of its first packet.
    #[inline]
    pub fn flow_tuple(&self) -> Tuple {
        match self.quoted {
            Some(q) => q,
            None if self.tuple.proto == crate::wire::ipv4::proto::ESP => {
                let (src_port, dst_port) = esp_ports(self.spi);
                Tuple {
                    src_port,
                    dst_port,
                    ..self.tuple
                }
            }
            None => self.tuple,
        }
    }

    /// Outermost VLAN tag, if any.
    #[inline]
    pub fn outer_vlan(&self) -> Option<VlanTag> {
        (self.n_vlans > 0).then_some(self.vlans[0])
    }

    /// Offset just past the last VLAN tag (where MPLS or L3 starts).
    #[inline]
    pub fn after_vlans_off(&self) -> u16 {
        14 + 4 * u16::from(self.n_vlans)
    }
}

macro_rules! drop_reasons {
    ($($(#[$m:meta])* $v:ident => $s:literal,)*) => {
        /// Why a frame was dropped; every drop is counted under one of these.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($(#[$m])* $v,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            /// Number of reasons (size of a per-reason counter array).
            pub const COUNT: usize = Self::ALL.len();
            /// The snake_case name used in stats JSON and traces.
            pub fn as_str(self) -> &'static str {
                match self { $(DropReason::$v => $s,)* }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header, or a header runs past the end.
    Truncated => "truncated",
    /// More than `MAX_VLANS` tags.
    TooManyVlans => "too_many_vlans",
    /// More than `MAX_MPLS` label stack entries.
    TooManyLabels => "too_many_labels",
    /// More than `MAX_IPV6_EXT` extension headers.
    TooManyExtHeaders => "too_many_ext_headers",
    /// ARP header malformed.
    BadArp => "bad_arp",
    /// IPv4 version/IHL wrong, or total length inconsistent with the frame.
    BadIpv4 => "bad_ipv4",
    /// IPv6 version or payload length wrong, an extension header malformed, or an
    /// IPv4-mapped source or destination (`::ffff:a.b.c.d`, not an address of the wire:
    /// it would alias the IPv4 address's services and flows).
    BadIpv6 => "bad_ipv6",
    /// TCP header malformed (data offset < 5 or past the packet).
    BadTcp => "bad_tcp",
    /// UDP header malformed (length field < 8 or past the packet).
    BadUdp => "bad_udp",
    /// ICMP/ICMPv6 header malformed.
    BadIcmp => "bad_icmp",
    /// Frame matched nothing and `default: drop`.
    Unmatched => "unmatched",
    /// A flow rule says `to: drop`.
    RuleDrop => "rule_drop",
    /// The service has no server that can take a new flow (and `no_server: drop`, or no
    /// ICMP error may be sent).
    NoServer => "no_server",
    /// A new flow of a service whose every server that takes new flows holds its
    /// `max_flows` (and `no_server: drop`, or no ICMP error may be sent).
    ServersFull => "servers_full",
    /// A non-first fragment whose first fragment was not seen.
    FragmentNoFirst => "fragment_no_first",
    /// A push would make the frame longer than the maximum frame size.
    TooBig => "too_big",
    /// A pop/swap rewrite did not apply (no tag/label to pop).
    RewriteFailed => "rewrite_failed",
    /// Router mode: TTL or hop limit 1 or 0 on arrival, and no ICMP Time Exceeded went
    /// back (the packet was an ICMP error or a non-first fragment, its source cannot
    /// be answered, the system has no address of its family, or the rate limit).
    TtlExceeded => "ttl_exceeded",
    /// Larger than `system.mtu` on its way out, and neither cut into fragments (IPv4
    /// without DF: not with malformed options, nor when the worker's room for fragments is
    /// full) nor answered with an ICMP Fragmentation Needed or Packet Too Big (the
    /// refusals and limits of `ttl_exceeded`; a packet inside MPLS).
    MtuExceeded => "mtu_exceeded",
    /// ARP/ND not for an address the system owns, or not a request; or an echo request
    /// to the system's address that is not answered (fragmented, a bad checksum, a
    /// source that names no single host).
    NotForUs => "not_for_us",
    /// The output port refused the frame (ring full).
    TxFull => "tx_full",
    /// `flowgate run`: the PMD chained the frame over several mbufs, because it is larger
    /// than one mbuf's data room (a port's `mtu` in the conf sizes the mbufs for it);
    /// flowgate reads a frame from one segment only, so it is not forwarded cut short.
    Segmented => "segmented",
    /// A new flow of a service over its client's `rate_limit` (a TCP SYN, or the first
    /// datagram of another protocol's flow).
    RateLimited => "rate_limited",
    /// A new flow of a service from a client outside its `allow` list.
    NotAllowed => "not_allowed",
    /// A new flow of a service from a client that holds its `conn_limit` of open flows
    /// (a TCP SYN, or the first datagram of another protocol's flow).
    ConnLimited => "conn_limited",
    /// An IP packet to one of the system's own addresses (a VIP or `system.addresses`)
    /// that no service, pattern rule or flow takes: a port no service listens on, an
    /// echo reply, an error quoting no flow. Not sent on by `default`, which would
    /// send it back to the gateway it came from, round and round.
    Unserved => "unserved",
    /// A frame `default` would send back out of the port it came in on to the MAC that
    /// sent it (the gateway's own VRRP, router advertisements, OSPF hellos and
    /// broadcasts; a packet it routed here that `default` would route back to it).
    Reflected => "reflected",
    /// A frame to an IEEE 802.1 reserved group address (`01:80:c2:00:00:00` to `0f`:
    /// STP, LACP, LLDP, 802.1X, pause) that no service or rule takes: no bridge
    /// forwards those, and `default` does not either.
    LinkLocal => "link_local",
}
