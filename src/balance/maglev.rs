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

/// A built table: slot → backend index (as given to [`Maglev::build`]).
#[derive(Clone, Debug)]
pub struct Maglev {
    table: Vec<u16>,
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
            return Maglev { table };
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
        Maglev { table }
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
