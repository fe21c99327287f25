//! DPDK's `rte_acl` as a [`Classifier`] engine for IPv4 5-tuple rules (ClassBench style).
//!
//! Layer: `port::dpdk`, used by `classify` users through the [`Classifier`] trait.
//!
//! Rules use the field layout of DPDK's `app/test-acl` and `examples/l3fwd`: protocol
//! (1 byte, bitmask) in input group 0, source and destination IPv4 prefixes (4 bytes, mask)
//! in groups 1 and 2, source and destination port ranges (2 × 2 bytes, range) sharing
//! group 3; keys are packed into that layout in network byte order. Rule `i` gets
//! `userdata = i + 1` and the highest priority for the lowest `i`, so the first matching
//! rule wins as in [`crate::classify::linear::Linear`]; one category.
//!
//! What it can express ([`AclClassifier::new`] returns [`DpdkError::UnsupportedRule`]
//! otherwise): `src`/`dst` either the full range or one prefix inside `::ffff:0:0/96`;
//! `proto` full, exact, or an aligned power-of-two block; any port ranges; `ethertype` full
//! or exactly 0x0800; every other field (`in_port`, `vlan`, `pcp`, `mpls`, `dscp`, `spi`)
//! unconstrained. Keys the trie cannot take (an address outside the IPv4-mapped space, or a
//! non-0x0800 ethertype when some rule requires 0x0800) are matched by a linear scan of the
//! rules instead, so results always equal `Linear`'s.
//!
//! The classify algorithm is the best the CPU and EAL allow, tried in the order
//! AVX512X32, AVX512X16, AVX2, SSE, SCALAR; AVX-512 needs `--force-max-simd-bitwidth=512`
//! among the EAL arguments. `rte_acl_classify` is thread-safe on a built context, so the
//! engine is `Send + Sync`; [`Classifier::classify_batch`] works in bursts of up to 256
//! keys on the stack, without allocation.
//!
//! [`Classifier::bytes`] reports the growth of the EAL heap (`rte_malloc` socket stats,
//! `heap_allocsz_bytes`) across create + add + build: the context, its rule copy and the
//! runtime tries (the temporary build memory is freed by then). Another thread allocating
//! from the EAL heap at the same time would skew it.

use std::ffi::CString;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{DpdkError, Eal, check, eal, ffi};
use crate::classify::{Classifier, Decision, Key, Rule};

/// Keys per `rte_acl_classify` call in [`Classifier::classify_batch`].
pub const ACL_BURST: usize = 256;

/// `RTE_ACL_MAX_PRIORITY`.
const MAX_PRIORITY: usize = 0x1fff_ffff;
const ETH_IPV4: u16 = 0x0800;
const V4_MAPPED_HI: u128 = 0xffff;

static CTX_SEQ: AtomicU64 = AtomicU64::new(0);

/// An `rte_acl` classify implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclAlg {
    Avx512x32,
    Avx512x16,
    Avx2,
    Sse,
    Scalar,
}

impl AclAlg {
    /// Fastest first.
    pub const PREFERENCE: [AclAlg; 5] = [
        AclAlg::Avx512x32,
        AclAlg::Avx512x16,
        AclAlg::Avx2,
        AclAlg::Sse,
        AclAlg::Scalar,
    ];

    fn raw(self) -> i32 {
        match self {
            AclAlg::Avx512x32 => ffi::ACL_AVX512X32,
            AclAlg::Avx512x16 => ffi::ACL_AVX512X16,
            AclAlg::Avx2 => ffi::ACL_AVX2,
            AclAlg::Sse => ffi::ACL_SSE,
            AclAlg::Scalar => ffi::ACL_SCALAR,
        }
    }
}

/// A built `rte_acl` context over a rule list.
#[derive(Debug)]
pub struct AclClassifier<'e> {
    /// `None` for an empty rule list (rte_acl refuses to build zero rules).
    ctx: Option<NonNull<ffi::RteAclCtx>>,
    rules: Vec<Rule>,
    /// Some rule requires ethertype 0x0800.
    ether_check: bool,
    alg: Option<AclAlg>,
    bytes: usize,
    _eal: PhantomData<&'e Eal>,
}

// SAFETY: the context is immutable after rte_acl_build; rte_acl_classify only reads it and
// is documented MT-safe; it is freed only in Drop (exclusive).
unsafe impl Send for AclClassifier<'_> {}
// SAFETY: as above.
unsafe impl Sync for AclClassifier<'_> {}

fn unsupported(index: usize, reason: impl Into<String>) -> DpdkError {
    DpdkError::UnsupportedRule {
        index,
        reason: reason.into(),
    }
}

/// `r` as a 32-bit IPv4 value and prefix length, if it is the full range or a prefix in
/// the IPv4-mapped space.
fn v4_prefix(lo: u128, hi: u128) -> Option<(u32, u8)> {
    if lo == 0 && hi == u128::MAX {
        return Some((0, 0));
    }
    if lo >> 32 != V4_MAPPED_HI || hi >> 32 != V4_MAPPED_HI || lo > hi {
        return None;
    }
    let (lo, hi) = (lo as u32, hi as u32);
    let span = hi.wrapping_sub(lo).wrapping_add(1); // 0 means 2^32
    if span == 0 {
        return Some((0, 0));
    }
    if !span.is_power_of_two() || lo & (span - 1) != 0 {
        return None;
    }
    Some((lo, (32 - span.trailing_zeros()) as u8))
}

fn convert(index: usize, r: &Rule, n: usize) -> Result<(ffi::FgAclRule, bool), DpdkError> {
    if (r.in_port.lo, r.in_port.hi) != (u16::MIN, u16::MAX) {
        return Err(unsupported(index, "in_port is constrained"));
    }
    if (r.vlan.lo, r.vlan.hi) != (u16::MIN, u16::MAX) {
        return Err(unsupported(index, "vlan is constrained"));
    }
    if (r.pcp.lo, r.pcp.hi) != (u8::MIN, u8::MAX) {
        return Err(unsupported(index, "pcp is constrained"));
    }
    if (r.mpls.lo, r.mpls.hi) != (u32::MIN, u32::MAX) {
        return Err(unsupported(index, "mpls is constrained"));
    }
    if (r.dscp.lo, r.dscp.hi) != (u8::MIN, u8::MAX) {
        return Err(unsupported(index, "dscp is constrained"));
    }
    if (r.spi.lo, r.spi.hi) != (u32::MIN, u32::MAX) {
        return Err(unsupported(index, "spi is constrained"));
    }
    let ether_check = match (r.ethertype.lo, r.ethertype.hi) {
        (u16::MIN, u16::MAX) => false,
        (ETH_IPV4, ETH_IPV4) => true,
        _ => {
            return Err(unsupported(
                index,
                "ethertype is neither any nor exactly 0x0800",
            ));
        }
    };
    let (src, src_len) = v4_prefix(r.src.lo, r.src.hi)
        .ok_or_else(|| unsupported(index, "src is not an IPv4 prefix"))?;
    let (dst, dst_len) = v4_prefix(r.dst.lo, r.dst.hi)
        .ok_or_else(|| unsupported(index, "dst is not an IPv4 prefix"))?;
    let (plo, phi) = (r.proto.lo, r.proto.hi);
    let span = u16::from(phi.wrapping_sub(plo)) + 1;
    if plo > phi || !span.is_power_of_two() || u16::from(plo) & (span - 1) != 0 {
        return Err(unsupported(index, "proto is not a value/mask block"));
    }
    let proto_mask = !((span - 1) as u8);
    Ok((
        ffi::FgAclRule {
            proto: plo,
            proto_mask,
            src_len,
            dst_len,
            src,
            dst,
            sport_lo: r.src_port.lo,
            sport_hi: r.src_port.hi,
            dport_lo: r.dst_port.lo,
            dport_hi: r.dst_port.hi,
            priority: (n - index) as i32,
            userdata: (index + 1) as u32,
        },
        ether_check,
    ))
}

impl<'e> AclClassifier<'e> {
    /// Builds a context over `rules` (index 0 has the highest priority) with the fastest
    /// available algorithm.
    ///
    /// # Errors
    /// [`DpdkError::UnsupportedRule`] for a rule it cannot express, [`DpdkError::Call`] when
    /// rte_acl fails (memory, build).
    pub fn new(eal: &'e Eal, rules: &[Rule]) -> Result<Self, DpdkError> {
        Self::with_algs(eal, rules, &AclAlg::PREFERENCE)
    }

    /// As [`AclClassifier::new`], trying only `algs`, in order.
    pub fn with_algs(eal: &'e Eal, rules: &[Rule], algs: &[AclAlg]) -> Result<Self, DpdkError> {
        let n = rules.len();
        if n > MAX_PRIORITY - 1 {
            return Err(DpdkError::InvalidArg(format!(
                "{n} rules: rte_acl takes at most {}",
                MAX_PRIORITY - 1
            )));
        }
        let mut raw = Vec::with_capacity(n);
        let mut ether_check = false;
        for (i, r) in rules.iter().enumerate() {
            let (a, e) = convert(i, r, n)?;
            ether_check |= e;
            raw.push(a);
        }
        let mut me = AclClassifier {
            ctx: None,
            rules: rules.to_vec(),
            ether_check,
            alg: None,
            bytes: 0,
            _eal: PhantomData,
        };
        if n == 0 {
            return Ok(me);
        }
        let socket = i32::try_from(eal.socket_id()).unwrap_or(ffi::SOCKET_ID_ANY);
        let heap_socket = socket.max(0);
        let name = format!("fgacl{}", CTX_SEQ.fetch_add(1, Ordering::Relaxed));
        let cname = CString::new(name).map_err(|_| DpdkError::InvalidArg("acl name".into()))?;
        // SAFETY: reads EAL heap statistics.
        let before = unsafe { ffi::fg_heap_alloc_bytes(heap_socket) };
        // SAFETY: EAL initialised; cname is a unique, NUL-terminated name (copied by DPDK).
        let ctx = unsafe { ffi::fg_acl_create(cname.as_ptr(), socket, n as u32) };
        let ctx = NonNull::new(ctx).ok_or_else(|| DpdkError::Call {
            what: "rte_acl_create",
            code: 0,
            msg: eal::last_error_string(),
        })?;
        me.ctx = Some(ctx); // freed by Drop from here on
        // SAFETY: ctx is live and not shared yet; raw holds n rules; build is single-threaded.
        unsafe {
            check(
                "rte_acl_add_rules",
                ffi::fg_acl_add(ctx.as_ptr(), raw.as_ptr(), n as u32),
            )?;
            check("rte_acl_build", ffi::fg_acl_build(ctx.as_ptr(), 0))?;
        }
        // SAFETY: reads EAL heap statistics.
        let after = unsafe { ffi::fg_heap_alloc_bytes(heap_socket) };
        me.bytes = after.saturating_sub(before);
        for &alg in algs {
            // SAFETY: ctx is live and built; the call only selects a function pointer, or
            // refuses an algorithm the CPU/EAL cannot run.
            if unsafe { ffi::fg_acl_set_alg(ctx.as_ptr(), alg.raw()) } == 0 {
                me.alg = Some(alg);
                break;
            }
        }
        if me.alg.is_none() {
            return Err(DpdkError::InvalidArg(format!(
                "none of the classify algorithms {algs:?} is available"
            )));
        }
        Ok(me)
    }

    /// The classify algorithm in use (`None` for an empty rule list).
    pub fn alg(&self) -> Option<AclAlg> {
        self.alg
    }

    /// The rules, in priority order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Packs `k` in the trie's layout, or `None` when the trie cannot decide it.
    #[inline]
    fn pack(&self, k: &Key) -> Option<ffi::FgAclKey> {
        if k.src >> 32 != V4_MAPPED_HI
            || k.dst >> 32 != V4_MAPPED_HI
            || (self.ether_check && k.ethertype != ETH_IPV4)
        {
            return None;
        }
        Some(ffi::FgAclKey {
            proto: k.proto,
            pad: [0; 3],
            src: (k.src as u32).to_be(),
            dst: (k.dst as u32).to_be(),
            sport: k.src_port.to_be(),
            dport: k.dst_port.to_be(),
        })
    }

    #[inline]
    fn linear(&self, k: &Key) -> Option<u32> {
        self.rules
            .iter()
            .position(|r| r.matches(k))
            .map(|i| i as u32)
    }

    /// Rule indices for up to [`ACL_BURST`] keys.
    fn lookup_chunk(&self, keys: &[Key], out: &mut [Option<u32>; ACL_BURST]) {
        let n = keys.len().min(ACL_BURST);
        let Some(ctx) = self.ctx else {
            // No rules: nothing matches.
            out[..n].fill(None);
            return;
        };
        let mut packed = [ffi::FgAclKey::default(); ACL_BURST];
        let mut fallback = [false; ACL_BURST];
        for i in 0..n {
            match self.pack(&keys[i]) {
                Some(p) => packed[i] = p,
                None => fallback[i] = true,
            }
        }
        let mut ptrs = [std::ptr::null::<u8>(); ACL_BURST];
        for i in 0..n {
            ptrs[i] = (&raw const packed[i]).cast::<u8>();
        }
        let mut results = [0u32; ACL_BURST];
        // SAFETY: ctx is built; ptrs[..n] point at n packed keys of the layout the context
        // was built for (fields within 16 bytes), alive for the call; results has n slots;
        // one category.
        let rc = unsafe {
            ffi::rte_acl_classify(
                ctx.as_ptr(),
                ptrs.as_ptr(),
                results.as_mut_ptr(),
                n as u32,
                1,
            )
        };
        for i in 0..n {
            out[i] = if fallback[i] || rc != 0 {
                self.linear(&keys[i])
            } else {
                results[i].checked_sub(1) // userdata = index + 1; 0 = no match
            };
        }
    }
}

impl Classifier for AclClassifier<'_> {
    fn lookup(&self, key: &Key) -> Option<u32> {
        let ctx = self.ctx?;
        let Some(packed) = self.pack(key) else {
            return self.linear(key);
        };
        let ptr = (&raw const packed).cast::<u8>();
        let mut result = 0u32;
        // SAFETY: as in `lookup_chunk`, for one key.
        let rc = unsafe { ffi::rte_acl_classify(ctx.as_ptr(), &ptr, &mut result, 1, 1) };
        if rc != 0 {
            self.linear(key)
        } else {
            result.checked_sub(1)
        }
    }

    fn classify(&self, key: &Key) -> Decision {
        self.lookup(key)
            .and_then(|i| self.rules.get(i as usize))
            .map_or(Decision::NoMatch, |r| r.decision)
    }

    fn classify_batch(&self, keys: &[Key], out: &mut [Decision]) {
        let mut idx = [None; ACL_BURST];
        for (kc, oc) in keys.chunks(ACL_BURST).zip(out.chunks_mut(ACL_BURST)) {
            self.lookup_chunk(kc, &mut idx);
            for (o, i) in oc.iter_mut().zip(idx.iter()) {
                *o = i
                    .and_then(|i| self.rules.get(i as usize))
                    .map_or(Decision::NoMatch, |r| r.decision);
            }
        }
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    fn burst(&self) -> usize {
        ACL_BURST
    }
}

impl AclClassifier<'_> {
    /// Rule indices for a burst (`out[i]` = first matching rule of `keys[i]`), without
    /// allocation.
    pub fn lookup_batch(&self, keys: &[Key], out: &mut [Option<u32>]) {
        let mut idx = [None; ACL_BURST];
        for (kc, oc) in keys.chunks(ACL_BURST).zip(out.chunks_mut(ACL_BURST)) {
            self.lookup_chunk(kc, &mut idx);
            let m = oc.len().min(kc.len());
            oc[..m].copy_from_slice(&idx[..m]);
        }
    }
}

impl Drop for AclClassifier<'_> {
    fn drop(&mut self) {
        if let Some(ctx) = self.ctx.take() {
            // SAFETY: we own the context; `&mut self` means no classify is running on it.
            unsafe { ffi::rte_acl_free(ctx.as_ptr()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Range, prefix_range, v4_mapped};

    #[test]
    fn prefixes_convert() {
        let r = prefix_range(v4_mapped([10, 1, 0, 0]), 96 + 16);
        assert_eq!(v4_prefix(r.lo, r.hi), Some((0x0a01_0000, 16)));
        let r = prefix_range(v4_mapped([1, 2, 3, 4]), 128);
        assert_eq!(v4_prefix(r.lo, r.hi), Some((0x0102_0304, 32)));
        assert_eq!(v4_prefix(0, u128::MAX), Some((0, 0)));
        let r = prefix_range(v4_mapped([0, 0, 0, 0]), 96);
        assert_eq!(v4_prefix(r.lo, r.hi), Some((0, 0)));
        // not a prefix
        assert_eq!(
            v4_prefix(v4_mapped([10, 0, 0, 1]), v4_mapped([10, 0, 0, 2])),
            None
        );
        // IPv6
        let r = prefix_range(0x2001_0db8 << 96, 32);
        assert_eq!(v4_prefix(r.lo, r.hi), None);
    }

    #[test]
    fn rules_convert_or_refuse() {
        let mut r = Rule::any(Decision::FlowRule(0));
        r.proto = Range::exact(6);
        r.dst_port = Range::new(1000, 2000);
        let (a, e) = convert(0, &r, 3).expect("expressible");
        assert_eq!(
            (
                a.proto,
                a.proto_mask,
                a.dport_lo,
                a.dport_hi,
                a.priority,
                a.userdata,
                e
            ),
            (6, 0xff, 1000, 2000, 3, 1, false)
        );
        let (a, _) = convert(2, &Rule::any(Decision::NoMatch), 3).expect("wildcard");
        assert_eq!(
            (a.proto_mask, a.src_len, a.priority, a.userdata),
            (0, 0, 1, 3)
        );
        r.proto = Range::new(6, 17);
        assert!(matches!(
            convert(0, &r, 1),
            Err(DpdkError::UnsupportedRule { .. })
        ));
        let mut v = Rule::any(Decision::NoMatch);
        v.vlan = Range::exact(10);
        assert!(convert(0, &v, 1).is_err());
        let mut v6 = Rule::any(Decision::NoMatch);
        v6.dst = prefix_range(0x2001_0db8 << 96, 32);
        assert!(convert(0, &v6, 1).is_err());
    }
}
