//! The compiled classifier: multi-bit cutting trees over 32-bit "dimensions", flattened
//! into contiguous arrays, with structure-of-arrays leaves and an exact-match table.
//!
//! Layer: `classify`. Built off the data path by [`Compiled::build`]; lookups take `&self`,
//! never allocate, never lock and are written in safe Rust only.
//!
//! # Why this design
//!
//! What costs time in a packet classifier is the chain of *dependent* loads from the root
//! to the rules, and unpredictable branches; what costs memory is rule replication. We
//! weighed the options named in the issue:
//!
//! - *RFC / cross-producting* resolves everything with a fixed number of table lookups,
//!   but its phase tables grow with the product of equivalence classes (hundreds of MB at
//!   10K rules) and take seconds to build: the opposite of the "cheap change" goal.
//! - *TupleMerge / TSS* builds in milliseconds and updates online, but a lookup probes one
//!   hash table per tuple (tens on ClassBench) and every probe hashes the key again.
//! - *HyperSplit* is compact, but a binary split consumes one comparison per level, ~20
//!   dependent loads for 10K rules.
//! - *Multi-bit cuts* (HiCuts/HyperCuts/CutSplit family), chosen here: a node consumes
//!   `b` bits (up to [`MAX_BITS`]) of one dimension, so 10K rules take 4–6 levels on
//!   average, each **one** load. Replication is what makes cut trees blow up; it is
//!   controlled by the choices below, and build time stays in milliseconds.
//!
//! The pieces:
//!
//! - **Dimensions.** A [`Key`] is read as 18 `u32` dimensions (each address is four
//!   32-bit words, every other field one word). A rule becomes a box of inclusive `u32`
//!   ranges, the tightest word-wise box around its ranges. For prefixes (and every
//!   exact/wildcard/port-range field) the box is exact; for an odd 128-bit range it is a
//!   superset and the rule is flagged `verify`, so a leaf hit is confirmed with
//!   [`Rule::matches`]. **Unused fields cost nothing**: a dimension that every rule
//!   wildcards is never cut and never tested. A dimension that every rule pins to the same
//!   value (the `::ffff:0:0/96` words of IPv4 rule sets) is tested once per key up front
//!   (one masked compare per address) and then counts as satisfied, so it neither costs
//!   leaf tests nor prevents a broad rule from covering a region. Narrow fields use their
//!   real width (16 bits for ports), so the first cut takes their top bits.
//! - **Key slots.** Lookups read a key as an array of slots (`SLOT_DIM`) ordered so the
//!   IPv4 5-tuple's dimensions (and DSCP) come first. When every dimension in use sits
//!   in the first `NARROW` slots (all ClassBench sets), key preparation computes only
//!   those 8 words; otherwise all 18. Lookups are compiled per slot count and, for 1–6
//!   range dimensions, per range-dimension count (see *Leaves*).
//! - **Cuts with an "outside" child.** For the chosen dimension, the rules that do not
//!   span the node's region all lie in a smallest aligned block S; the node cuts S into
//!   `2^b` children and adds one child for "outside S" (which only holds the spanning
//!   rules). The child index is `min((v - off) >> shift, lim)`, so keys outside S need no
//!   branch. This skips runs of constant high bits the way path compression does in tries.
//! - **Flattening.** Every tree entry is 12 bytes and already holds the *next* node's
//!   `(dim, off, shift, lim, base)`, so each level is one load:
//!   `e = entries[e.base + min((slots[e.dim] - e.off) >> e.shift, e.lim)]`. A leaf entry
//!   (`dim` = `LEAF`) carries the leaf itself (first row, chunks, tests needed), so the
//!   leaf's rows are the next load, with no leaf table in between.
//! - **Bursts.** `classify_batch` walks up to [`BURST`] keys level by level, software
//!   pipelined: one pass over the burst loads each active key's entry, computes the index
//!   of its next one and prefetches it, so every load has had a whole pass to arrive.
//!   Keys that reached a leaf drop out of a branch-free active list; a key keeps only
//!   the index of its current entry (a select keeps a reached leaf's), not the entry, and
//!   the leaf entry is read again (from L1) once the walk ends. A node whose children are
//!   all leaves is flagged (a bit of its `shift`), so a key stepping through it drops out
//!   at once instead of spending one more pass to find its entry is a leaf (acl1_10K −3%,
//!   fw1_10K −17% instructions per lookup). Then all the leaves' rows
//!   are prefetched before any is tested. The burst's keys are prefetched up front.
//!   This replaces the SIMD gathers rte_acl uses (`core::arch` intrinsics are not
//!   callable from this crate's safe code); prefetches go through the `prefetch-index`
//!   crate, as in the flow table. Trees are ordered by their first rule; a key whose best match so far precedes a
//!   tree's first rule skips that tree.
//! - **Replication control.** Per node, `b` is the largest value whose total replication
//!   stays under `spfac × n` and the dimension is the one that minimises the fullest
//!   child. Rules after one that covers the node's region are dropped (they can never win
//!   there). Rules are partitioned CutSplit-style into up to three trees by whether their
//!   source and destination ranges are "small" (< 2^16 wide) so big wildcard rules do not
//!   replicate through the trees of specific ones; groups under 64 rules are merged
//!   into a larger one, since each tree costs a walk and a leaf test per key.
//!   Identical leaves are stored once. A global budget (entries + leaf rule slots) turns
//!   further nodes into leaves: slower past it, never wrong.
//! - **Leaves** hold rules in chunks of [`LANES`] (one SSE2 register) as
//!   structure-of-arrays: per range dimension `lo[4]` and `hi[4]` (biased so a signed
//!   compare is an unsigned compare), a mask of required "mask dimensions" (dimensions
//!   where rules either wildcard or want one constant), and the rule indices, in
//!   priority order; the first chunk with a hit ends the test. Each leaf records which
//!   dimensions still need testing (those its region has not already decided for all
//!   its rules). The lane loop is written so LLVM vectorizes it; the first set bit is
//!   the answer. When the number of range dimensions `R` is 1–6 (known at compile time),
//!   every range dimension is tested instead (one that the leaf's region decided passes
//!   for all its rules anyway), with no per-leaf bit loop; padding lanes hold empty
//!   ranges. The dimension loop keeps a run-time trip count on purpose: fully unrolled,
//!   LLVM's SLP vectorizer turned the lanes into scalar `setge` code. Leaves of at most [`SMALL_LEAF`] rules (most leaves on fw1 and acl1_100K)
//!   are instead stored rule after rule and tested with scalar compares: a chunk would
//!   be mostly padding, and on acl1_100K padding more than doubled the footprint.
//! - **Exact table.** When at least `exact_min` rules pin the whole 5-tuple (and wildcard
//!   the rest) they go to a hash table; a lookup takes the better of both.
//!
//! Measured and rejected (ClassBench, this design): 8-lane chunks (more instructions);
//! every leaf stored rule by rule with an exit branch per rule (about 12% fewer
//! instructions on acl1_10K and ipc1_10K, but slower: that branch mispredicts), or
//! tested four rules at a time (no faster than 4-lane chunks); a replication factor of
//! 16 (builds over 100 ms for 10K rules for a few percent); a factor of 12 (acl1_10K −2%
//! instructions, no faster in time, acl1_100K 26% more memory); `MAX_BITS` 14 (acl1_10K
//! unchanged, acl1_100K +12% instructions); an active list holding `entry << 8 | key`
//! instead of a separate position array (+3% instructions); with all-leaf nodes flagged,
//! automatic leaves of 12 rules (acl1_10K +3%) or 20 (−1%, within the 24-rule dead end).
//!
//! # Guarantees
//!
//! `lookup(k)` equals [`super::linear::Linear`]'s first match for every key: property
//! tests (`tests/classify_props.rs`) over random rules with IPv6, odd ranges and all 12
//! fields, and over IPv4 5-tuple rule sets (the narrow-key, fixed-`R` path), and zero
//! mismatches on the seven ClassBench hold-out sets
//! (`tests/classify_classbench.rs`). Lookups never allocate and never panic on any key.

// Lane loops index several arrays in lockstep on purpose: that is the shape LLVM
// vectorizes.
#![allow(clippy::needless_range_loop)]

use super::{Classifier, Decision, Key, Rule};
use hashbrown::HashMap;
use prefetch_index::{prefetch_index, prefetch_index_nta};

/// Number of 32-bit dimensions a key is cut into.
pub const NDIMS: usize = 18;
/// Rules per leaf chunk (one SIMD-friendly group).
pub const LANES: usize = 4;
/// Largest number of bits one node consumes.
pub const MAX_BITS: u32 = 12;
/// Keys walked together by `classify_batch`.
pub const BURST: usize = 32;

const NONE: u32 = u32::MAX;
const LANE_BIT: [u32; LANES] = [1, 2, 4, 8];

/// Canonical dimension held by each slot of a key's lookup array. The dimensions of an
/// IPv4 5-tuple (and DSCP) come first, so rule sets that use nothing else work on arrays
/// of [`NARROW`] slots: key preparation computes only those.
const SLOT_DIM: [u8; NDIMS] = [3, 7, 13, 14, 15, 2, 6, 16, 0, 1, 4, 5, 8, 9, 10, 11, 12, 17];
/// Slots of a narrow key array.
const NARROW: usize = 8;

/// Slot of canonical dimension `d` (inverse of [`SLOT_DIM`]).
fn slot_of(d: u8) -> u8 {
    SLOT_DIM.iter().position(|&x| x == d).unwrap_or(0) as u8
}

/// The first `N` slots of a key (see `SLOT_DIM`); `N` is 8 or 32 (a power of two, so
/// `s & (N - 1)` needs no bounds check). Slots past the 18 dimensions are 0.
#[inline(always)]
pub fn key_slots<const N: usize>(k: &Key) -> [u32; N] {
    let all: [u32; 32] = [
        k.src as u32,
        k.dst as u32,
        u32::from(k.proto),
        u32::from(k.src_port),
        u32::from(k.dst_port),
        (k.src >> 32) as u32,
        (k.dst >> 32) as u32,
        u32::from(k.dscp),
        (k.src >> 96) as u32,
        (k.src >> 64) as u32,
        (k.dst >> 96) as u32,
        (k.dst >> 64) as u32,
        u32::from(k.in_port),
        u32::from(k.vlan),
        u32::from(k.pcp),
        k.mpls,
        u32::from(k.ethertype),
        k.spi,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    let mut a = [0u32; N];
    a.copy_from_slice(&all[..N]);
    a
}

/// Width in bits of each dimension's domain (a `u16` field never exceeds 16 bits), so
/// the first cut on a port takes its top bits, not bits that are always zero.
const DOMAIN_BITS: [u8; NDIMS] = [
    32, 32, 32, 32, 32, 32, 32, 32, 16, 16, 8, 32, 16, 8, 16, 16, 8, 32,
];

type RBox = [(u32, u32); NDIMS];

/// Word-wise bounding box of a 128-bit range; `true` when the box is exact.
fn words128(lo: u128, hi: u128, out: &mut [(u32, u32)]) -> bool {
    let word = |v: u128, i: usize| (v >> (96 - 32 * i)) as u32;
    let mut exact = true;
    let mut split = 4;
    for i in 0..4 {
        if word(lo, i) != word(hi, i) {
            split = i;
            break;
        }
        out[i] = (word(lo, i), word(lo, i));
    }
    if split < 4 {
        out[split] = (word(lo, split), word(hi, split));
        for (i, o) in out.iter_mut().enumerate().skip(split + 1) {
            *o = (0, u32::MAX);
            if word(lo, i) != 0 || word(hi, i) != u32::MAX {
                exact = false;
            }
        }
    }
    exact
}

/// The rule's box over the dimensions, and whether it equals the rule exactly.
pub(crate) fn rule_box(r: &Rule) -> (RBox, bool) {
    let mut b = [(0u32, u32::MAX); NDIMS];
    let e1 = words128(r.src.lo, r.src.hi, &mut b[0..4]);
    let e2 = words128(r.dst.lo, r.dst.hi, &mut b[4..8]);
    // A narrow field's full range is the dimension's full range: keys never exceed the
    // field's maximum, so widening `hi` to `u32::MAX` changes nothing and marks it wildcard.
    fn w(lo: u32, hi: u32, max: u32) -> (u32, u32) {
        (lo, if hi >= max { u32::MAX } else { hi })
    }
    let (m8, m16) = (u32::from(u8::MAX), u32::from(u16::MAX));
    b[8] = w(r.in_port.lo.into(), r.in_port.hi.into(), m16);
    b[9] = w(r.vlan.lo.into(), r.vlan.hi.into(), m16);
    b[10] = w(r.pcp.lo.into(), r.pcp.hi.into(), m8);
    b[11] = (r.mpls.lo, r.mpls.hi);
    b[12] = w(r.ethertype.lo.into(), r.ethertype.hi.into(), m16);
    b[13] = w(r.proto.lo.into(), r.proto.hi.into(), m8);
    b[14] = w(r.src_port.lo.into(), r.src_port.hi.into(), m16);
    b[15] = w(r.dst_port.lo.into(), r.dst_port.hi.into(), m16);
    b[16] = w(r.dscp.lo.into(), r.dscp.hi.into(), m8);
    b[17] = (r.spi.lo, r.spi.hi);
    (b, e1 && e2)
}

/// True when a range is empty (`lo > hi`): such a rule matches nothing.
fn rule_empty(r: &Rule) -> bool {
    r.in_port.lo > r.in_port.hi
        || r.vlan.lo > r.vlan.hi
        || r.pcp.lo > r.pcp.hi
        || r.mpls.lo > r.mpls.hi
        || r.ethertype.lo > r.ethertype.hi
        || r.src.lo > r.src.hi
        || r.dst.lo > r.dst.hi
        || r.proto.lo > r.proto.hi
        || r.src_port.lo > r.src_port.hi
        || r.dst_port.lo > r.dst_port.hi
        || r.dscp.lo > r.dscp.hi
        || r.spi.lo > r.spi.hi
}

/// Key of the exact-match table: a full 5-tuple.
type ExactKey = (u128, u128, u16, u16, u8);

fn exact_key(r: &Rule) -> Option<ExactKey> {
    let point = r.src.lo == r.src.hi
        && r.dst.lo == r.dst.hi
        && r.src_port.lo == r.src_port.hi
        && r.dst_port.lo == r.dst_port.hi
        && r.proto.lo == r.proto.hi;
    let mut rest = *r;
    rest.src = Rule::any(r.decision).src;
    rest.dst = rest.src;
    rest.src_port = Rule::any(r.decision).src_port;
    rest.dst_port = rest.src_port;
    rest.proto = Rule::any(r.decision).proto;
    (point && rest == Rule::any(r.decision)).then_some((
        r.src.lo,
        r.dst.lo,
        r.src_port.lo,
        r.dst_port.lo,
        r.proto.lo,
    ))
}

/// Tuning knobs of the compiler.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Allowed replication per node: sum of children's rules ≤ `spfac × n`.
    pub spfac: f64,
    /// A node with at most this many rules becomes a leaf. 0 means automatic: 16 with at
    /// most 4 range dimensions, else 8 (a leaf test costs in proportion to the range
    /// dimensions, a level does not; measured on ClassBench: acl1_10K, 4 dims, runs ~8%
    /// fewer instructions per lookup with 16 than with 8, ipc1_10K, 5 dims, ~10% more).
    pub leaf_max: usize,
    /// Partition rules into small/large trees (CutSplit-style).
    pub partition: bool,
    /// Partition groups with fewer rules than this are merged into a larger one.
    pub min_group: usize,
    /// Move exact 5-tuple rules to a hash table when there are at least this many.
    pub exact_min: usize,
    /// Global budget of tree entries plus rule slots in leaves; past it nodes become
    /// leaves. 0 means automatic: `2^20 + 64 × rules`.
    pub max_entries: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            spfac: 8.0,
            leaf_max: 0,
            partition: true,
            min_group: 64,
            exact_min: 64,
            max_entries: 0,
        }
    }
}

/// Build statistics (for `check` and the bench command).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub trees: usize,
    pub rules_per_tree: Vec<usize>,
    pub depth_per_tree: Vec<u32>,
    pub entries: usize,
    pub leaves: usize,
    pub leaf_rules: usize,
    pub max_leaf: usize,
    pub exact_rules: usize,
    pub range_dims: usize,
    pub mask_dims: usize,
}

/// The compiled classifier. Immutable once built.
#[derive(Clone, Debug)]
pub struct Compiled {
    rules: Vec<Rule>,
    /// Each rule's decision, densely: what `classify_batch` reads per key (a `Rule` is
    /// two cache lines; this is 8 bytes).
    decisions: Vec<Decision>,
    verify: Vec<bool>,
    any_verify: bool,
    /// Slots (see [`SLOT_DIM`]) of the range dimensions tested in leaves, in row order.
    rslots: Vec<u8>,
    /// `rslots.len()` when lookups use a version compiled for that count (1..=6), else 0.
    rfix: usize,
    /// Every slot in use is below [`NARROW`]: keys are prepared as 8-slot arrays.
    narrow: bool,
    /// Mask dimensions: (slot, constant); bit `i` of the key mask is `slots[s] == c`.
    mslots: Vec<(u8, u32)>,
    /// Dimensions every tree rule pins to one value (a key that differs matches no tree
    /// rule): those of the source and destination address as `(mask, value)` on the
    /// whole address, any other as (slot, value).
    gsrc: (u128, u128),
    gdst: (u128, u128),
    grest: Vec<(u8, u32)>,
    /// Flattened tree entries; a leaf's entry carries the leaf (see [`Entry`]).
    entries: Vec<Entry>,
    roots: Vec<Entry>,
    /// Lowest rule index in each tree: a key whose best match so far is no later skips it.
    tree_first: Vec<u32>,
    /// Leaf chunks, `2 * rslots + 2` rows each: per range dim the lanes' `lo` and `hi`
    /// biased by `i32::MIN` (so a signed compare is an unsigned one), then the required
    /// mask bits, then the rule indices.
    rows: Vec<[i32; LANES]>,
    /// Small leaves (at most [`SMALL_LEAF`] rules), one rule after another: per range dim
    /// `lo` and `hi`, then the required mask bits, then the rule index (`2 * rslots + 2`
    /// words per rule). An 8-lane chunk would be mostly padding for them.
    small: Vec<u32>,
    exact: HashMap<ExactKey, u32>,
    stats: Stats,
}

/// One flattened tree entry: the node a child slot leads to, inlined so each level is a
/// single load. Child index = `min((slots[dim] - off) >> shift, lim)` (`dim` is a slot
/// of the key array, see `SLOT_DIM`; a node's `shift` may carry `KIDS_LEAVES`). A leaf is an entry
/// with `dim == LEAF` that carries its leaf inline, so reaching it costs no further
/// indirection: `base` = chunks and `off` = first row in `rows`, or for a small leaf
/// `base` = `SMALL_FLAG | rules` and `off` = first word in `small`; `lim | shift << 16` =
/// tests needed (bit 23 stands for bit 31 of the unpacked mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Entry {
    base: u32,
    off: u32,
    lim: u16,
    dim: u8,
    shift: u8,
}

/// Leaves with at most this many rules are stored row by row in `small`, not in chunks.
pub const SMALL_LEAF: usize = 3;
/// Bit of a leaf entry's `base` marking a small leaf (`base & !SMALL_FLAG` = rules).
const SMALL_FLAG: u32 = 1 << 31;

/// `Entry::dim` of a leaf (real dimensions are below [`NDIMS`]).
const LEAF: u8 = u8::MAX;
/// Bit of a node entry's `shift` marking a node whose children are all leaves: a burst
/// walk drops a key as soon as it steps through such a node, with no pass that only
/// finds out that the entry it reached is a leaf. `child` masks the shift with 31.
const KIDS_LEAVES: u8 = 0x80;
/// A leaf with no rules.
const EMPTY_LEAF: Entry = Entry {
    base: 0,
    off: 0,
    lim: 0,
    dim: LEAF,
    shift: 0,
};

impl Entry {
    #[inline(always)]
    fn is_node(self) -> bool {
        self.dim != LEAF
    }

    /// A leaf entry: `chunks` (as `base`, see [`Entry`]) from `start`, `need` as in
    /// `check_leaf`.
    fn leaf(start: u32, chunks: u32, need: u32) -> Entry {
        let packed = (need & 0x7f_ffff) | ((need >> 31) << 23);
        Entry {
            base: chunks,
            off: start,
            lim: packed as u16,
            dim: LEAF,
            shift: (packed >> 16) as u8,
        }
    }

    /// The unpacked "tests needed" mask of a leaf entry.
    #[inline(always)]
    fn need(self) -> u32 {
        let packed = u32::from(self.lim) | (u32::from(self.shift) << 16);
        (packed & 0x7f_ffff) | ((packed >> 23) << 31)
    }
}

/// Index in `entries` of the child of node `e` the key's slot value selects (`e.dim` is
/// a slot).
#[inline(always)]
fn child<const N: usize>(e: Entry, dims: &[u32; N]) -> usize {
    let v = dims[e.dim as usize & (N - 1)].wrapping_sub(e.off);
    e.base as usize + ((v >> (e.shift & 31)).min(u32::from(e.lim))) as usize
}

/// One level: the entry the key's slot value selects below node `e`.
#[inline(always)]
fn step<const N: usize>(entries: &[Entry], e: Entry, dims: &[u32; N]) -> Entry {
    // Out of range cannot happen for a well-built table; an empty leaf yields "no match"
    // rather than a panic.
    *entries.get(child(e, dims)).unwrap_or(&EMPTY_LEAF)
}

#[derive(Clone, Copy)]
enum Slot {
    Node(Entry),
    Leaf(u32),
}

#[derive(Clone, Copy)]
struct Region {
    base: [u32; NDIMS],
    k: [u8; NDIMS],
}

struct Builder<'a> {
    boxes: &'a [RBox],
    verify: &'a [bool],
    active: &'a [usize],
    rdims: &'a [u8],
    mdims: &'a [(u8, u32)],
    p: Params,
    slots: Vec<Slot>,
    /// Leaf rules, with the leaf's "dims to test" mask pushed last.
    leaves: Vec<Vec<u32>>,
    leaf_map: HashMap<Vec<u32>, u32>,
    /// Where the current tree's share of `max_entries` ends.
    budget_end: usize,
    /// Rule slots held by leaves so far (counts against `max_entries`).
    leaf_slots: usize,
    max_depth: u32,
}

/// A candidate cut of one node.
#[derive(Clone, Copy)]
struct Cut {
    dim: usize,
    /// Start of the aligned block S holding every rule not spanning the region on `dim`.
    off: u64,
    /// log2 of S's size.
    ks: u32,
    bits: u32,
    /// S is smaller than the region: an extra last child takes keys outside S.
    outside: bool,
    maxc: usize,
    sum: u64,
}

impl Builder<'_> {
    /// Which leaf tests are needed in `reg`: bit `j` for range dim `j` unless every rule
    /// spans the region there (the tree path already decided it), bit 31 for the mask dims.
    fn need(&self, rules: &[u32], reg: &Region) -> u32 {
        let spans = |r: u32, d: usize| {
            let (lo, hi) = self.boxes[r as usize][d];
            lo <= reg.base[d] && u64::from(hi) >= u64::from(reg.base[d]) + (1u64 << reg.k[d]) - 1
        };
        let mut m = 0;
        for (j, &d) in self.rdims.iter().enumerate() {
            if rules.iter().any(|&r| !spans(r, usize::from(d))) {
                m |= 1 << j;
            }
        }
        if self
            .mdims
            .iter()
            .any(|&(d, _)| rules.iter().any(|&r| !spans(r, usize::from(d))))
        {
            m |= 1 << 31;
        }
        m
    }

    fn leaf(&mut self, mut rules: Vec<u32>, reg: &Region) -> Slot {
        let need = self.need(&rules, reg);
        rules.push(need);
        if let Some(&id) = self.leaf_map.get(&rules) {
            return Slot::Leaf(id);
        }
        let id = self.leaves.len() as u32;
        self.leaf_slots += rules.len();
        self.leaves.push(rules.clone());
        self.leaf_map.insert(rules, id);
        Slot::Leaf(id)
    }

    fn covers(&self, r: u32, reg: &Region) -> bool {
        let b = &self.boxes[r as usize];
        self.active.iter().all(|&d| {
            let hi = u64::from(reg.base[d]) + (1u64 << reg.k[d]) - 1;
            b[d].0 <= reg.base[d] && u64::from(b[d].1) >= hi
        })
    }

    /// Best cut on `d`, or `None` when `d` cannot separate these rules.
    fn eval(
        &self,
        rules: &[u32],
        reg: &Region,
        d: usize,
        clipped: &mut Vec<(u64, u64)>,
    ) -> Option<Cut> {
        let k = u32::from(reg.k[d]);
        let base = u64::from(reg.base[d]);
        let top = base + (1u64 << k) - 1;
        clipped.clear();
        let mut span = 0usize;
        let (mut smin, mut smax) = (u64::MAX, 0u64);
        for &r in rules {
            let (lo, hi) = self.boxes[r as usize][d];
            let lo = u64::from(lo).max(base);
            let hi = u64::from(hi).min(top);
            if lo == base && hi == top {
                span += 1;
            } else {
                clipped.push((lo, hi));
                smin = smin.min(lo);
                smax = smax.max(hi);
            }
        }
        if clipped.is_empty() {
            return None;
        }
        let ks = 64 - (smin ^ smax).leading_zeros();
        let ks = ks.min(k);
        let off = smin & !((1u64 << ks) - 1);
        let outside = ks < k;
        let n = rules.len();
        let budget = ((self.p.spfac * n as f64) as u64).max(n as u64 + 2);
        let minb = u32::from(!outside);
        let maxb = ks.min(MAX_BITS);
        let mut best: Option<Cut> = None;
        let mut diff: Vec<i64> = Vec::new();
        for bits in minb..=maxb {
            let sh = ks - bits;
            let nchild = (1u64 << bits) + u64::from(outside);
            let mut sum = span as u64 * nchild;
            diff.clear();
            diff.resize((1usize << bits) + 1, 0);
            for &(lo, hi) in clipped.iter() {
                let (a, z) = (((lo - off) >> sh) as usize, ((hi - off) >> sh) as usize);
                diff[a] += 1;
                diff[z + 1] -= 1;
                sum += (z - a + 1) as u64;
            }
            if sum + nchild > budget && best.is_some() {
                break;
            }
            let mut run = 0i64;
            let mut maxc = 0i64;
            for v in &diff[..1usize << bits] {
                run += v;
                maxc = maxc.max(run);
            }
            let maxc = maxc as usize + span;
            best = Some(Cut {
                dim: d,
                off,
                ks,
                bits,
                outside,
                maxc,
                sum,
            });
        }
        best
    }

    fn build(&mut self, mut rules: Vec<u32>, reg: &Region, depth: u32) -> Slot {
        self.max_depth = self.max_depth.max(depth);
        // Rules after one covering the whole region can never win here.
        if let Some(pos) = rules
            .iter()
            .position(|&r| !self.verify[r as usize] && self.covers(r, reg))
        {
            rules.truncate(pos + 1);
        }
        let n = rules.len();
        if n <= self.p.leaf_max
            || depth >= 32
            || self.slots.len() + self.leaf_slots >= self.budget_end
        {
            return self.leaf(rules, reg);
        }
        let mut best: Option<Cut> = None;
        let mut clipped = Vec::with_capacity(n);
        for &d in self.active {
            if let Some(c) = self.eval(&rules, reg, d, &mut clipped) {
                let better =
                    best.is_none_or(|b| c.maxc < b.maxc || (c.maxc == b.maxc && c.sum < b.sum));
                if better {
                    best = Some(c);
                }
            }
        }
        let Some(cut) = best else {
            return self.leaf(rules, reg);
        };
        if cut.maxc >= n {
            return self.leaf(rules, reg);
        }
        let d = cut.dim;
        let k = u32::from(reg.k[d]);
        let sh = cut.ks - cut.bits;
        let base = u64::from(reg.base[d]);
        let top = base + (1u64 << k) - 1;
        let inner = 1usize << cut.bits;
        let nchild = inner + usize::from(cut.outside);
        let mut kids: Vec<Vec<u32>> = vec![Vec::new(); nchild];
        for &r in &rules {
            let (lo, hi) = self.boxes[r as usize][d];
            let lo = u64::from(lo).max(base);
            let hi = u64::from(hi).min(top);
            if lo == base && hi == top {
                for kid in &mut kids {
                    kid.push(r);
                }
            } else {
                let a = ((lo - cut.off) >> sh) as usize;
                let z = ((hi - cut.off) >> sh) as usize;
                for kid in &mut kids[a..=z] {
                    kid.push(r);
                }
            }
        }
        drop(rules);
        let at = self.slots.len();
        self.slots.resize(at + nchild, Slot::Leaf(0));
        for (c, kid) in kids.into_iter().enumerate() {
            let mut sub = *reg;
            if c < inner {
                sub.base[d] = (cut.off + ((c as u64) << sh)) as u32;
                sub.k[d] = sh as u8;
            }
            // The outside child keeps the whole region (a superset of region minus S):
            // it holds only rules spanning the region on `d`, so this stays exact enough.
            let s = self.build(kid, &sub, depth + 1);
            self.slots[at + c] = s;
        }
        let kids_leaves = self.slots[at..at + nchild]
            .iter()
            .all(|s| matches!(s, Slot::Leaf(_)));
        Slot::Node(Entry {
            base: at as u32,
            off: cut.off as u32,
            lim: (nchild - 1) as u16,
            dim: d as u8,
            shift: sh as u8 | if kids_leaves { KIDS_LEAVES } else { 0 },
        })
    }
}

impl Compiled {
    /// Compiles `rules` (index 0 has the highest priority) with default parameters.
    pub fn build(rules: &[Rule]) -> Self {
        Self::build_with(rules, Params::default())
    }

    /// Compiles `rules` with explicit parameters.
    pub fn build_with(rules: &[Rule], mut p: Params) -> Self {
        if p.max_entries == 0 {
            p.max_entries = (1 << 20) + 64 * rules.len();
        }
        let mut verify = Vec::with_capacity(rules.len());
        let mut boxes = Vec::with_capacity(rules.len());
        for r in rules {
            let (b, exact) = rule_box(r);
            boxes.push(b);
            verify.push(!exact);
        }
        let any_verify = verify.iter().any(|&v| v);
        // Exact 5-tuple rules to the hash table when there are enough of them.
        let mut exact: HashMap<ExactKey, u32> = HashMap::new();
        let ekeys: Vec<Option<ExactKey>> = rules.iter().map(exact_key).collect();
        if ekeys.iter().filter(|e| e.is_some()).count() >= p.exact_min {
            for (i, e) in ekeys.iter().enumerate() {
                if let Some(e) = e {
                    exact.entry(*e).or_insert(i as u32);
                }
            }
        }
        let in_tree: Vec<u32> = (0..rules.len() as u32)
            .filter(|&i| {
                let r = &rules[i as usize];
                !rule_empty(r) && (exact.is_empty() || ekeys[i as usize].is_none())
            })
            .collect();
        // Active dimensions: some tree rule is not a full wildcard there.
        // Dimensions where every tree rule wants the same single value (for IPv4 rule sets,
        // the `::ffff:0:0/96` words of both addresses) are tested once per key up front
        // and then treated as satisfied: they take no leaf test and do not stop a rule from
        // "covering" a region (which is what lets the catch-all prune).
        let gconst: Vec<(u8, u32)> = if in_tree.is_empty() {
            Vec::new()
        } else {
            (0..NDIMS)
                .filter_map(|d| {
                    let (lo, hi) = boxes[in_tree[0] as usize][d];
                    let same =
                        lo == hi && in_tree.iter().all(|&r| boxes[r as usize][d] == (lo, lo));
                    same.then_some((d as u8, lo))
                })
                .collect()
        };
        let active: Vec<usize> = (0..NDIMS)
            .filter(|&d| !gconst.iter().any(|&(g, _)| usize::from(g) == d))
            .filter(|&d| {
                in_tree
                    .iter()
                    .any(|&r| boxes[r as usize][d] != (0, u32::MAX))
            })
            .collect();
        let mut rdims = Vec::new();
        let mut mdims = Vec::new();
        for &d in &active {
            let mut c: Option<u32> = None;
            let mut mask_ok = true;
            for &r in &in_tree {
                let (lo, hi) = boxes[r as usize][d];
                if (lo, hi) == (0, u32::MAX) {
                    continue;
                }
                if lo != hi || c.is_some_and(|c| c != lo) {
                    mask_ok = false;
                    break;
                }
                c = Some(lo);
            }
            match c {
                Some(c) if mask_ok && mdims.len() < 31 => mdims.push((d as u8, c)),
                _ => rdims.push(d as u8),
            }
        }
        if p.leaf_max == 0 {
            p.leaf_max = if rdims.len() <= 4 { 16 } else { 8 };
        }
        // Partition (CutSplit-style) on the two most selective address dimensions.
        let mut groups: Vec<Vec<u32>> = if p.partition && in_tree.len() > 32 {
            partition(&in_tree, &boxes, &rdims)
        } else {
            vec![in_tree.clone()]
        };
        // A tree costs a walk and a leaf test per key: fold groups too small to be worth
        // one into the next larger group (merged lists are re-sorted by priority).
        let min_group = p.min_group;
        groups.retain(|g| !g.is_empty());
        groups.sort_by_key(|g| g.len());
        while groups.len() > 1 && groups[0].len() < min_group {
            let small = groups.remove(0);
            groups[0].extend(small);
            groups[0].sort_unstable();
            groups.sort_by_key(|g| g.len());
        }
        // Trees in the order of their first rule: a key matched early in one can skip the
        // later ones entirely.
        groups.sort_by_key(|g| g.first().copied().unwrap_or(u32::MAX));
        let mut b = Builder {
            boxes: &boxes,
            verify: &verify,
            active: &active,
            rdims: &rdims,
            mdims: &mdims,
            p,
            slots: Vec::new(),
            leaves: Vec::new(),
            leaf_map: HashMap::new(),
            leaf_slots: 0,
            budget_end: 0,
            max_depth: 0,
        };
        let full = Region {
            base: [0; NDIMS],
            k: DOMAIN_BITS,
        };
        let mut root_slots = Vec::new();
        let mut tree_first = Vec::new();
        let mut depths = Vec::new();
        let mut stats = Stats::default();
        let total: usize = groups.iter().map(Vec::len).sum();
        for g in groups.into_iter().filter(|g| !g.is_empty()) {
            stats.rules_per_tree.push(g.len());
            tree_first.push(g.iter().copied().min().unwrap_or(0));
            // Each tree gets a share of the budget in proportion to its rules (at least
            // 2^16), so one exploding tree cannot starve the others.
            let share = (p.max_entries as f64 * g.len() as f64 / total.max(1) as f64) as usize;
            b.budget_end = b.slots.len() + b.leaf_slots + share.max(1 << 16);
            b.max_depth = 0;
            let s = b.build(g, &full, 0);
            root_slots.push(s);
            depths.push(b.max_depth);
        }
        // Leaves: SoA chunks.
        let r = rdims.len();
        let stride = 2 * r + 2;
        let mut rows: Vec<[i32; LANES]> = Vec::new();
        let mut small: Vec<u32> = Vec::new();
        let mut leaves: Vec<Entry> = Vec::with_capacity(b.leaves.len());
        let bias = |v: u32| (v ^ 0x8000_0000) as i32;
        for rl in &b.leaves {
            let (need, rl) = rl.split_last().map_or((0, &rl[..]), |(n, r)| (*n, r));
            stats.leaf_rules += rl.len();
            stats.max_leaf = stats.max_leaf.max(rl.len());
            let chunks = rl.len().div_ceil(LANES);
            let req_of = |bx: &RBox| {
                let mut req = 0u32;
                for (i, &(d, _)) in mdims.iter().enumerate() {
                    if bx[d as usize] != (0, u32::MAX) {
                        req |= 1 << i;
                    }
                }
                req
            };
            if rl.len() <= SMALL_LEAF {
                leaves.push(Entry::leaf(
                    small.len() as u32,
                    SMALL_FLAG | rl.len() as u32,
                    need,
                ));
                for &ri in rl {
                    let bx = &boxes[ri as usize];
                    for &d in &rdims {
                        let (lo, hi) = bx[d as usize];
                        small.extend([lo, hi]);
                    }
                    small.extend([req_of(bx), ri]);
                }
                continue;
            }
            leaves.push(Entry::leaf(rows.len() as u32, chunks as u32, need));
            for ch in rl.chunks(LANES) {
                let at = rows.len();
                rows.resize(at + stride, [0; LANES]);
                let c = &mut rows[at..at + stride];
                for lane in 0..LANES {
                    match ch.get(lane) {
                        Some(&ri) => {
                            let bx = &boxes[ri as usize];
                            for (j, &d) in rdims.iter().enumerate() {
                                let (lo, hi) = bx[d as usize];
                                c[2 * j][lane] = bias(lo);
                                c[2 * j + 1][lane] = bias(hi);
                            }
                            let mut req = 0u32;
                            for (i, &(d, _)) in mdims.iter().enumerate() {
                                if bx[d as usize] != (0, u32::MAX) {
                                    req |= 1 << i;
                                }
                            }
                            c[2 * r][lane] = req as i32;
                            c[2 * r + 1][lane] = ri as i32;
                        }
                        None => {
                            // Never matches: an empty range on every range dim, and a
                            // requirement on bit 31 of the key mask (always clear).
                            for j in 0..r {
                                c[2 * j][lane] = i32::MAX;
                                c[2 * j + 1][lane] = i32::MIN;
                            }
                            c[2 * r][lane] = i32::MIN;
                            c[2 * r + 1][lane] = -1;
                        }
                    }
                }
            }
        }
        // Tree entries name slots of the key array, not canonical dimensions.
        let enc = |s: Slot| match s {
            Slot::Node(mut e) => {
                e.dim = slot_of(e.dim);
                e
            }
            Slot::Leaf(l) => leaves.get(l as usize).copied().unwrap_or(EMPTY_LEAF),
        };
        let entries: Vec<Entry> = b.slots.iter().map(|&s| enc(s)).collect();
        let roots: Vec<Entry> = root_slots.into_iter().map(enc).collect();
        stats.trees = roots.len();
        stats.depth_per_tree = depths;
        stats.entries = entries.len();
        stats.leaves = leaves.len();
        stats.exact_rules = exact.len();
        stats.range_dims = rdims.len();
        stats.mask_dims = mdims.len();
        let rslots: Vec<u8> = rdims.iter().map(|&d| slot_of(d)).collect();
        let mslots: Vec<(u8, u32)> = mdims.iter().map(|&(d, c)| (slot_of(d), c)).collect();
        // Pinned address words become one masked compare per address.
        let (mut gsrc, mut gdst) = ((0u128, 0u128), (0u128, 0u128));
        let mut grest = Vec::new();
        for &(d, c) in &gconst {
            let sh = 96 - 32 * u32::from(d % 4);
            let g = match d {
                0..4 => &mut gsrc,
                4..8 => &mut gdst,
                _ => {
                    grest.push((slot_of(d), c));
                    continue;
                }
            };
            g.0 |= u128::from(u32::MAX) << sh;
            g.1 |= u128::from(c) << sh;
        }
        let narrow = rslots
            .iter()
            .chain(mslots.iter().map(|(s, _)| s))
            .chain(grest.iter().map(|(s, _)| s))
            .all(|&s| usize::from(s) < NARROW);
        let rfix = if (1..=6).contains(&rslots.len()) {
            rslots.len()
        } else {
            0
        };
        Compiled {
            rules: rules.to_vec(),
            decisions: rules.iter().map(|r| r.decision).collect(),
            verify,
            any_verify,
            rslots,
            rfix,
            narrow,
            mslots,
            gsrc,
            gdst,
            grest,
            entries,
            roots,
            tree_first,
            rows,
            small,
            exact,
            stats,
        }
    }

    /// Per tree: (levels walked, rules in the leaf reached) for `key`. Diagnostics.
    pub fn path_profile(&self, key: &Key) -> Vec<(u32, usize)> {
        let dims = key_slots::<32>(key);
        let mut out = Vec::new();
        for &root in &self.roots {
            let mut e = root;
            let mut lv = 0;
            while e.is_node() {
                e = step(&self.entries, e, &dims);
                lv += 1;
            }
            let rules = if e.base & SMALL_FLAG != 0 {
                (e.base & !SMALL_FLAG) as usize
            } else {
                e.base as usize * LANES
            };
            out.push((lv, rules));
        }
        out
    }

    /// Build statistics.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The rules this was compiled from, in priority order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The mask word of a key (bit `i`: mask dim `i` holds its constant) and whether the
    /// key passes the dimensions every tree rule pins (the address words in the `u128`
    /// masks, any other in `grest`).
    #[inline(always)]
    fn key_mask<const N: usize>(&self, d: &[u32; N], key: &Key) -> (u32, bool) {
        let mut m = 0u32;
        for (i, &(s, c)) in self.mslots.iter().enumerate() {
            m |= u32::from(d[s as usize & (N - 1)] == c) << i;
        }
        // One test for both addresses: no differing bit under either mask.
        let diff =
            ((key.src ^ self.gsrc.1) & self.gsrc.0) | ((key.dst ^ self.gdst.1) & self.gdst.0);
        let ok = diff == 0
            && self
                .grest
                .iter()
                .all(|&(s, c)| d[s as usize & (N - 1)] == c);
        (m, ok)
    }

    /// Whether a leaf hit on rule `ri` stands (rules whose box is a superset are
    /// confirmed against the key).
    #[inline(always)]
    fn confirmed(&self, ri: u32, key: &Key) -> bool {
        !self.any_verify
            || !self.verify.get(ri as usize).copied().unwrap_or(false)
            || self
                .rules
                .get(ri as usize)
                .is_some_and(|ru| ru.matches(key))
    }

    /// The rule of the first lane (in priority order) whose `ok` is all ones and whose
    /// hit stands ([`Self::confirmed`]), or `NONE`: the end of every chunked leaf test.
    #[inline(always)]
    fn first_lane(&self, ok: &[i32; LANES], idx: &[i32; LANES], key: &Key) -> u32 {
        let mut bits = 0u32;
        for l in 0..LANES {
            bits |= (ok[l] as u32) & LANE_BIT[l];
        }
        while bits != 0 {
            let l = bits.trailing_zeros() as usize;
            let ri = idx[l % LANES] as u32;
            if self.confirmed(ri, key) {
                return ri;
            }
            bits &= bits - 1;
        }
        NONE
    }

    /// First rule of the leaf entry `leaf` matching, or `NONE`, when the number of range
    /// dims `R` is known at compile time: `rs` are the slots of the range dims in `dims`
    /// (chunks compare them biased, see [`Compiled::biased`]). Every range dim is tested (no
    /// per-leaf "tests needed" loop): a dim the leaf's region has decided passes for every
    /// rule there anyway, and fixed-count loops unroll into straight-line compares with no
    /// bounds checks.
    #[inline(always)]
    fn check_leaf_fix<const N: usize, const R: usize>(
        &self,
        leaf: Entry,
        dims: &[u32; N],
        rs: &[usize; R],
        km: u32,
        key: &Key,
    ) -> u32 {
        let start = leaf.off as usize;
        if leaf.base & SMALL_FLAG != 0 {
            let stride = 2 * R + 2;
            let n = (leaf.base & !SMALL_FLAG) as usize;
            let Some(rows) = self.small.get(start..start + n * stride) else {
                return NONE;
            };
            let v: [u32; R] = std::array::from_fn(|j| dims[rs[j] & (N - 1)]);
            for row in rows.chunks_exact(stride) {
                let mut ok = true;
                for j in 0..R {
                    ok &= (row[2 * j] <= v[j]) & (v[j] <= row[2 * j + 1]);
                }
                ok &= row[2 * R] & !km == 0;
                let ri = row[2 * R + 1];
                if ok && self.confirmed(ri, key) {
                    return ri;
                }
            }
            return NONE;
        }
        // Chunks: the dimension loop keeps a run-time trip count (`rslots.len()`, equal to
        // `R`): unrolled, LLVM's SLP vectorizer falls back to scalar compares; as a loop,
        // each step is two `pcmpgtd` on one SSE2 register of lanes. The chunks are taken
        // one by one from the leaf's first row (no multiplied, overflow-checked length).
        let r = self.rslots.len();
        let stride = 2 * r + 2;
        let Some(mut rest) = self.rows.get(start..) else {
            return NONE;
        };
        let masks = !self.mslots.is_empty();
        let vb = Self::biased(dims, rs);
        for _ in 0..leaf.base {
            let Some((c, tail)) = rest.split_at_checked(stride) else {
                return NONE;
            };
            rest = tail;
            let (pairs, _) = c.as_chunks::<2>();
            let Some(([req, idx], lohi)) = pairs.split_last() else {
                return NONE;
            };
            let mut ok = [-1i32; LANES];
            // Two dims per step (half the loop overhead), then an odd last one.
            let (dd, odd) = lohi.as_chunks::<2>();
            let (vv, _) = vb.as_chunks::<2>();
            for ([[lo0, hi0], [lo1, hi1]], &[x0, x1]) in dd.iter().zip(vv) {
                for l in 0..LANES {
                    ok[l] &= !(-i32::from(x0 < lo0[l])
                        | -i32::from(hi0[l] < x0)
                        | -i32::from(x1 < lo1[l])
                        | -i32::from(hi1[l] < x1));
                }
            }
            for ([lo, hi], &x) in odd.iter().zip(&vb[2 * dd.len() % 8..]) {
                for l in 0..LANES {
                    ok[l] &= !(-i32::from(x < lo[l]) | -i32::from(hi[l] < x));
                }
            }
            // Real rules without mask dims require no mask bits; padding lanes require
            // bit 31 (never set). With no mask dims at all there is nothing to test:
            // padding lanes already fail on their empty ranges (`R` ≥ 1 here).
            if masks {
                let nkm = !km as i32;
                for l in 0..LANES {
                    ok[l] &= -i32::from(req[l] & nkm == 0);
                }
            }
            let ri = self.first_lane(&ok, idx, key);
            if ri != NONE {
                return ri;
            }
        }
        NONE
    }

    /// `check_leaf_fix` for any number of range dims (read from `rslots`), testing only the
    /// dims the leaf needs: bit `j` = range dim `j`, bit 31 = mask dims.
    #[inline(always)]
    fn check_leaf_dyn<const N: usize>(
        &self,
        leaf: Entry,
        dims: &[u32; N],
        km: u32,
        key: &Key,
    ) -> u32 {
        let need = leaf.need();
        let r = self.rslots.len();
        let stride = 2 * r + 2;
        let start = leaf.off as usize;
        if leaf.base & SMALL_FLAG != 0 {
            let n = (leaf.base & !SMALL_FLAG) as usize;
            let Some(mut rest) = self.small.get(start..start + n * stride) else {
                return NONE;
            };
            while let Some((row, tail)) = rest.split_at_checked(stride) {
                rest = tail;
                let mut ok = true;
                let mut m = need & 0x7fff_ffff;
                while m != 0 {
                    let j = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let s = self.rslots.get(j).copied().unwrap_or(0);
                    let v = dims[s as usize & (N - 1)];
                    let (Some(&lo), Some(&hi)) = (row.get(2 * j), row.get(2 * j + 1)) else {
                        return NONE;
                    };
                    ok &= lo <= v && v <= hi;
                }
                let (Some(&req), Some(&ri)) = (row.get(2 * r), row.get(2 * r + 1)) else {
                    return NONE;
                };
                if need >> 31 != 0 {
                    ok &= req & !km == 0;
                }
                if ok && self.confirmed(ri, key) {
                    return ri;
                }
            }
            return NONE;
        }
        let len = leaf.base as usize * stride;
        let Some(leaf_rows) = self.rows.get(start..start + len) else {
            return NONE;
        };
        let nkm = !km as i32;
        for c in leaf_rows.chunks_exact(stride) {
            // The lane loop is what LLVM vectorizes (SSE2 `pcmpgtd`); the bit-scan loop
            // over dimensions is not countable, so it is not vectorized instead.
            let mut ok = [-1i32; LANES];
            let mut m = need & 0x7fff_ffff;
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                let s = self.rslots.get(j).copied().unwrap_or(0);
                let v = (dims[s as usize & (N - 1)] ^ 0x8000_0000) as i32;
                let (Some(lo), Some(hi)) = (c.get(2 * j), c.get(2 * j + 1)) else {
                    return NONE;
                };
                for l in 0..LANES {
                    ok[l] &= !(-i32::from(v < lo[l]) | -i32::from(hi[l] < v));
                }
            }
            let (Some(req), Some(idx)) = (c.get(2 * r), c.get(2 * r + 1)) else {
                return NONE;
            };
            if need >> 31 != 0 {
                for l in 0..LANES {
                    ok[l] &= -i32::from(req[l] & nkm == 0);
                }
            } else {
                // Padding lanes carry an impossible requirement; honour it anyway.
                for l in 0..LANES {
                    ok[l] &= -i32::from(req[l] >= 0);
                }
            }
            let ri = self.first_lane(&ok, idx, key);
            if ri != NONE {
                return ri;
            }
        }
        NONE
    }

    /// The leaf test, fixed (`R > 0`, reading the biased range values `vb`) or dynamic
    /// (`R == 0`, reading the slots `dims`).
    #[inline(always)]
    fn check_leaf<const N: usize, const R: usize>(
        &self,
        leaf: Entry,
        dims: &[u32; N],
        rs: &[usize; R],
        km: u32,
        key: &Key,
    ) -> u32 {
        if R == 0 {
            self.check_leaf_dyn(leaf, dims, km, key)
        } else {
            self.check_leaf_fix::<N, R>(leaf, dims, rs, km, key)
        }
    }

    /// The key's values of the range dims (slots `rs`) biased by `i32::MIN`, so a signed
    /// compare is an unsigned one (`R` ≤ 6). Computed per chunked leaf test, not once per
    /// key up front: with three trees and mostly small leaves (fw1_10K) the up-front
    /// version ran ~7% slower, for no measurable gain on acl1_10K.
    #[inline(always)]
    fn biased<const N: usize, const R: usize>(dims: &[u32; N], rs: &[usize; R]) -> [i32; 8] {
        let mut vb = [0i32; 8];
        for j in 0..R.min(8) {
            vb[j] = (dims[rs[j] & (N - 1)] ^ 0x8000_0000) as i32;
        }
        vb
    }

    #[inline]
    fn exact_lookup(&self, k: &Key) -> u32 {
        if self.exact.is_empty() {
            return NONE;
        }
        self.exact
            .get(&(k.src, k.dst, k.src_port, k.dst_port, k.proto))
            .copied()
            .unwrap_or(NONE)
    }

    /// Slots of the range dims, for `check_leaf`.
    #[inline(always)]
    fn range_slots<const N: usize, const R: usize>(&self) -> [usize; R] {
        std::array::from_fn(|j| self.rslots.get(j).map_or(0, |&s| s as usize & (N - 1)))
    }

    fn lookup_one<const N: usize, const R: usize>(&self, key: &Key) -> u32 {
        let dims = key_slots::<N>(key);
        let (km, ok) = self.key_mask(&dims, key);
        let mut best = self.exact_lookup(key);
        if !ok {
            return best;
        }
        let rs = self.range_slots::<N, R>();
        for (&root, &first) in self.roots.iter().zip(&self.tree_first) {
            // Every rule of this tree comes after the best match so far.
            if best <= first {
                continue;
            }
            let mut e = root;
            while e.is_node() {
                e = step(&self.entries, e, &dims);
            }
            best = best.min(self.check_leaf::<N, R>(e, &dims, &rs, km, key));
        }
        best
    }

    fn lookup_raw(&self, key: &Key) -> u32 {
        match (self.narrow, self.rfix) {
            (true, 1) => self.lookup_one::<NARROW, 1>(key),
            (true, 2) => self.lookup_one::<NARROW, 2>(key),
            (true, 3) => self.lookup_one::<NARROW, 3>(key),
            (true, 4) => self.lookup_one::<NARROW, 4>(key),
            (true, 5) => self.lookup_one::<NARROW, 5>(key),
            (true, 6) => self.lookup_one::<NARROW, 6>(key),
            (true, _) => self.lookup_one::<NARROW, 0>(key),
            (false, _) => self.lookup_one::<32, 0>(key),
        }
    }

    /// Looks up a burst (at most [`BURST`] keys at a time), writing rule indices
    /// (`u32::MAX` for no match). Trees are walked level by level across the burst.
    pub fn lookup_burst(&self, keys: &[Key], out: &mut [u32]) {
        for (kc, oc) in keys.chunks(BURST).zip(out.chunks_mut(BURST)) {
            match (self.narrow, self.rfix) {
                (true, 1) => self.burst::<NARROW, 1>(kc, oc),
                (true, 2) => self.burst::<NARROW, 2>(kc, oc),
                (true, 3) => self.burst::<NARROW, 3>(kc, oc),
                (true, 4) => self.burst::<NARROW, 4>(kc, oc),
                (true, 5) => self.burst::<NARROW, 5>(kc, oc),
                (true, 6) => self.burst::<NARROW, 6>(kc, oc),
                (true, _) => self.burst::<NARROW, 0>(kc, oc),
                (false, _) => self.burst::<32, 0>(kc, oc),
            }
        }
    }

    /// One burst of at most [`BURST`] keys with `N`-slot key arrays and `R` range dims
    /// (0 = read at run time).
    #[inline(always)]
    fn burst<const N: usize, const R: usize>(&self, kc: &[Key], oc: &mut [u32]) {
        let n = kc.len().min(oc.len()).min(BURST);
        // Start every key's cache miss at once, before the loop that needs them.
        for i in 0..n {
            prefetch_index_nta(kc, i);
        }
        let mut dims = [[0u32; N]; BURST];
        let mut km = [0u32; BURST];
        let mut live = [false; BURST];
        let rs = self.range_slots::<N, R>();
        for i in 0..n {
            dims[i] = key_slots::<N>(&kc[i]);
            (km[i], live[i]) = self.key_mask(&dims[i], &kc[i]);
        }
        let mut best = [NONE; BURST];
        if !self.exact.is_empty() {
            for (b, k) in best.iter_mut().zip(&kc[..n]) {
                *b = self.exact_lookup(k);
            }
        }
        let entries = &self.entries[..];
        // Per key, the index in `entries` of its current entry (a node still to step
        // through, or the leaf it reached: a leaf keeps its own index).
        let mut pos = [0u32; BURST];
        let mut sel = [0u8; BURST];
        let mut act = [0u8; BURST];
        for (&root, &first) in self.roots.iter().zip(&self.tree_first) {
            // The keys this tree can still improve: they pass the pinned dims and their
            // best match so far comes after the tree's first rule.
            let mut ns = 0;
            for i in 0..n {
                sel[ns % BURST] = i as u8;
                ns += usize::from(live[i] & (best[i] > first));
            }
            let sel = &sel[..ns.min(BURST)];
            // Walk the keys one level at a time, software-pipelined: a pass loads the
            // entries whose prefetch the previous pass issued, and prefetches the next
            // ones, so every load had a whole pass over the burst to arrive. Keys that
            // reached a leaf drop out of the active list (branch-free compaction) and keep
            // the leaf's index; only that index is stored per level, not the entry.
            let mut na = 0;
            if root.is_node() {
                for &i in sel {
                    let i = i as usize % BURST;
                    let c = child(root, &dims[i]);
                    pos[i] = c as u32;
                    prefetch_index(entries, c);
                    act[na % BURST] = i as u8;
                    na += usize::from(root.shift < KIDS_LEAVES);
                }
            }
            while na > 0 {
                let mut nn = 0;
                for j in 0..na.min(BURST) {
                    let i = act[j] as usize % BURST;
                    let p = pos[i];
                    let e = *entries.get(p as usize).unwrap_or(&EMPTY_LEAF);
                    let c = child(e, &dims[i]);
                    let node = e.is_node();
                    // For a leaf `c` is meaningless: it is neither kept nor loaded, and
                    // prefetching it is harmless (a prefetch never faults).
                    pos[i] = if node { c as u32 } else { p };
                    prefetch_index(entries, c);
                    act[nn % BURST] = i as u8;
                    // Below a node whose children are all leaves, `c` is the leaf.
                    nn += usize::from(node & (e.shift < KIDS_LEAVES));
                }
                na = nn;
            }
            // The leaves' rows, for all keys, before testing any.
            let leaf_of = |i: usize| {
                if root.is_node() {
                    *entries.get(pos[i] as usize).unwrap_or(&EMPTY_LEAF)
                } else {
                    root
                }
            };
            for &i in sel {
                let e = leaf_of(i as usize % BURST);
                if e.base & SMALL_FLAG != 0 {
                    prefetch_index(&self.small, e.off as usize);
                } else {
                    prefetch_index(&self.rows, e.off as usize);
                }
            }
            for &i in sel {
                let i = i as usize % BURST;
                let r = self.check_leaf::<N, R>(leaf_of(i), &dims[i], &rs, km[i], &kc[i]);
                best[i] = best[i].min(r);
            }
        }
        oc[..n].copy_from_slice(&best[..n]);
    }
}

/// CutSplit-style partition: by whether a rule is "small" (span < 2^16, e.g. an IPv4
/// prefix of length ≥ 16) on the source and destination address words where rules vary.
fn partition(rules: &[u32], boxes: &[RBox], rdims: &[u8]) -> Vec<Vec<u32>> {
    let small = |r: u32, d: usize| {
        let (lo, hi) = boxes[r as usize][d];
        hi - lo < (1 << 16)
    };
    // First varying word of each address (dims 0..4 are src, 4..8 dst).
    let pick = |range: std::ops::Range<u8>| rdims.iter().copied().find(|d| range.contains(d));
    let dims: Vec<usize> = [pick(0..4), pick(4..8)]
        .into_iter()
        .flatten()
        .map(usize::from)
        .collect();
    if dims.is_empty() {
        return vec![rules.to_vec()];
    }
    let mut g = vec![Vec::new(); 3];
    for &r in rules {
        let s0 = small(r, dims[0]);
        let s1 = dims.get(1).is_some_and(|&d| small(r, d));
        let gi = if s0 {
            0
        } else if s1 {
            1
        } else {
            2
        };
        g[gi].push(r);
    }
    g
}

impl Classifier for Compiled {
    fn lookup(&self, key: &Key) -> Option<u32> {
        let r = self.lookup_raw(key);
        (r != NONE).then_some(r)
    }

    fn classify(&self, key: &Key) -> Decision {
        let r = self.lookup_raw(key);
        self.decisions
            .get(r as usize)
            .copied()
            .unwrap_or(Decision::NoMatch)
    }

    fn lookup_batch(&self, keys: &[Key], out: &mut [Option<u32>]) {
        let mut buf = [NONE; BURST];
        for (kc, oc) in keys.chunks(BURST).zip(out.chunks_mut(BURST)) {
            self.lookup_burst(kc, &mut buf[..kc.len()]);
            for (o, &r) in oc.iter_mut().zip(&buf) {
                *o = (r != NONE).then_some(r);
            }
        }
    }

    fn classify_batch(&self, keys: &[Key], out: &mut [Decision]) {
        let mut buf = [NONE; BURST];
        for (kc, oc) in keys.chunks(BURST).zip(out.chunks_mut(BURST)) {
            self.lookup_burst(kc, &mut buf[..kc.len()]);
            for (o, &r) in oc.iter_mut().zip(&buf) {
                *o = self
                    .decisions
                    .get(r as usize)
                    .copied()
                    .unwrap_or(Decision::NoMatch);
            }
        }
    }

    fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>()
            + self.roots.len() * std::mem::size_of::<Entry>()
            + self.rows.len() * std::mem::size_of::<[i32; LANES]>()
            + self.small.len() * 4
            + self.exact.capacity() * (std::mem::size_of::<(ExactKey, u32)>() + 1)
            + self.rules.len() * (std::mem::size_of::<Rule>() + 1)
            + self.decisions.len() * std::mem::size_of::<Decision>()
    }
}
