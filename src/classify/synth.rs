//! Seedable ClassBench-like rule sets and traces, for benchmarks and tests.
//!
//! Layer: `classify` tooling; not on the data path. Deterministic for a given seed on
//! every platform (own SplitMix64 generator, no dependency).
//!
//! What is modelled from ClassBench's seeds (Taylor & Turner, "ClassBench", INFOCOM 2005):
//! - **Address structure**: addresses come from a limited pool of clusters (a /8–/16 base
//!   shared by many rules), as real ACLs do, so prefixes nest and overlap.
//! - **Prefix lengths**: per profile, a weighted mix (for example ACL sets are dominated by
//!   /32 and /24–/28 destinations, firewall sets by wildcards and short prefixes).
//! - **Port classes**: wildcard (`0:65535`), exact well-known or random port, the
//!   ephemeral range `1024:65535`, the well-known range `0:1023`, and arbitrary ranges.
//! - **Protocols**: TCP, UDP, ICMP, a few others, and wildcard.
//! - A catch-all rule last, as in the hold-out sets.
//!
//! Traces: each header is drawn inside a random rule (uniform point in its box), like
//! ClassBench's trace_generator with no locality; the expected rule is not stored (tests
//! compute it with [`super::linear::Linear`]).

use super::{Decision, Key, Range, Rule, prefix_range, v4_mapped};

/// SplitMix64: small, fast, seedable, good enough for workloads.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`; returns 0 for `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
        }
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// Index drawn with the given weights.
    pub fn weighted(&mut self, w: &[u32]) -> usize {
        let total: u64 = w.iter().map(|&x| u64::from(x)).sum();
        let mut x = self.below(total);
        for (i, &wi) in w.iter().enumerate() {
            if x < u64::from(wi) {
                return i;
            }
            x -= u64::from(wi);
        }
        w.len().saturating_sub(1)
    }
}

/// Shape of a generated set, after ClassBench's acl1, fw1 and ipc1 seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Access-control lists: specific destinations, exact destination ports.
    Acl,
    /// Firewalls: many wildcards and port ranges.
    Fw,
    /// IP chains: a mix of both.
    Ipc,
}

struct Shape {
    /// Weights for prefix lengths 0, 8, 16, 24, 28, 32 (source).
    src_len: [u32; 6],
    /// Same, destination.
    dst_len: [u32; 6],
    /// Weights for port classes: wildcard, exact, 1024:65535, 0:1023, arbitrary range.
    sport: [u32; 5],
    dport: [u32; 5],
    /// Weights for TCP, UDP, ICMP, other exact, wildcard.
    proto: [u32; 5],
}

fn shape(p: Profile) -> Shape {
    match p {
        Profile::Acl => Shape {
            src_len: [15, 2, 5, 25, 13, 40],
            dst_len: [3, 1, 4, 22, 15, 55],
            sport: [95, 2, 2, 0, 1],
            dport: [25, 60, 8, 2, 5],
            proto: [70, 20, 4, 2, 4],
        },
        Profile::Fw => Shape {
            src_len: [45, 10, 10, 15, 5, 15],
            dst_len: [30, 5, 10, 20, 10, 25],
            sport: [80, 5, 10, 2, 3],
            dport: [35, 40, 15, 3, 7],
            proto: [55, 20, 5, 5, 15],
        },
        Profile::Ipc => Shape {
            src_len: [25, 5, 10, 20, 10, 30],
            dst_len: [20, 5, 10, 20, 10, 35],
            sport: [80, 10, 5, 2, 3],
            dport: [40, 40, 10, 3, 7],
            proto: [50, 30, 5, 3, 12],
        },
    }
}

const LENS: [u8; 6] = [0, 8, 16, 24, 28, 32];
const WELL_KNOWN: [u16; 16] = [
    20, 21, 22, 23, 25, 53, 80, 110, 123, 135, 139, 143, 161, 443, 445, 3389,
];

fn port(rng: &mut Rng, w: &[u32; 5]) -> Range<u16> {
    match rng.weighted(w) {
        0 => Range::new(0, u16::MAX),
        1 => {
            if rng.below(2) == 0 {
                Range::exact(WELL_KNOWN[rng.below(WELL_KNOWN.len() as u64) as usize])
            } else {
                Range::exact(rng.range(1, 65535) as u16)
            }
        }
        2 => Range::new(1024, u16::MAX),
        3 => Range::new(0, 1023),
        _ => {
            let a = rng.range(0, 65535) as u16;
            let b = rng.range(0, 65535) as u16;
            Range::new(a.min(b), a.max(b))
        }
    }
}

fn addr(rng: &mut Rng, clusters: &[u32], w: &[u32; 6]) -> Range<u128> {
    let len = LENS[rng.weighted(w)];
    // Vary the length a little around the class (e.g. 24 → 22..=26), as ClassBench's
    // per-length histograms are not only at multiples of eight.
    let len = match len {
        0 | 32 => len,
        l => (i64::from(l) + rng.range(0, 4) as i64 - 2).clamp(1, 32) as u8,
    };
    let base = clusters[rng.below(clusters.len() as u64) as usize];
    let a = base ^ (rng.next_u64() as u32 & 0x00ff_ffff >> (rng.below(2) * 8));
    prefix_range(v4_mapped(a.to_be_bytes()), 96 + len)
}

/// `n` rules of the given profile (the last is a catch-all), deterministic per `seed`.
/// Rule `i` has `Decision::FlowRule(i)`.
pub fn rules(profile: Profile, n: usize, seed: u64) -> Vec<Rule> {
    let mut rng = Rng::new(seed);
    let sh = shape(profile);
    let nclusters = ((n as f64).sqrt() as usize).max(4);
    let clusters: Vec<u32> = (0..nclusters)
        .map(|_| rng.next_u64() as u32 & 0xffff_0000)
        .collect();
    let mut out = Vec::with_capacity(n);
    for i in 0..n.saturating_sub(1) {
        let mut r = Rule::any(Decision::FlowRule(i as u32));
        r.src = addr(&mut rng, &clusters, &sh.src_len);
        r.dst = addr(&mut rng, &clusters, &sh.dst_len);
        r.src_port = port(&mut rng, &sh.sport);
        r.dst_port = port(&mut rng, &sh.dport);
        r.proto = match rng.weighted(&sh.proto) {
            0 => Range::exact(6),
            1 => Range::exact(17),
            2 => Range::exact(1),
            3 => Range::exact([47u8, 50, 51, 132][rng.below(4) as usize]),
            _ => Range::new(0, 255),
        };
        // Real sets have one catch-all, at the end: never emit another one early.
        let mut wild = Rule::any(r.decision);
        wild.src = prefix_range(v4_mapped([0; 4]), 96);
        wild.dst = wild.src;
        if r == wild {
            r.dst_port = Range::exact(WELL_KNOWN[i % WELL_KNOWN.len()]);
        }
        out.push(r);
    }
    if n > 0 {
        let mut any = Rule::any(Decision::FlowRule(out.len() as u32));
        any.src = prefix_range(v4_mapped([0; 4]), 96);
        any.dst = any.src;
        out.push(any);
    }
    out
}

/// `n` IPv4 5-tuple keys, each a uniform point inside a random rule of `rules`.
pub fn trace(rules: &[Rule], n: usize, seed: u64) -> Vec<Key> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    if rules.is_empty() {
        return Vec::new();
    }
    let pick128 = |rng: &mut Rng, r: Range<u128>| {
        let span = r.hi - r.lo;
        let x = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
        if span == u128::MAX {
            x
        } else {
            r.lo + x % (span + 1)
        }
    };
    (0..n)
        .map(|_| {
            let r = &rules[rng.below(rules.len() as u64) as usize];
            Key {
                src: pick128(&mut rng, r.src),
                dst: pick128(&mut rng, r.dst),
                src_port: rng.range(r.src_port.lo.into(), r.src_port.hi.into()) as u16,
                dst_port: rng.range(r.dst_port.lo.into(), r.dst_port.hi.into()) as u16,
                proto: rng.range(r.proto.lo.into(), r.proto.hi.into()) as u8,
                ..Key::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped() {
        let a = rules(Profile::Acl, 500, 7);
        assert_eq!(a, rules(Profile::Acl, 500, 7));
        assert_ne!(a, rules(Profile::Acl, 500, 8));
        assert_eq!(a.len(), 500);
        assert!(
            a.last()
                .is_some_and(|r| r.src_port == Range::new(0, u16::MAX))
        );
        // Every port class and a wildcard protocol occur.
        assert!(a.iter().any(|r| r.dst_port == Range::new(1024, u16::MAX)));
        assert!(a.iter().any(|r| r.dst_port.lo == r.dst_port.hi));
        assert!(a.iter().any(|r| r.proto == Range::new(0, 255)));
        // Trace keys fall inside the rule they were drawn from, so every key matches some
        // rule (at least the catch-all).
        let t = trace(&a, 1000, 1);
        assert!(t.iter().all(|k| a.iter().any(|r| r.matches(k))));
    }
}
