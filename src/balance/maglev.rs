//! Weighted Maglev lookup tables (Eisenbud et al., NSDI 2016, §3.4).
//!
//! Each backend has a permutation of the `M` table slots (`offset`, `skip` from two hashes
//! of its *name*, so tables agree across machines and restarts). Filling proceeds in rounds;
//! in each round a backend earns its weight in credit and claims one preferred free slot per
//! `max_weight` of credit, so slot counts are proportional to weights. `M` is prime (65537 by
//! default), making every `skip` generate a full permutation. Backends of weight 0 get no
//! slot; removing or re-weighting one backend moves only about its share of slots.

use super::name_hash;

/// "No backend" marker in the table.
pub const NONE: u16 = u16::MAX;

/// Slots [`Maglev::next_taking`] picks by hash before it walks the table.
pub const RETRIES: usize = 16;

/// The next of a sequence of well-mixed hashes (a golden-ratio step, then MurmurHash3's
/// 64-bit finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    z = (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

/// A built table: slot → backend index (as given to [`Maglev::build`]).
#[derive(Clone, Debug)]
pub struct Maglev {
    table: Vec<u16>,
    /// The backends that own at least one slot, ascending.
    present: Vec<u16>,
}

impl Maglev {
    /// Names backend `i` of the table `to[i]` instead (one pass over the table).
    ///
    /// # Panics
    /// If `to` has fewer entries than the table has backends.
    pub fn renumber(&mut self, to: &[u16]) {
        for e in &mut self.table {
            if *e != NONE {
                *e = to[usize::from(*e)];
            }
        }
        for b in &mut self.present {
            *b = to[usize::from(*b)];
        }
        self.present.sort_unstable();
    }

    fn with_table(table: Vec<u16>) -> Maglev {
        let mut present: Vec<u16> = table.iter().copied().filter(|&b| b != NONE).collect();
        present.sort_unstable();
        present.dedup();
        Maglev { table, present }
    }

    /// Builds a table of prime size `m` for backends `(name, weight)`.
    pub fn build(backends: &[(&str, u32)], m: usize) -> Maglev {
        let mut table = vec![NONE; m];
        let live: Vec<(usize, u32)> = backends
            .iter()
            .enumerate()
            .filter(|(_, (_, w))| *w > 0)
            .map(|(i, (_, w))| (i, *w))
            .collect();
        if live.is_empty() || m == 0 {
            return Maglev::with_table(table);
        }
        let max_w = live.iter().map(|&(_, w)| u64::from(w)).max().unwrap_or(1);
        let perm: Vec<(usize, usize)> = live
            .iter()
            .map(|&(i, _)| {
                let name = backends[i].0.as_bytes();
                let offset = (name_hash(name, 0x6f66_6673) % m as u64) as usize;
                let skip = (name_hash(name, 0x736b_6970) % (m as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; live.len()];
        let mut credit = vec![0u64; live.len()];
        let mut filled = 0;
        while filled < m {
            for j in 0..live.len() {
                credit[j] += u64::from(live[j].1);
                while credit[j] >= max_w && filled < m {
                    credit[j] -= max_w;
                    let (offset, skip) = perm[j];
                    loop {
                        let c = (offset + next[j] * skip) % m;
                        next[j] += 1;
                        if table[c] == NONE {
                            table[c] = live[j].0 as u16;
                            filled += 1;
                            break;
                        }
                    }
                }
                if filled == m {
                    break;
                }
            }
        }
        Maglev::with_table(table)
    }

    /// The backend for a flow hash, or `None` when no backend has weight.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<u16> {
        if self.table.is_empty() {
            return None;
        }
        let b = self.table[(hash % self.table.len() as u64) as usize];
        (b != NONE).then_some(b)
    }

    /// A backend `ok` takes, for a flow whose own slot's backend (`lookup(hash)`) cannot
    /// take it: first the backends of up to [`RETRIES`] more slots picked by hashes of
    /// `hash` (so those turned away spread over the others in proportion to their slots,
    /// that is their weights), then every slot in turn after the flow's own, which comes
    /// last. The same hash always finds the same backend while `ok` says the same. `None`
    /// when `ok` takes none of them.
    pub fn next_taking(&self, hash: u64, mut ok: impl FnMut(u16) -> bool) -> Option<u16> {
        let m = self.table.len();
        if m == 0 {
            return None;
        }
        let mut x = hash;
        for _ in 0..RETRIES {
            x = mix(x);
            let b = self.table[(x % m as u64) as usize];
            if b != NONE && ok(b) {
                return Some(b);
            }
        }
        let at = (hash % m as u64) as usize;
        let (before, after) = self.table.split_at(at + 1);
        (after.iter().chain(before))
            .copied()
            .find(|&b| b != NONE && ok(b))
    }

    /// The backends that own at least one slot (those [`lookup`](Self::lookup) can
    /// return), ascending.
    pub fn present(&self) -> &[u16] {
        &self.present
    }

    /// Table size.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True for a zero-size table.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Slots owned by each backend index `0..n`.
    pub fn shares(&self, n: usize) -> Vec<usize> {
        let mut s = vec![0; n];
        for &b in &self.table {
            if (b as usize) < n {
                s[b as usize] += 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights() {
        let m = Maglev::build(&[("a", 100), ("b", 100), ("c", 200)], 65537);
        let s = m.shares(3);
        assert_eq!(s.iter().sum::<usize>(), 65537);
        let ideal = [0.25, 0.25, 0.5];
        for (i, &n) in s.iter().enumerate() {
            let f = n as f64 / 65537.0;
            assert!((f - ideal[i]).abs() < 0.01, "backend {i}: {f}");
        }
    }

    #[test]
    fn zero_weight_gets_nothing_and_all_zero_is_empty() {
        let m = Maglev::build(&[("a", 0), ("b", 5)], 251);
        assert_eq!(m.shares(2), vec![0, 251]);
        let e = Maglev::build(&[("a", 0)], 251);
        assert_eq!(e.lookup(12345), None);
    }

    #[test]
    fn next_taking_spreads_by_weight_and_finds_any_taker() {
        let m = Maglev::build(&[("a", 100), ("b", 100), ("c", 200), ("d", 0)], 65537);
        assert_eq!(m.present(), &[0, 1, 2]);
        // Flows turned away from a: to b and c as 1 to 2 (their weights).
        let mut turned = [0usize; 3];
        for h in 0..65537u64 {
            let first = m.lookup(h).unwrap();
            let b = m.next_taking(h, |b| b != first).unwrap();
            assert_ne!(b, first);
            assert_eq!(
                m.next_taking(h, |b| b != first),
                Some(b),
                "the same every time"
            );
            if first == 0 {
                turned[usize::from(b)] += 1;
            }
        }
        let n = (turned[1] + turned[2]) as f64;
        let c = turned[2] as f64 / n;
        assert!((c - 2.0 / 3.0).abs() < 0.02, "{turned:?}");
        // A taker the hashed slots miss is found by the walk: here only the slots' own
        // backend, found last, or nobody.
        let small = Maglev::build(&[("a", 1), ("b", 1000)], 1009);
        let a_slot = (0..1009u64).find(|&h| small.lookup(h) == Some(0)).unwrap();
        for h in 0..1009u64 {
            let own = small.lookup(h).unwrap();
            assert_eq!(small.next_taking(h, |b| b == own), Some(own));
            assert_eq!(small.next_taking(h, |b| b == 0), Some(0));
            assert_eq!(small.next_taking(h, |_| false), None);
        }
        assert_eq!(small.shares(2)[0], 1, "a owns slot {a_slot} alone");
        let empty = Maglev::build(&[("a", 0)], 7);
        assert!(empty.present().is_empty());
        assert_eq!(empty.next_taking(3, |_| true), None);
    }

    #[test]
    fn present_follows_renumbering() {
        let mut m = Maglev::build(&[("a", 1), ("b", 0), ("c", 1)], 31);
        assert_eq!(m.present(), &[0, 2]);
        m.renumber(&[7, 8, 3]);
        assert_eq!(m.present(), &[3, 7]);
        assert_eq!(m.shares(9)[3] + m.shares(9)[7], 31);
    }

    #[test]
    fn removal_moves_little() {
        let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
        let all: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let mut less = all.clone();
        less[3].1 = 0;
        let a = Maglev::build(&all, 65537);
        let b = Maglev::build(&less, 65537);
        let moved = (0..65537u64)
            .filter(|&h| a.lookup(h) != Some(3) && a.lookup(h) != b.lookup(h))
            .count();
        // Maglev promises minimal disruption, not zero: allow a few percent.
        assert!((moved as f64) < 0.05 * 65537.0, "moved {moved}");
    }
}
