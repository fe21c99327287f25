//! Each server's open flows over all the workers of `flowgate run`, for `max_flows` and
//! `policy: least-flows` ([`ServerFlows`]); each client's open flows, for a service's
//! `conn_limit` ([`ConnCounts`]).
//!
//! Layer: `pipeline`. Every worker keeps its own flows and counts them per server in
//! [`Stats::server_flows`](super::stats::Stats::server_flows), a plain integer it alone
//! writes. [`ServerFlows`] is a board of those gauges with one row per worker: a worker
//! stores its gauge for a server in its row whenever the gauge changes (a relaxed store
//! of a value it computed itself, no read-modify-write, no lock), and a worker placing a
//! new flow reads the sum of the server's column, the server's open flows over all the
//! workers. Nothing of this is on the hit path: gauges change when flows are created,
//! moved and removed, and are read when a new flow of a service with a server that has
//! `max_flows` (or of a `least-flows` service) is placed.
//!
//! The sum is exact but for the flows other workers are placing at the same instant: two
//! workers that both see room for a server's last flow both place it, so a server can
//! hold, for as long as those flows live, up to one flow more than its `max_flows` per
//! worker beyond the first. Row length: every server index a `u16` names, so a reload
//! that adds servers never needs a larger board.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Server indices a row holds: every one a `u16` names.
const SERVERS: usize = 1 << 16;

/// The board: per worker, per server, that worker's open flows to that server.
#[derive(Debug)]
pub struct ServerFlows {
    rows: Box<[Box<[AtomicU32]>]>,
}

impl ServerFlows {
    /// A board for `workers` workers, every gauge 0 (256 KiB a worker).
    pub fn new(workers: usize) -> Arc<ServerFlows> {
        let row = || (0..SERVERS).map(|_| AtomicU32::new(0)).collect();
        Arc::new(ServerFlows {
            rows: (0..workers).map(|_| row()).collect(),
        })
    }

    /// Worker `w`'s row, to write its gauges into; `None` unless `w` has one.
    pub fn row(self: &Arc<Self>, w: usize) -> Option<FlowsRow> {
        (w < self.rows.len()).then(|| FlowsRow {
            board: Arc::clone(self),
            row: w,
        })
    }

    /// Server `s`'s open flows over all the workers.
    pub fn total(&self, s: u16) -> u64 {
        let s = usize::from(s);
        self.rows
            .iter()
            .map(|r| u64::from(r[s].load(Relaxed)))
            .sum()
    }
}

/// One worker's row of a [`ServerFlows`] board.
#[derive(Clone, Debug)]
pub struct FlowsRow {
    board: Arc<ServerFlows>,
    row: usize,
}

impl FlowsRow {
    /// This worker now has `open` flows to server `s`.
    #[inline]
    pub fn set(&self, s: u16, open: u64) {
        let v = u32::try_from(open).unwrap_or(u32::MAX);
        self.board.rows[self.row][usize::from(s)].store(v, Relaxed);
    }

    /// Server `s`'s open flows over all the workers.
    #[inline]
    pub fn total(&self, s: u16) -> u64 {
        self.board.total(s)
    }
}

/// Counters in each of the two rows of a [`ConnCounts`] sketch.
const CONN_ROW: usize = 1 << 20;

/// Each client's open flows of each service with a `conn_limit`, over all the workers:
/// a count-min sketch of two rows of 2^20 counters (8 MiB), each (service, client) pair
/// counting in one counter of each row, chosen by two hashes of it. A count is the
/// smaller of its two counters: never less than the pair's open flows, more only when
/// both counters are shared with other pairs that hold flows (870 of 100,000 clients
/// holding a flow each, `tests::conn_counts_over_count_few_of_100000_busy_clients`).
/// So a client may be refused a little early, never let
/// through over its limit by the sketch.
///
/// A client is its source address cut to [`ConnLimit::V4_PREFIX`] or
/// [`ConnLimit::V6_PREFIX`]; a service is its index, which a reload never changes for a
/// service: a flow counted on creation (marked [`Flow::counted`](crate::flow::Flow::counted))
/// is uncounted under the same pair when it closes or leaves the table, whatever the
/// pipeline says by then, so the counts never drift.
///
/// Shared by the workers of `flowgate run` (one for all, like [`ServerFlows`]): a worker
/// reads the pair's count, and when it is under the limit adds one to both counters
/// (relaxed atomics, on the miss path only). Two workers that both see room for a
/// client's last flow both open it: a client can hold, while those flows live, up to one
/// flow more than its limit per worker beyond the first.
///
/// [`ConnLimit::V4_PREFIX`]: crate::config::ConnLimit::V4_PREFIX
/// [`ConnLimit::V6_PREFIX`]: crate::config::ConnLimit::V6_PREFIX
#[derive(Debug)]
pub struct ConnCounts {
    rows: [Box<[AtomicU32]>; 2],
}

impl ConnCounts {
    /// Every count 0.
    pub fn new() -> Arc<ConnCounts> {
        let row = || (0..CONN_ROW).map(|_| AtomicU32::new(0)).collect();
        Arc::new(ConnCounts {
            rows: [row(), row()],
        })
    }

    /// The counter of (`service`, the client with source address `src`) in each row.
    #[inline]
    fn slots(service: u16, src: &[u8; 16]) -> [usize; 2] {
        use crate::config::ConnLimit;
        let c = crate::balance::source_key(src, ConnLimit::V4_PREFIX, ConnLimit::V6_PREFIX);
        let c = u128::from_be_bytes(c);
        // splitmix64's finalizer over the folded key, twice for two independent picks.
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let h = mix((c as u64) ^ mix((c >> 64) as u64 ^ u64::from(service)));
        let g = mix(h ^ 0x9e37_79b9_7f4a_7c15);
        [h as usize % CONN_ROW, g as usize % CONN_ROW]
    }

    /// The open flows of `service` from the client with source address `src` (at least).
    pub fn count(&self, service: u16, src: &[u8; 16]) -> u32 {
        let [a, b] = Self::slots(service, src);
        self.rows[0][a]
            .load(Relaxed)
            .min(self.rows[1][b].load(Relaxed))
    }

    /// One more open flow of `service` from `src` when it holds fewer than `limit`:
    /// true, and counted; false, and nothing counted.
    pub fn open(&self, service: u16, src: &[u8; 16], limit: u32) -> bool {
        let [a, b] = Self::slots(service, src);
        let (x, y) = (&self.rows[0][a], &self.rows[1][b]);
        if x.load(Relaxed).min(y.load(Relaxed)) >= limit {
            return false;
        }
        x.fetch_add(1, Relaxed);
        y.fetch_add(1, Relaxed);
        true
    }

    /// One open flow of `service` from `src` fewer (one that [`open`](Self::open)
    /// counted). A counter is never taken below 0.
    pub fn close(&self, service: u16, src: &[u8; 16]) {
        let [a, b] = Self::slots(service, src);
        for c in [&self.rows[0][a], &self.rows[1][b]] {
            let r = c.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
            debug_assert!(r.is_ok(), "a flow uncounted that was not counted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::v4_mapped;

    /// A client's count goes up to its limit and no further, down as its flows close;
    /// another client's, another service's and an IPv6 client's /64 are their own;
    /// IPv6 addresses of one /64 are one client.
    #[test]
    fn conn_counts_hold_each_client_to_its_limit() {
        let c = ConnCounts::new();
        let v4 = |x: u8| v4_mapped([198, 51, 100, x]);
        let v6 = |host: u8, net: u8| {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            a[7] = net;
            a[15] = host;
            a
        };
        for _ in 0..3 {
            assert!(c.open(0, &v4(1), 3));
        }
        assert!(!c.open(0, &v4(1), 3), "a fourth");
        assert_eq!(c.count(0, &v4(1)), 3);
        assert!(c.open(0, &v4(2), 3), "another client");
        assert!(c.open(1, &v4(1), 3), "another service");
        c.close(0, &v4(1));
        assert!(c.open(0, &v4(1), 3), "one closed, one more");
        assert!(c.open(0, &v4(1), 4), "a higher limit (a reload) counts on");
        assert_eq!(c.count(0, &v4(1)), 4);
        assert!(c.open(0, &v6(1, 0), 2) && c.open(0, &v6(2, 0), 2));
        assert!(!c.open(0, &v6(3, 0), 2), "the same /64");
        assert!(c.open(0, &v6(1, 1), 2), "the next /64");
        for _ in 0..4 {
            c.close(0, &v4(1));
        }
        assert_eq!(c.count(0, &v4(1)), 0);
        assert_eq!(c.count(0, &v4(2)), 1);
    }

    /// How often the sketch counts a client high: 100,000 clients (consecutive IPv4
    /// addresses, one service), each holding one flow; a client is over-counted when both
    /// its counters are shared with others. The docs' figure comes from here.
    #[test]
    fn conn_counts_over_count_few_of_100000_busy_clients() {
        let c = ConnCounts::new();
        let addr = |i: u32| v4_mapped((0x0a00_0000 + i).to_be_bytes());
        const N: u32 = 100_000;
        for i in 0..N {
            assert!(c.open(3, &addr(i), u32::MAX));
        }
        let high = (0..N).filter(|&i| c.count(3, &addr(i)) > 1).count();
        eprintln!("over-counted: {high} of {N}");
        assert!((0..N).all(|i| c.count(3, &addr(i)) >= 1), "never below");
        assert!(high * 100 < N as usize, "{high} of {N} over-counted");
    }

    #[test]
    fn totals_sum_every_workers_row() {
        let b = ServerFlows::new(3);
        let rows: Vec<FlowsRow> = (0..3).filter_map(|w| b.row(w)).collect();
        assert_eq!(rows.len(), 3);
        assert!(b.row(3).is_none(), "three workers, three rows");
        rows[0].set(7, 4);
        rows[2].set(7, 5);
        rows[1].set(u16::MAX, 1);
        assert_eq!(b.total(7), 9);
        assert_eq!(rows[1].total(7), 9, "any row reads the whole column");
        assert_eq!(b.total(u16::MAX), 1, "the last index a u16 names");
        assert_eq!(b.total(8), 0);
        rows[0].set(7, 0);
        assert_eq!(b.total(7), 5, "a store replaces the worker's gauge");
    }
}
