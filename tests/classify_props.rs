//! Property tests: the compiled classifier (and the updatable one) agree with the
//! reference linear scan on random rule sets with overlaps, ranges, wildcards, IPv6,
//! non-prefix 128-bit ranges and every key field.

use flowgate::classify::compiled::{Compiled, Params};
use flowgate::classify::linear::Linear;
use flowgate::classify::update::Updatable;
use flowgate::classify::{Classifier, Decision, Key, Range, Rule, prefix_range, v4_mapped};
use proptest::prelude::*;

/// Small pools of values so that rules overlap and keys hit rule boundaries.
const ADDRS: [u128; 6] = [
    0xffff_0a00_0000,                          // ::ffff:10.0.0.0
    0xffff_0a01_0200,                          // ::ffff:10.1.2.0
    0xffff_c0a8_0001,                          // ::ffff:192.168.0.1
    0x2001_0db8_0000_0000_0000_0000_0000_0000, // 2001:db8::
    0x2001_0db8_0001_0000_0000_0000_0000_0001, // 2001:db8:1::1
    0xfe80_0000_0000_0000_0000_0000_0000_0000, // fe80::
];
const PORTS: [u16; 7] = [0, 22, 80, 443, 1023, 1024, 65535];

fn addr_range() -> impl Strategy<Value = Range<u128>> {
    prop_oneof![
        3 => Just(Range::new(0, u128::MAX)),
        6 => (0..ADDRS.len(), 0u8..=128).prop_map(|(a, l)| {
            // IPv4 pool entries get IPv4-ish lengths, others any length.
            let l = if ADDRS[a] >> 32 == 0xffff { 96 + l % 33 } else { l };
            prefix_range(ADDRS[a], l)
        }),
        // Arbitrary (non-prefix) 128-bit ranges: exercise the verify path.
        1 => (0..ADDRS.len(), 0u128..1 << 70).prop_map(|(a, d)| {
            Range::new(ADDRS[a].saturating_sub(d), ADDRS[a].saturating_add(d / 3))
        }),
    ]
}

fn port_range() -> impl Strategy<Value = Range<u16>> {
    prop_oneof![
        3 => Just(Range::new(0, u16::MAX)),
        3 => (0..PORTS.len()).prop_map(|i| Range::exact(PORTS[i])),
        2 => (0..PORTS.len(), 0..PORTS.len()).prop_map(|(a, b)| {
            Range::new(PORTS[a].min(PORTS[b]), PORTS[a].max(PORTS[b]))
        }),
        1 => Just(Range::new(1024, u16::MAX)),
    ]
}

fn small<T: Copy + std::fmt::Debug + PartialOrd + 'static>(
    full: Range<T>,
    vals: &'static [T],
) -> impl Strategy<Value = Range<T>> {
    prop_oneof![
        4 => Just(full),
        2 => (0..vals.len()).prop_map(move |i| Range::exact(vals[i])),
        1 => (0..vals.len(), 0..vals.len()).prop_map(move |(a, b)| {
            let (a, b) = (vals[a], vals[b]);
            if a <= b { Range::new(a, b) } else { Range::new(b, a) }
        }),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        (addr_range(), addr_range(), port_range(), port_range()),
        small(Range::new(0u8, 255), &[0, 1, 6, 17, 50]),
        (
            small(Range::new(0u16, u16::MAX), &[0, 1, 2]),
            small(Range::new(0u16, u16::MAX), &[10, 20, 0xffff]),
            small(Range::new(0u8, 255), &[0, 5, 0xff]),
            small(Range::new(0u32, u32::MAX), &[16, 17, u32::MAX]),
        ),
        (
            small(Range::new(0u16, u16::MAX), &[0x0800, 0x86dd]),
            small(Range::new(0u8, 255), &[0, 10, 46]),
            small(Range::new(0u32, u32::MAX), &[0, 0x1000, 0x1001]),
        ),
    )
        .prop_map(
            |((src, dst, sp, dp), proto, (ip, vl, pcp, mpls), (et, dscp, spi))| Rule {
                in_port: ip,
                vlan: vl,
                pcp,
                mpls,
                ethertype: et,
                src,
                dst,
                proto,
                src_port: sp,
                dst_port: dp,
                dscp,
                spi,
                decision: Decision::NoMatch,
            },
        )
}

/// An IPv4 5-tuple rule (ClassBench shape): every other field wildcarded, so the compiled
/// classifier takes its narrow-key path with a compile-time number of range dims.
fn rule_v4() -> impl Strategy<Value = Rule> {
    let v4 = || {
        prop_oneof![
            1 => Just(prefix_range(0xffff_0000_0000, 96)),
            4 => (0..3usize, 0u8..=32).prop_map(|(a, l)| prefix_range(ADDRS[a], 96 + l)),
        ]
    };
    (
        v4(),
        v4(),
        port_range(),
        port_range(),
        small(Range::new(0u8, 255), &[0, 1, 6, 17, 50]),
    )
        .prop_map(|(src, dst, sp, dp, proto)| Rule {
            src,
            dst,
            src_port: sp,
            dst_port: dp,
            proto,
            ..Rule::any(Decision::NoMatch)
        })
}

fn rules_v4() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec(rule_v4(), 0..200).prop_map(|mut v| {
        for (i, r) in v.iter_mut().enumerate() {
            r.decision = Decision::FlowRule(i as u32);
        }
        v
    })
}

fn rules() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec(rule(), 0..120).prop_map(|mut v| {
        for (i, r) in v.iter_mut().enumerate() {
            r.decision = Decision::FlowRule(i as u32);
        }
        v
    })
}

/// A key near rule boundaries: each field from a rule's bounds (±1) or the pools.
fn keys(rules: &[Rule], seeds: &[(u64, u64)]) -> Vec<Key> {
    let pick = |s: u64, lo: u128, hi: u128, pool: &[u128]| -> u128 {
        match s % 5 {
            0 => lo,
            1 => hi,
            2 => lo.wrapping_sub(1),
            3 => hi.wrapping_add(1),
            _ => pool[(s / 5) as usize % pool.len()],
        }
    };
    seeds
        .iter()
        .map(|&(a, b)| {
            let r = rules
                .get((a as usize) % rules.len().max(1))
                .copied()
                .unwrap_or(Rule::any(Decision::NoMatch));
            let f = |i: u32| (b.rotate_left(i * 7) ^ a.rotate_right(i * 3)) & 0xff;
            let p16 = |i: u32, x: Range<u16>| {
                pick(f(i), x.lo.into(), x.hi.into(), &[0, 80, 1024, 65535]) as u16
            };
            let p8 =
                |i: u32, x: Range<u8>| pick(f(i), x.lo.into(), x.hi.into(), &[0, 6, 17, 255]) as u8;
            let p32 = |i: u32, x: Range<u32>| {
                pick(
                    f(i),
                    x.lo.into(),
                    x.hi.into(),
                    &[0, 16, 0x1000, 0xffff_ffff],
                ) as u32
            };
            Key {
                in_port: p16(1, r.in_port),
                vlan: p16(2, r.vlan),
                pcp: p8(3, r.pcp),
                mpls: p32(4, r.mpls),
                ethertype: p16(5, r.ethertype),
                src: pick(f(6), r.src.lo, r.src.hi, &ADDRS),
                dst: pick(f(7), r.dst.lo, r.dst.hi, &ADDRS),
                proto: p8(8, r.proto),
                src_port: p16(9, r.src_port),
                dst_port: p16(10, r.dst_port),
                dscp: p8(11, r.dscp),
                spi: p32(12, r.spi),
            }
        })
        .collect()
}

fn check(engine: &dyn Classifier, lin: &Linear, keys: &[Key]) -> Result<(), TestCaseError> {
    let mut batch = vec![None; keys.len()];
    engine.lookup_batch(keys, &mut batch);
    let mut dec = vec![Decision::NoMatch; keys.len()];
    engine.classify_batch(keys, &mut dec);
    for (i, k) in keys.iter().enumerate() {
        let want = lin.lookup(k);
        prop_assert_eq!(engine.lookup(k), want, "key {:?}", k);
        prop_assert_eq!(batch[i], want, "batch, key {:?}", k);
        prop_assert_eq!(dec[i], lin.classify(k));
        prop_assert_eq!(engine.classify(k), lin.classify(k));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn compiled_matches_linear(rs in rules(), seeds in prop::collection::vec(any::<(u64, u64)>(), 1..300)) {
        let lin = Linear::new(rs.clone());
        let ks = keys(&rs, &seeds);
        check(&Compiled::build(&rs), &lin, &ks)?;
        // Tiny leaves (deep trees), no partition, and an exact table with any count.
        let p = Params { leaf_max: 1, partition: false, exact_min: 1, spfac: 2.0, ..Params::default() };
        check(&Compiled::build_with(&rs, p), &lin, &ks)?;
        let p = Params { leaf_max: 3, max_entries: 64, ..Params::default() };
        check(&Compiled::build_with(&rs, p), &lin, &ks)?;
    }

    #[test]
    fn compiled_v4_matches_linear(rs in rules_v4(), seeds in prop::collection::vec(any::<(u64, u64)>(), 1..300)) {
        let lin = Linear::new(rs.clone());
        let ks = keys(&rs, &seeds);
        check(&Compiled::build(&rs), &lin, &ks)?;
        let p = Params { leaf_max: 1, partition: false, spfac: 2.0, ..Params::default() };
        check(&Compiled::build_with(&rs, p), &lin, &ks)?;
        let p = Params { leaf_max: 32, max_entries: 64, ..Params::default() };
        check(&Compiled::build_with(&rs, p), &lin, &ks)?;
    }

    #[test]
    fn exact_table_matches_linear(n in 1usize..200, seed in any::<u64>()) {
        // Many exact 5-tuple rules (hash table) shadowed by / shadowing range rules.
        let mut rs = Vec::new();
        let mut x = seed | 1;
        for i in 0..n {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            let mut r = Rule::any(Decision::FlowRule(i as u32));
            r.src = Range::exact(v4_mapped([10, 0, 0, (x % 7) as u8]));
            r.dst = Range::exact(v4_mapped([10, 0, 1, (x >> 8) as u8 % 5]));
            r.src_port = Range::exact(1000 + (x >> 16) as u16 % 3);
            r.dst_port = Range::exact(80);
            r.proto = Range::exact(6);
            if x % 9 == 0 {
                r.src_port = Range::new(0, u16::MAX);
            }
            rs.push(r);
        }
        let lin = Linear::new(rs.clone());
        let seeds: Vec<(u64, u64)> = (0..200).map(|i| (i * 7919 + seed, seed.rotate_left(i as u32))).collect();
        let ks = keys(&rs, &seeds);
        let p = Params { exact_min: 1, ..Params::default() };
        check(&Compiled::build_with(&rs, p), &lin, &ks)?;
    }

    #[test]
    fn updatable_matches_linear(
        rs in rules(),
        ops in prop::collection::vec((any::<bool>(), any::<u16>(), rule()), 0..40),
        seeds in prop::collection::vec(any::<(u64, u64)>(), 1..100),
        rebuild_at in any::<u8>(),
    ) {
        let mut u = Updatable::new(&rs);
        // The model: (id, rule) in priority order.
        let mut model: Vec<(u32, Rule)> = rs.iter().copied().enumerate().map(|(i, r)| (i as u32, r)).collect();
        for (step, (ins, pos, r)) in ops.iter().enumerate() {
            if *ins || model.is_empty() {
                let p = *pos as usize % (model.len() + 1);
                let id = u.insert(*r, p).map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.insert(p, (id, *r));
            } else {
                let i = *pos as usize % model.len();
                let (id, _) = model.remove(i);
                u.remove(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(u.remove(id).is_err());
            }
            if step == rebuild_at as usize % 40 {
                u.start_rebuild();
            }
            if step % 7 == 6 {
                u.poll_rebuild();
            }
        }
        let all: Vec<Rule> = model.iter().map(|m| m.1).collect();
        let ks = keys(&all, &seeds);
        let check_all = |u: &Updatable| -> Result<(), TestCaseError> {
            let mut batch = vec![None; ks.len()];
            u.lookup_batch(&ks, &mut batch);
            for (i, k) in ks.iter().enumerate() {
                let want = model.iter().find(|m| m.1.matches(k)).map(|m| m.0);
                prop_assert_eq!(u.lookup(k), want);
                prop_assert_eq!(batch[i], want);
            }
            Ok(())
        };
        check_all(&u)?;
        u.finish_rebuild();
        u.start_rebuild();
        u.finish_rebuild();
        prop_assert_eq!(u.delta_len(), 0);
        check_all(&u)?;
    }
}
