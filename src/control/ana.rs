//! The Assigned Numbers Authority: number pools (NAT port blocks, IPsec SPI ranges,
//! MPLS labels, VIPs from an IPv4 prefix) handed out in fixed-size blocks with leases.
//!
//! Invariants (checked by `tests/control_sim.rs` and the unit tests here):
//! - a block belongs to at most one grant at a time; a grant has exactly one holder;
//! - a repeated request (same holder, pool and request id) returns the same grant,
//!   so retransmitted requests never consume a second block;
//! - a block becomes free only by release, lease expiry or reclaim of its holder, and
//!   is handed out again as late as possible (next-fit), to let stale users notice.
//!
//! Pure logic: time comes in as `now`, persistence is the caller's job.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::proto::status;

/// A pool as declared in `conf/supervisor.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConf {
    pub name: String,
    /// Integer range (inclusive). Either `first`/`last` or `prefix`.
    #[serde(default)]
    pub first: Option<u64>,
    #[serde(default)]
    pub last: Option<u64>,
    /// IPv4 prefix "a.b.c.d/len": hands out the host addresses (as u32 integers).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Numbers per grant.
    #[serde(default = "one")]
    pub block: u32,
    /// Lease given when a request asks for 0, and the most ever given.
    #[serde(default = "default_lease")]
    pub lease_ms: u32,
}

fn one() -> u32 {
    1
}
fn default_lease() -> u32 {
    30_000
}

/// A pool resolved to an integer range.
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    pub first: u64,
    pub last: u64,
    pub block: u32,
    pub lease_ms: u32,
    pub is_prefix: bool,
    nblocks: u64,
    used: BTreeSet<u64>,
    cursor: u64,
}

impl Pool {
    /// Validates a pool declaration.
    pub fn new(c: &PoolConf) -> Result<Pool, String> {
        let (first, last, is_prefix) = match (&c.prefix, c.first, c.last) {
            (Some(p), None, None) => {
                let (a, l) = p
                    .split_once('/')
                    .ok_or_else(|| format!("pool {}: prefix must be a.b.c.d/len", c.name))?;
                let a: Ipv4Addr = a
                    .parse()
                    .map_err(|_| format!("pool {}: bad prefix address", c.name))?;
                let l: u32 = l
                    .parse()
                    .ok()
                    .filter(|l| *l <= 32)
                    .ok_or_else(|| format!("pool {}: bad prefix length", c.name))?;
                let net = u32::from(a) as u64 & (!0u64 << (32 - l)) & 0xFFFF_FFFF;
                let size = 1u64 << (32 - l);
                if size >= 4 {
                    (net + 1, net + size - 2, true)
                } else {
                    (net, net + size - 1, true)
                }
            }
            (None, Some(f), Some(l)) if f <= l => (f, l, false),
            _ => {
                return Err(format!(
                    "pool {}: give either first and last (first <= last) or prefix",
                    c.name
                ));
            }
        };
        if c.block == 0 {
            return Err(format!("pool {}: block must be at least 1", c.name));
        }
        let nblocks = (last - first).saturating_add(1) / c.block as u64;
        if nblocks == 0 {
            return Err(format!("pool {}: range smaller than one block", c.name));
        }
        if c.lease_ms == 0 {
            return Err(format!("pool {}: lease_ms must be > 0", c.name));
        }
        Ok(Pool {
            name: c.name.clone(),
            first,
            last,
            block: c.block,
            lease_ms: c.lease_ms,
            is_prefix,
            nblocks,
            used: BTreeSet::new(),
            cursor: 0,
        })
    }

    fn block_of(&self, first: u64) -> Option<u64> {
        let off = first.checked_sub(self.first)?;
        if off % self.block as u64 != 0 || off / self.block as u64 >= self.nblocks {
            return None;
        }
        Some(off / self.block as u64)
    }

    /// Total and free blocks.
    pub fn usage(&self) -> (u64, u64) {
        (self.nblocks, self.nblocks - self.used.len() as u64)
    }
}

/// One grant.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub id: u64,
    pub pool: String,
    pub holder: u64,
    pub request_id: u64,
    pub first: u64,
    pub count: u32,
    pub lease_ms: u32,
    pub expires: Instant,
    /// Sequence number of the latest request or renewal its holder sent for it (the
    /// highest the supervisor answered OK), or `None` when restored from a record
    /// written before it was kept: a Register with a higher one releases it
    /// ([`Ana::sent_before`]).
    pub seq: Option<u64>,
}

/// All pools and grants.
#[derive(Debug, Default)]
pub struct Ana {
    pub pools: Vec<Pool>,
    pub grants: BTreeMap<u64, Grant>,
    next_id: u64,
}

impl Ana {
    pub fn new(confs: &[PoolConf]) -> Result<Ana, String> {
        let mut pools = Vec::new();
        for c in confs {
            if pools.iter().any(|p: &Pool| p.name == c.name) {
                return Err(format!("pool {} declared twice", c.name));
            }
            pools.push(Pool::new(c)?);
        }
        Ok(Ana {
            pools,
            grants: BTreeMap::new(),
            next_id: 1,
        })
    }

    /// The id the next grant gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Hands out no grant id below `next` (ids of grants gone before a restart).
    pub fn reserve_ids(&mut self, next: u64) {
        self.next_id = self.next_id.max(next);
    }

    fn pool_mut(&mut self, name: &str) -> Option<&mut Pool> {
        self.pools.iter_mut().find(|p| p.name == name)
    }

    /// Grants a block for the request `seq` (or returns the grant already made for
    /// this request, its lease restarted as a renewal's: the holder counts the lease
    /// from sending the copy that is answered, PROTOCOL.md §6.4).
    /// `Ok((grant, new))`; `Err(status)` with UNKNOWN_POOL or POOL_EXHAUSTED.
    pub fn grant(
        &mut self,
        now: Instant,
        holder: u64,
        seq: u64,
        request_id: u64,
        pool: &str,
        lease_ms: u32,
    ) -> Result<(Grant, bool), u8> {
        if let Some(g) = self
            .grants
            .values_mut()
            .find(|g| g.holder == holder && g.request_id == request_id && g.pool == pool)
        {
            g.expires = g
                .expires
                .max(now + Duration::from_millis(g.lease_ms as u64));
            g.seq = Some(g.seq.map_or(seq, |s| s.max(seq)));
            return Ok((g.clone(), false));
        }
        let id = self.next_id;
        let p = self.pool_mut(pool).ok_or(status::UNKNOWN_POOL)?;
        if p.used.len() as u64 >= p.nblocks {
            return Err(status::POOL_EXHAUSTED);
        }
        let mut b = p.cursor % p.nblocks;
        while p.used.contains(&b) {
            b = (b + 1) % p.nblocks;
        }
        p.used.insert(b);
        p.cursor = (b + 1) % p.nblocks;
        let lease = clamp_lease(lease_ms, p.lease_ms);
        let g = Grant {
            id,
            pool: pool.to_string(),
            holder,
            request_id,
            first: p.first + b * p.block as u64,
            count: p.block,
            lease_ms: lease,
            expires: now + Duration::from_millis(lease as u64),
            seq: Some(seq),
        };
        self.next_id += 1;
        self.grants.insert(id, g.clone());
        Ok((g, true))
    }

    /// Re-installs a persisted grant at start-up; its lease restarts at `now`.
    /// Returns false (and ignores it) if the pool is gone or the block is taken.
    pub fn restore(&mut self, now: Instant, mut g: Grant) -> bool {
        self.next_id = self.next_id.max(g.id + 1);
        let Some(p) = self.pool_mut(&g.pool) else {
            return false;
        };
        let Some(b) = p.block_of(g.first) else {
            return false;
        };
        if !p.used.insert(b) {
            return false;
        }
        p.cursor = (b + 1) % p.nblocks;
        g.count = p.block;
        g.expires = now + Duration::from_millis(g.lease_ms as u64);
        self.grants.insert(g.id, g);
        true
    }

    /// Extends a grant's lease. Err(NO_SUCH_GRANT | NOT_HOLDER).
    pub fn renew(
        &mut self,
        now: Instant,
        holder: u64,
        seq: u64,
        id: u64,
        lease_ms: u32,
    ) -> Result<Grant, u8> {
        let max = {
            let g = self.grants.get(&id).ok_or(status::NO_SUCH_GRANT)?;
            if g.holder != holder {
                return Err(status::NOT_HOLDER);
            }
            self.pools
                .iter()
                .find(|p| p.name == g.pool)
                .map(|p| p.lease_ms)
                .unwrap_or(g.lease_ms)
        };
        let g = self.grants.get_mut(&id).ok_or(status::NO_SUCH_GRANT)?;
        g.lease_ms = clamp_lease(lease_ms, max);
        g.expires = now + Duration::from_millis(g.lease_ms as u64);
        g.seq = Some(g.seq.map_or(seq, |s| s.max(seq)));
        Ok(g.clone())
    }

    /// Frees a grant held by `holder`.
    pub fn release(&mut self, holder: u64, id: u64) -> Result<Grant, u8> {
        match self.grants.get(&id) {
            None => return Err(status::NO_SUCH_GRANT),
            Some(g) if g.holder != holder => return Err(status::NOT_HOLDER),
            _ => {}
        }
        self.remove(id).ok_or(status::NO_SUCH_GRANT)
    }

    fn remove(&mut self, id: u64) -> Option<Grant> {
        let g = self.grants.remove(&id)?;
        if let Some(p) = self.pools.iter_mut().find(|p| p.name == g.pool)
            && let Some(b) = p.block_of(g.first)
        {
            p.used.remove(&b);
        }
        Some(g)
    }

    /// The grants of `holder` that a Register it sent as `seq` gives up: those its
    /// latest request or renewal came before (a system registers holding nothing,
    /// PROTOCOL.md §4.1). Not the ones whose sequence number is unknown.
    pub fn sent_before(&self, holder: u64, seq: u64) -> Vec<u64> {
        self.grants
            .values()
            .filter(|g| g.holder == holder && g.seq.is_some_and(|s| s < seq))
            .map(|g| g.id)
            .collect()
    }

    /// Frees every grant of `holder` (it left or died).
    pub fn reclaim_holder(&mut self, holder: u64) -> Vec<Grant> {
        let ids: Vec<u64> = self
            .grants
            .values()
            .filter(|g| g.holder == holder)
            .map(|g| g.id)
            .collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Frees every grant whose lease ran out by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Grant> {
        let ids: Vec<u64> = self
            .grants
            .values()
            .filter(|g| g.expires <= now)
            .map(|g| g.id)
            .collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Earliest lease expiry.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.grants.values().map(|g| g.expires).min()
    }
}

fn clamp_lease(asked: u32, max: u32) -> u32 {
    if asked == 0 { max } else { asked.min(max) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(name: &str, first: u64, last: u64, block: u32) -> PoolConf {
        PoolConf {
            name: name.into(),
            first: Some(first),
            last: Some(last),
            prefix: None,
            block,
            lease_ms: 1000,
        }
    }

    #[test]
    fn blocks_are_disjoint_until_exhausted() {
        let now = Instant::now();
        let mut a = Ana::new(&[conf("p", 1024, 1024 + 4 * 100 - 1, 100)]).unwrap();
        let mut seen = Vec::new();
        for h in 0..4 {
            let (g, new) = a.grant(now, h, 1, 1, "p", 0).unwrap();
            assert!(new);
            assert_eq!(g.count, 100);
            assert!(!seen.contains(&g.first));
            seen.push(g.first);
        }
        seen.sort();
        assert_eq!(seen, vec![1024, 1124, 1224, 1324]);
        assert_eq!(a.grant(now, 9, 1, 1, "p", 0), Err(status::POOL_EXHAUSTED));
        // Idempotent retransmission.
        let (g, new) = a.grant(now, 2, 1, 1, "p", 0).unwrap();
        assert!(!new);
        assert_eq!(g.holder, 2);
        assert_eq!(a.release(3, g.id), Err(status::NOT_HOLDER));
        a.release(2, g.id).unwrap();
        let (g2, _) = a.grant(now, 9, 1, 1, "p", 0).unwrap();
        assert_eq!(g2.first, g.first);
        assert_eq!(a.grant(now, 9, 1, 2, "nope", 0), Err(status::UNKNOWN_POOL));
    }

    #[test]
    fn repeats_and_renewals_restart_the_lease_and_date_the_grant() {
        let t0 = Instant::now();
        let mut a = Ana::new(&[conf("p", 0, 9, 1)]).unwrap();
        let (g, _) = a.grant(t0, 7, 10, 1, "p", 1000).unwrap();
        assert_eq!((g.seq, g.expires), (Some(10), t0 + Duration::from_secs(1)));
        // A retransmitted request (a new sequence number) answered later: its lease
        // runs from then; a copy older still changes nothing.
        let t1 = t0 + Duration::from_millis(300);
        let (r, new) = a.grant(t1, 7, 12, 1, "p", 1000).unwrap();
        assert!(!new);
        assert_eq!(
            (r.id, r.seq, r.expires),
            (g.id, Some(12), t1 + Duration::from_secs(1))
        );
        let (r, _) = a.grant(t0, 7, 11, 1, "p", 1000).unwrap();
        assert_eq!((r.seq, r.expires), (Some(12), t1 + Duration::from_secs(1)));
        // A Register sent before the latest request leaves the grant; one after gives it up.
        assert!(a.sent_before(7, 12).is_empty());
        assert_eq!(a.sent_before(7, 13), vec![g.id]);
        assert!(a.sent_before(8, 13).is_empty(), "another holder's");
        // A renewal dates it too.
        a.renew(t1, 7, 20, g.id, 0).unwrap();
        assert!(a.sent_before(7, 20).is_empty());
        assert_eq!(a.sent_before(7, 21), vec![g.id]);
        // Restored from a record that did not keep it: never given up by a Register.
        let mut b = Ana::new(&[conf("p", 0, 9, 1)]).unwrap();
        assert!(b.restore(t0, Grant { seq: None, ..g }));
        assert!(b.sent_before(7, u64::MAX).is_empty());
    }

    #[test]
    fn expiry_reclaim_and_restore() {
        let now = Instant::now();
        let mut a = Ana::new(&[conf("p", 0, 9, 1)]).unwrap();
        let (g1, _) = a.grant(now, 1, 1, 1, "p", 500).unwrap();
        let (g2, _) = a.grant(now, 2, 1, 1, "p", 5000).unwrap();
        assert_eq!(g2.lease_ms, 1000, "clamped to the pool's max");
        let later = now + Duration::from_millis(600);
        assert_eq!(a.expire(later), vec![g1.clone()]);
        assert_eq!(a.reclaim_holder(2).len(), 1);
        assert!(a.grants.is_empty());
        let mut b = Ana::new(&[conf("p", 0, 9, 1)]).unwrap();
        assert!(b.restore(now, g2.clone()));
        assert!(
            !b.restore(
                now,
                Grant {
                    id: 99,
                    ..g2.clone()
                }
            ),
            "block taken"
        );
        let (g3, _) = b.grant(now, 3, 1, 1, "p", 0).unwrap();
        assert!(g3.id > g2.id && g3.first != g2.first);
    }

    #[test]
    fn prefix_pool_hands_out_host_addresses() {
        let c = PoolConf {
            name: "vips".into(),
            first: None,
            last: None,
            prefix: Some("10.9.0.0/30".into()),
            block: 1,
            lease_ms: 1000,
        };
        let mut a = Ana::new(&[c]).unwrap();
        let now = Instant::now();
        let x = a.grant(now, 1, 1, 1, "vips", 0).unwrap().0.first;
        let y = a.grant(now, 1, 1, 2, "vips", 0).unwrap().0.first;
        assert_eq!(Ipv4Addr::from(x as u32), Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(Ipv4Addr::from(y as u32), Ipv4Addr::new(10, 9, 0, 2));
        assert!(a.grant(now, 1, 1, 3, "vips", 0).is_err());
    }
}
