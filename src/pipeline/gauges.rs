//! Each server's open flows over all the workers of `flowgate run`, for `max_flows` and
//! `policy: least-flows`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
