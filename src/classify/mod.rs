//! Classification: a rule model, a reference linear matcher, and compiled engines.
//!
//! Layer: `classify`, below `pipeline`. A rule set is a list of [`Rule`]s in priority
//! order (index 0 wins). Every rule matches each [`Key`] field against an inclusive
//! range, so prefixes, port ranges, exact values and wildcards share one form.
//! Engines implement [`Classifier`]; [`linear::Linear`] is the reference every other
//! engine is tested against.
//!
//! - [`compiled::Compiled`]: the fast engine (flattened multi-bit cutting trees; the
//!   module doc argues the design). Immutable once built.
//! - [`update::Updatable`]: `Compiled` plus a small delta, so one inserted or removed rule
//!   is visible at once; recompiles in the background.
//! - [`classbench`], [`synth`], [`bench_cmd`]: ClassBench file parsing, a seedable
//!   ClassBench-like generator, and the `flowgate classbench` subcommand.

pub mod bench_cmd;
pub mod classbench;
pub mod compiled;
pub mod linear;
pub mod synth;
pub mod update;

/// Sentinel `vlan` value for a frame without a VLAN tag (VIDs are 12 bits).
pub const NO_VLAN: u16 = 0xffff;
/// Sentinel `pcp` value for a frame without a VLAN tag.
pub const NO_PCP: u8 = 0xff;
/// Sentinel `mpls` value for a frame without MPLS.
pub const NO_MPLS: u32 = u32::MAX;

/// The fields a rule can match, extracted once per packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key {
    /// Index of the port the frame came in on.
    pub in_port: u16,
    /// VID of the outermost tag, or [`NO_VLAN`].
    pub vlan: u16,
    /// PCP of the outermost tag, or [`NO_PCP`].
    pub pcp: u8,
    /// Top MPLS label, or [`NO_MPLS`].
    pub mpls: u32,
    /// EtherType of the payload after tags (and of the MPLS payload when recognised).
    pub ethertype: u16,
    /// Source and destination addresses, IPv4 mapped into `::ffff:0:0/96`.
    pub src: u128,
    pub dst: u128,
    /// IP protocol / IPv6 upper-layer header (0 when not IP).
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
    /// DSCP (0..=63).
    pub dscp: u8,
    /// ESP SPI (0 when not ESP).
    pub spi: u32,
}

impl Key {
    /// The key of an untagged IP packet known only by its addresses (mapped as in
    /// [`Key::src`]), protocol and ports: port 0, no DSCP, no SPI. What a flow table
    /// entry can tell of the packet that created it.
    pub fn of_five_tuple(src: u128, dst: u128, proto: u8, src_port: u16, dst_port: u16) -> Key {
        let v4 = |a: u128| a >> 32 == 0xffff;
        Key {
            in_port: 0,
            vlan: NO_VLAN,
            pcp: NO_PCP,
            mpls: NO_MPLS,
            ethertype: if v4(src) && v4(dst) { 0x0800 } else { 0x86dd },
            src,
            dst,
            proto,
            src_port,
            dst_port,
            dscp: 0,
            spi: 0,
        }
    }
}

/// An inclusive range `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Range<T> {
    pub lo: T,
    pub hi: T,
}

impl<T: Copy + PartialOrd> Range<T> {
    /// `lo..=hi`.
    pub const fn new(lo: T, hi: T) -> Self {
        Range { lo, hi }
    }
    /// The single value `v`.
    pub const fn exact(v: T) -> Self {
        Range { lo: v, hi: v }
    }
    /// True when `v` lies in the range.
    #[inline]
    pub fn contains(&self, v: T) -> bool {
        self.lo <= v && v <= self.hi
    }
    /// True when no value lies in the range (`lo > hi`).
    pub fn is_empty(&self) -> bool {
        self.lo > self.hi
    }
}

macro_rules! full {
    ($t:ty) => {
        Range {
            lo: <$t>::MIN,
            hi: <$t>::MAX,
        }
    };
}

/// The range an address prefix `addr/len` covers (in the 128-bit mapped space).
pub fn prefix_range(addr: u128, len: u8) -> Range<u128> {
    let len = len.min(128);
    if len == 0 {
        return full!(u128);
    }
    let mask = u128::MAX << (128 - u32::from(len));
    Range {
        lo: addr & mask,
        hi: (addr & mask) | !mask,
    }
}

/// IPv4 address as a mapped 128-bit value (`::ffff:a.b.c.d`).
pub fn v4_mapped(a: [u8; 4]) -> u128 {
    0xffff_0000_0000 | u128::from(u32::from_be_bytes(a))
}

/// What the winning rule says to do; the pipeline interprets the indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Balance a new flow over service `i`'s servers.
    Service(u32),
    /// Apply flow rule `i` (its target and QoS).
    FlowRule(u32),
    /// No rule matched.
    NoMatch,
}

/// One classification rule: every field must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub in_port: Range<u16>,
    pub vlan: Range<u16>,
    pub pcp: Range<u8>,
    pub mpls: Range<u32>,
    pub ethertype: Range<u16>,
    pub src: Range<u128>,
    pub dst: Range<u128>,
    pub proto: Range<u8>,
    pub src_port: Range<u16>,
    pub dst_port: Range<u16>,
    pub dscp: Range<u8>,
    pub spi: Range<u32>,
    /// What a match means.
    pub decision: Decision,
}

impl Rule {
    /// A rule that matches every key.
    pub fn any(decision: Decision) -> Self {
        Rule {
            in_port: full!(u16),
            vlan: full!(u16),
            pcp: full!(u8),
            mpls: full!(u32),
            ethertype: full!(u16),
            src: full!(u128),
            dst: full!(u128),
            proto: full!(u8),
            src_port: full!(u16),
            dst_port: full!(u16),
            dscp: full!(u8),
            spi: full!(u32),
            decision,
        }
    }

    /// True when some key can match (no field's range is empty).
    pub fn can_match(&self) -> bool {
        !(self.in_port.is_empty()
            || self.vlan.is_empty()
            || self.pcp.is_empty()
            || self.mpls.is_empty()
            || self.ethertype.is_empty()
            || self.src.is_empty()
            || self.dst.is_empty()
            || self.proto.is_empty()
            || self.src_port.is_empty()
            || self.dst_port.is_empty()
            || self.dscp.is_empty()
            || self.spi.is_empty())
    }

    /// True when every field of `k` lies in the rule's ranges.
    #[inline]
    pub fn matches(&self, k: &Key) -> bool {
        self.dst.contains(k.dst)
            && self.dst_port.contains(k.dst_port)
            && self.proto.contains(k.proto)
            && self.src.contains(k.src)
            && self.src_port.contains(k.src_port)
            && self.in_port.contains(k.in_port)
            && self.vlan.contains(k.vlan)
            && self.pcp.contains(k.pcp)
            && self.mpls.contains(k.mpls)
            && self.ethertype.contains(k.ethertype)
            && self.dscp.contains(k.dscp)
            && self.spi.contains(k.spi)
    }
}

/// A classification engine: first matching rule wins (lowest index).
pub trait Classifier: Send + Sync {
    /// Index of the first rule that matches `key`, or `None`.
    fn lookup(&self, key: &Key) -> Option<u32>;

    /// The decision of the first matching rule, or [`Decision::NoMatch`].
    fn classify(&self, key: &Key) -> Decision;

    /// Looks up a burst: `out[i] = lookup(&keys[i])`. Never allocates.
    fn lookup_batch(&self, keys: &[Key], out: &mut [Option<u32>]) {
        for (k, o) in keys.iter().zip(out.iter_mut()) {
            *o = self.lookup(k);
        }
    }

    /// Classifies a burst: `out[i] = classify(&keys[i])`. Engines override this to
    /// overlap memory accesses across the burst. Never allocates.
    fn classify_batch(&self, keys: &[Key], out: &mut [Decision]) {
        for (k, o) in keys.iter().zip(out.iter_mut()) {
            *o = self.classify(k);
        }
    }

    /// Bytes of memory the engine's lookup structures use.
    fn bytes(&self) -> usize;

    /// Keys per `classify_batch` call at which the engine is measured (`flowgate
    /// classbench`): the data path's burst (32) unless the engine does better with more,
    /// as DPDK's rte_acl does (256, what `dpdk-test-acl` uses).
    fn burst(&self) -> usize {
        32
    }
}

/// Compiles `rules` with the default engine for the data path: the flat cutting trees
/// of [`compiled::Compiled`] (property-tested against [`linear::Linear`]).
pub fn compile(rules: Vec<Rule>) -> Box<dyn Classifier> {
    Box::new(compiled::Compiled::build(&rules))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_five_tuple_key_matches_what_its_fields_match() {
        let (a, b) = (v4_mapped([100, 64, 3, 7]), v4_mapped([203, 0, 113, 10]));
        let k = Key::of_five_tuple(a, b, 17, 40000, 7);
        assert_eq!((k.ethertype, k.vlan, k.dscp), (0x0800, NO_VLAN, 0));
        assert_eq!(Key::of_five_tuple(a, 1, 6, 1, 2).ethertype, 0x86dd);
        let mut r = Rule::any(Decision::NoMatch);
        r.src = prefix_range(v4_mapped([100, 64, 3, 0]), 120);
        r.proto = Range::exact(17);
        r.dst_port = Range::exact(7);
        assert!(r.matches(&k) && r.can_match());
        r.dst_port = Range::exact(8);
        assert!(!r.matches(&k));
        r.proto = Range::new(1, 0);
        assert!(r.proto.is_empty() && !r.can_match());
        assert!(Rule::any(Decision::NoMatch).can_match());
    }
}
