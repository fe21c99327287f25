//! The flow table's memory access pattern alone, in two layouts, on this machine's memory:
//!
//! - `index`: what `flow::LruTable` does. A 2M-entry array of 4-byte buckets (8 MB) names a
//!   64-byte entry in a 1M-entry slab (64 MB); per burst of 32 lookups, each bucket is
//!   prefetched, read 12 lookups later to prefetch its entry, and the entries are read
//!   afterwards (the staging of `Worker::process_burst`).
//! - `inplace`: the entries kept in the index itself, 2M 64-byte slots (128 MB, load 1/2),
//!   the home slot prefetched; 40 % of lookups also read the next slot (linear probing
//!   at load 1/2 displaces about that many entries).
//!
//! Random keys, no other work. Run: `cargo run --release --example layout` (prints ns per
//! lookup for each layout, three rounds).
use prefetch_index::prefetch_index;
use std::hint::black_box;
use std::time::Instant;

const FLOWS: usize = 1 << 20;
const LOOKUPS: usize = 20_000_000;
const LAG: usize = 12;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn main() {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let buckets: Vec<u32> = (0..2 * FLOWS)
        .map(|_| (xorshift(&mut x) as usize % FLOWS) as u32)
        .collect();
    let slab: Vec<[u64; 8]> = (0..FLOWS).map(|i| [i as u64; 8]).collect();
    let inplace: Vec<[u64; 8]> = (0..2 * FLOWS).map(|i| [i as u64; 8]).collect();
    let keys: Vec<u64> = (0..LOOKUPS).map(|_| xorshift(&mut x)).collect();
    let m = 2 * FLOWS - 1;
    for round in 1..=3 {
        let t = Instant::now();
        let mut sum = 0u64;
        for c in keys.chunks(32) {
            let n = c.len();
            for i in 0..n {
                prefetch_index(&buckets, c[i] as usize & m);
                if i >= LAG {
                    prefetch_index(&slab, buckets[c[i - LAG] as usize & m] as usize);
                }
            }
            for &k in &c[n.saturating_sub(LAG)..] {
                prefetch_index(&slab, buckets[k as usize & m] as usize);
            }
            for &k in c {
                sum = sum.wrapping_add(slab[buckets[k as usize & m] as usize][0]);
            }
        }
        let index = t.elapsed().as_secs_f64() * 1e9 / LOOKUPS as f64;
        black_box(sum);
        let t = Instant::now();
        for c in keys.chunks(32) {
            for &k in c {
                prefetch_index(&inplace, k as usize & m);
            }
            for &k in c {
                let a = k as usize & m;
                sum = sum.wrapping_add(inplace[a][0]);
                if (k >> 40) % 10 < 4 {
                    sum = sum.wrapping_add(inplace[(a + 1) & m][0]);
                }
            }
        }
        let inpl = t.elapsed().as_secs_f64() * 1e9 / LOOKUPS as f64;
        black_box(sum);
        println!("round {round}: index {index:.1} ns/lookup, inplace {inpl:.1} ns/lookup");
    }
}
