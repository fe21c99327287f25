//! Established-flow ACK frames for throughput benches: `flowgate bench` (DPDK) and
//! `examples/hitpath.rs` (the same loop without DPDK) build the same frames here.
//!
//! Layer: tooling (`gen`), reads a [`Pipeline`] for its service and MACs. Flow `k` is the
//! client `100.64.0.0/10` host `k mod 2^22` with port `1024 + k / 2^22` talking to the
//! pipeline's first IPv4 TCP service: [`frame`] builds any of its packets, [`handshake`]
//! its opening SYN, SYN-ACK and ACK, [`AckStamp`] writes its forward ACK into a buffer
//! with a 60-byte copy and an incremental checksum (what a NIC's DMA stands for in the
//! bench), and [`shuffle`] gives the fixed random order the benches visit flows in.

use crate::config::Pipeline;

/// What every bench frame shares: the service and the MAC addresses.
#[derive(Clone, Copy, Debug)]
pub struct Template {
    pub vip: [u8; 4],
    pub dport: u16,
    /// Source MAC (the outside gateway).
    pub gw: [u8; 6],
    /// Destination MAC (this system).
    pub me: [u8; 6],
}

impl Template {
    /// The first IPv4 TCP service of `p` that has a port, from the gateway to `p`'s MAC.
    pub fn for_pipeline(p: &Pipeline) -> anyhow::Result<Template> {
        for s in &p.services {
            if let (std::net::IpAddr::V4(v), 6 | 0) = (s.vip, s.proto)
                && let Some(r) = s.ports.first()
            {
                return Ok(Template {
                    vip: v.octets(),
                    dport: r.lo,
                    gw: p.gateway_mac,
                    me: p.mac,
                });
            }
        }
        anyhow::bail!("the bench pipeline needs an IPv4 TCP service with a port")
    }
}

/// Opens flow `k`: calls `each` with its SYN, the server's SYN-ACK and the client's ACK,
/// in that order, each with `rev` (true for the server's packet).
pub fn handshake(k: u32, t: Template, mut each: impl FnMut(&[u8; 60], bool)) {
    let mut f = [0u8; 60];
    for (flags, rev) in [(0x02, false), (0x12, true), (0x10, false)] {
        frame(&mut f, k, t, flags, rev);
        each(&f, rev);
    }
}

/// The 60-byte frame of flow `k`: client `100.64.x.y:port` → the service's VIP and port
/// (`rev`: the other way), with TCP `flags`.
pub fn frame(out: &mut [u8; 60], k: u32, t: Template, flags: u8, rev: bool) {
    let Template { vip, dport, gw, me } = t;
    out.fill(0);
    // 100.64.0.0/10 (shared address space) holds 4 Mi clients; the port tells the rest apart.
    let client = (0x6440_0000u32 | (k & 0x3f_ffff)).to_be_bytes();
    let cport = 1024 + (k >> 22) as u16;
    let (src, dst, sp, dp) = if rev {
        (vip, client, dport, cport)
    } else {
        (client, vip, cport, dport)
    };
    out[0..6].copy_from_slice(&me);
    out[6..12].copy_from_slice(&gw);
    out[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut out[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = crate::wire::checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut out[34..54];
    tcp[0..2].copy_from_slice(&sp.to_be_bytes());
    tcp[2..4].copy_from_slice(&dp.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
}

/// The forward ACK of every flow, ready to be stamped with one flow's client address and
/// port: what a NIC would have written into the mbuf, at the cost of a 60-byte copy and
/// a 3-word checksum update (a full `frame` rebuild per packet cost more than the rest of
/// the bench loop outside the pipeline).
pub struct AckStamp {
    /// The ACK of a flow with client address 0 and port 0.
    base: [u8; 60],
    /// One's-complement sum of `base`'s IPv4 header without its checksum field.
    sum: u32,
}

impl AckStamp {
    /// The stamp of `t`'s flows.
    pub fn new(t: Template) -> AckStamp {
        let mut base = [0u8; 60];
        frame(&mut base, 0, t, 0x10, false);
        base[26..30].fill(0);
        base[34..36].fill(0);
        let sum = (14..34)
            .step_by(2)
            .filter(|&i| i != 24)
            .map(|i| u32::from(u16::from_be_bytes([base[i], base[i + 1]])))
            .sum();
        AckStamp { base, sum }
    }

    /// Writes the forward ACK of flow `k` (the same bytes as `frame(.., k, .., 0x10,
    /// false)`) over the first 60 bytes of `out`, leaving any bytes after them (Ethernet
    /// padding) as they are.
    #[inline]
    pub fn write(&self, out: &mut [u8], k: u32) {
        let client = 0x6440_0000u32 | (k & 0x3f_ffff);
        let cport = 1024 + (k >> 22) as u16;
        let out = &mut out[..60];
        out.copy_from_slice(&self.base);
        out[26..30].copy_from_slice(&client.to_be_bytes());
        out[34..36].copy_from_slice(&cport.to_be_bytes());
        let mut sum = self.sum + (client >> 16) + (client & 0xffff);
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        out[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }
}

/// Shuffles `v` in place (xorshift Fisher-Yates, fixed `seed`): the order a bench visits
/// its flows in, so that consecutive packets hit unrelated flows. (A zero seed, which
/// xorshift cannot use, counts as 1.)
pub fn shuffle(v: &mut [u32], seed: u64) {
    let mut x = seed.max(1);
    for a in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(a, (x % (a as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_as_the_flow_and_the_stamp_writes_the_same_bytes() {
        let mut f = [0u8; 60];
        let t = Template {
            vip: [203, 0, 113, 10],
            dport: 80,
            gw: [2; 6],
            me: [1; 6],
        };
        frame(&mut f, 0x01_02_03_04, t, 0x10, false);
        let m = crate::pipeline::parse::parse(&f).expect("parses");
        assert_eq!(m.tuple.proto, 6);
        assert_eq!(m.tuple.dst_port, 80);
        assert_eq!(m.tuple.src_port, 1024 + 4);
        assert_eq!(&m.tuple.src[12..], &[100, 64 | 0x02, 3, 4]);
        assert_eq!(crate::wire::checksum::checksum(&f[14..34]), 0);
        // The stamp writes the same bytes, for any flow number.
        let stamp = AckStamp::new(t);
        for k in [0, 1, 0x01_02_03_04, 0x3f_ffff, 0xff_ffff, 0xffff_ffff] {
            let mut s = [0xa5u8; 64];
            stamp.write(&mut s, k);
            frame(&mut f, k, t, 0x10, false);
            assert_eq!(s[..60], f, "flow {k:#x}");
            assert_eq!(s[60..], [0xa5; 4], "padding untouched");
        }
        let mut r = [0u8; 60];
        frame(&mut r, 0x01_02_03_04, t, 0x12, true);
        let mr = crate::pipeline::parse::parse(&r).expect("parses");
        assert_eq!(mr.tuple.src_port, 80);
        assert_eq!(&mr.tuple.dst[12..], &[100, 64 | 0x02, 3, 4]);
    }

    #[test]
    fn shuffle_is_a_fixed_permutation() {
        let mut a: Vec<u32> = (0..1000).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        assert_ne!(a, (0..1000).collect::<Vec<u32>>());
        a.sort_unstable();
        assert_eq!(a, (0..1000).collect::<Vec<u32>>());
    }

    #[test]
    fn the_template_is_the_first_ipv4_tcp_service() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let p = Pipeline::load(&root.join("pipelines/web-farm.yaml")).expect("pipeline");
        let t = Template::for_pipeline(&p).expect("template");
        assert_eq!((t.vip, t.dport), ([203, 0, 113, 10], 80));
        assert_eq!((t.gw, t.me), (p.gateway_mac, p.mac));
    }
}
