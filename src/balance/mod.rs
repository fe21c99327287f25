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

/// Deterministic 64-bit hash of a byte string (FNV-1a, then mixed), for server names.
pub fn name_hash(s: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in s {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}
