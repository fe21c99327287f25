//! Server choice: deterministic flow hashing and weighted Maglev tables.
//!
//! Layer: `balance`. Hashes here use fixed constants (no per-process seed) on purpose:
//! every intermediate system that hears the same advertisements builds the same tables
//! and maps a flow to the same server, so a flow that moves between intermediate systems
//! behind ECMP keeps its end system (the approach of Maglev and Katran).

pub mod maglev;

use crate::pipeline::meta::Tuple;

#[inline]
fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Deterministic hash of a directional 5-tuple.
#[inline]
pub fn tuple_hash(t: &Tuple) -> u64 {
    let w = |b: &[u8; 16], i: usize| {
        u64::from_le_bytes([
            b[i],
            b[i + 1],
            b[i + 2],
            b[i + 3],
            b[i + 4],
            b[i + 5],
            b[i + 6],
            b[i + 7],
        ])
    };
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for v in [w(&t.src, 0), w(&t.src, 8), w(&t.dst, 0), w(&t.dst, 8)] {
        h = mix(h ^ v);
    }
    mix(h ^ (u64::from(t.src_port) << 24 | u64::from(t.dst_port) << 8 | u64::from(t.proto)))
}

/// Deterministic hash of a source address cut to a prefix: `v4_prefix` bits of an
/// IPv4-mapped address's IPv4 part, `v6_prefix` bits of any other (the
/// [`Affinity::Source`](crate::config::Affinity::Source) placement). Two addresses in
/// one prefix hash alike; the hash also covers the prefix length, so a /24 and a /32
/// that share their bits still place apart.
#[inline]
pub fn source_hash(a: &[u8; 16], v4_prefix: u8, v6_prefix: u8) -> u64 {
    let (keep, masked) = source_prefix(a, v4_prefix, v6_prefix);
    let h = mix(0x5eed_a1f1_u64 ^ u64::from(keep) ^ (masked >> 64) as u64);
    mix(h ^ masked as u64)
}

/// The client network of address `a` (IPv4-mapped or IPv6): `a` cut to `v4_prefix` or
/// `v6_prefix` bits, the rest zero (an IPv4 client's keeps its mapping, so it never
/// equals an IPv6 one's).
pub fn source_key(a: &[u8; 16], v4_prefix: u8, v6_prefix: u8) -> [u8; 16] {
    source_prefix(a, v4_prefix, v6_prefix).1.to_be_bytes()
}

/// The bits of `a` kept (counted over the whole 128-bit, mapped, address) and `a` with
/// the rest zeroed.
fn source_prefix(a: &[u8; 16], v4_prefix: u8, v6_prefix: u8) -> (u32, u128) {
    let mapped = a[..10].iter().all(|&b| b == 0) && a[10] == 0xff && a[11] == 0xff;
    let keep = if mapped {
        96 + u32::from(v4_prefix.min(32))
    } else {
        u32::from(v6_prefix.min(128))
    };
    let v = u128::from_be_bytes(*a);
    (
        keep,
        v.checked_shr(128 - keep).map_or(0, |x| x << (128 - keep)),
    )
}

/// Deterministic 64-bit hash of a byte string (FNV-1a, then mixed), for server names.
pub fn name_hash(s: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in s {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::v4_mapped;

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().expect("v6").octets()
    }

    #[test]
    fn source_hash_keeps_the_prefix_only() {
        let a = v4_mapped([198, 51, 100, 7]);
        let b = v4_mapped([198, 51, 100, 200]);
        let c = v4_mapped([198, 51, 101, 7]);
        // /32: every address apart.
        assert_ne!(source_hash(&a, 32, 64), source_hash(&b, 32, 64));
        // /24: one network together, the next apart.
        assert_eq!(source_hash(&a, 24, 64), source_hash(&b, 24, 64));
        assert_ne!(source_hash(&a, 24, 64), source_hash(&c, 24, 64));
        // /23 covers 198.51.100.0-198.51.101.255.
        assert_eq!(source_hash(&a, 23, 64), source_hash(&c, 23, 64));
        // The IPv6 prefix does not touch IPv4 clients, nor the IPv4 one IPv6 clients.
        assert_eq!(source_hash(&a, 32, 64), source_hash(&a, 32, 128));
        let x = v6("2001:db8:1:2::10");
        let y = v6("2001:db8:1:2:abcd::99");
        let z = v6("2001:db8:1:3::10");
        assert_eq!(source_hash(&x, 32, 64), source_hash(&y, 24, 64));
        assert_ne!(source_hash(&x, 32, 64), source_hash(&z, 32, 64));
        assert_ne!(source_hash(&x, 32, 128), source_hash(&y, 32, 128));
        assert_eq!(source_hash(&x, 32, 48), source_hash(&z, 32, 48));
        // The prefix length is part of the hash; the whole address at /128.
        assert_ne!(source_hash(&x, 32, 64), source_hash(&x, 32, 48));
        assert_ne!(source_hash(&x, 32, 128), source_hash(&y, 32, 128));
    }

    #[test]
    fn source_key_is_the_client_network() {
        let a = source_key(&v4_mapped([198, 51, 100, 7]), 24, 64);
        assert_eq!(a, v4_mapped([198, 51, 100, 0]));
        assert_eq!(
            source_key(&v4_mapped([198, 51, 100, 7]), 32, 64),
            v4_mapped([198, 51, 100, 7])
        );
        let x = source_key(&v6("2001:db8:1:2:abcd::99"), 32, 64);
        assert_eq!(x, v6("2001:db8:1:2::"));
        assert_eq!(
            source_key(&v6("2001:db8:1:2::10"), 32, 48),
            v6("2001:db8:1::")
        );
        // An IPv4 client's network keeps its mapping: never an IPv6 one's.
        assert_eq!(
            source_key(&v4_mapped([10, 0, 0, 1]), 8, 64),
            v4_mapped([10, 0, 0, 0])
        );
    }

    #[test]
    fn source_hash_spreads_clients() {
        // 4096 clients of one /20 at /32 over 64 buckets: none empty, none over twice
        // its share.
        let mut n = [0u32; 64];
        for i in 0..4096u32 {
            let [_, _, c, d] = i.to_be_bytes();
            let h = source_hash(&v4_mapped([10, 16, c, d]), 32, 64);
            n[(h % 64) as usize] += 1;
        }
        assert!(n.iter().all(|&k| k > 0 && k < 128), "{n:?}");
    }
}
