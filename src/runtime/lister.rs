//! `GET /flows` in `flowgate run`: the management loop asks every worker for the flows
//! a filter accepts, and answers once all have walked their tables.
//!
//! Layer: `runtime` (used by `flowgate run`, feature `dpdk`; itself plain Rust, so its
//! tests run without DPDK). Each worker owns its flow table and nobody else
//! reads it, so the listing is the worker's job, done in bounded steps between bursts
//! ([`LIST_PER_STEP`] slots per poll loop, the way the sweep of advertised flows runs)
//! and into a [`Listing`] the management loop allocated for it: the worker never
//! allocates and takes an uncontended lock once per step, and only while a listing is
//! due. The protocol, over a [`Board`]:
//! 1. the management loop takes a request from the HTTP server's [`Asks`] queue, parses
//!    its query against the tables in use (a bad one is answered 400 at once), gives
//!    every worker's [`Part`] an empty listing marked with the next request number, sets
//!    the filter, and only then publishes that number;
//! 2. a worker that sees a new number copies the filter and walks its table from slot 0,
//!    writing into its part only while the part carries that number (so a worker still
//!    on an older request never writes into a newer one), and marks the part done at the
//!    end;
//! 3. the management loop, once every part is done, merges them (up to the limit) and
//!    answers with [`Listing::to_json`]; after [`WAIT`] without every part done (a worker
//!    stopped), it answers 503.

use crate::cmd::prom::{Answer, Ask, Asks};
use crate::pipeline::Tables;
use crate::pipeline::Worker;
use crate::pipeline::listing::{DEFAULT_LIMIT, FlowFilter, LIST_PER_STEP, Listing};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the management loop waits for the workers' listings.
pub const WAIT: Duration = Duration::from_secs(5);

/// What the management loop and the workers share for listings.
pub struct Board {
    /// The number of the latest request (0: none yet).
    epoch: AtomicU64,
    filter: Mutex<FlowFilter>,
    parts: Vec<Mutex<Part>>,
}

/// One worker's share of a request.
#[derive(Default)]
pub struct Part {
    /// The request `listing` is for.
    epoch: u64,
    listing: Listing,
    done: bool,
}

impl Board {
    pub fn new(workers: usize) -> Board {
        Board {
            epoch: AtomicU64::new(0),
            filter: Mutex::new(FlowFilter::default()),
            parts: (0..workers).map(|_| Mutex::new(Part::default())).collect(),
        }
    }
}

/// A worker's progress through the latest request.
#[derive(Default)]
pub struct WorkerSide {
    seen: u64,
    filter: FlowFilter,
    /// The slot to go on from; `None`: nothing to do.
    at: Option<usize>,
    /// The worker's resizes when the walk began (a resize restarts it).
    resizes: u64,
}

impl WorkerSide {
    /// One bounded step (call once per poll loop): notices a new request, and walks
    /// [`LIST_PER_STEP`] slots of `w`'s table for it.
    #[inline]
    pub fn step(&mut self, board: &Board, idx: usize, w: &Worker, now: u64) {
        let e = board.epoch.load(Ordering::Acquire);
        if e != self.seen {
            self.seen = e;
            self.filter = *board.filter.lock();
            self.at = Some(0);
            self.resizes = w.resizes();
        }
        let Some(mut from) = self.at else {
            return;
        };
        // While flows move into a resized table the walk waits; after a resize it starts
        // again (each flow listed once).
        let Some(same) = w.walk_ok(self.resizes) else {
            return;
        };
        let mut part = board.parts[idx].lock();
        if part.epoch != e {
            // Not ours to write: a newer request is being set up; we will see it.
            self.at = None;
            return;
        }
        if !same {
            part.listing.clear();
            self.resizes = w.resizes();
            from = 0;
        }
        let filter = self.filter;
        self.at = w.list_flows(
            from,
            LIST_PER_STEP,
            now,
            &filter,
            idx as u16,
            &mut part.listing,
        );
        if self.at.is_none() {
            part.done = true;
        }
    }
}

/// The management loop's side: the request in progress.
pub struct Lister {
    asks: Arc<Asks>,
    current: Option<Pending>,
}

/// A request the workers are listing for.
struct Pending {
    ask: Ask,
    epoch: u64,
    limit: usize,
    since: Instant,
}

impl Lister {
    pub fn new(asks: Arc<Asks>) -> Lister {
        Lister {
            asks,
            current: None,
        }
    }

    /// One turn of the management loop: answers the request in progress when every
    /// worker is done with it (or it waited too long), else starts the next one.
    pub fn turn(&mut self, board: &Board, tables: &Mutex<Arc<Tables>>) {
        if let Some(c) = &self.current {
            let done = board.parts.iter().all(|p| {
                let p = p.lock();
                p.epoch == c.epoch && p.done
            });
            if !done && c.since.elapsed() < WAIT {
                return;
            }
            let Pending { ask, limit, .. } = self.current.take().expect("checked above");
            if !done {
                ask.answer(Answer {
                    status: "503 Service Unavailable",
                    ctype: "text/plain",
                    body: "the workers did not list their flows in time\n".into(),
                });
                return;
            }
            let mut all = Listing::with_limit(limit);
            for p in &board.parts {
                // Free each worker's share as it is merged.
                all.absorb(&std::mem::take(&mut p.lock().listing));
            }
            let t = Arc::clone(&tables.lock());
            let body = all.to_json(&t.pipeline).to_string() + "\n";
            ask.answer(Answer {
                status: "200 OK",
                ctype: "application/json",
                body,
            });
        }
        let Some(ask) = self.asks.next() else {
            return;
        };
        let t = Arc::clone(&tables.lock());
        let (filter, limit) = match FlowFilter::parse(&ask.query, &t.pipeline) {
            Ok((f, l)) => (f, l.unwrap_or(DEFAULT_LIMIT)),
            Err(e) => {
                ask.answer(Answer {
                    status: "400 Bad Request",
                    ctype: "text/plain",
                    body: format!("{e}\n"),
                });
                return;
            }
        };
        let epoch = board.epoch.load(Ordering::Relaxed) + 1;
        for p in &board.parts {
            *p.lock() = Part {
                epoch,
                listing: Listing::with_limit(limit),
                done: false,
            };
        }
        *board.filter.lock() = filter;
        board.epoch.store(epoch, Ordering::Release);
        self.current = Some(Pending {
            ask,
            epoch,
            limit,
            since: Instant::now(),
        });
    }
}

/// The answer to requests the run can no longer serve.
fn stopping() -> Answer {
    Answer {
        status: "503 Service Unavailable",
        ctype: "text/plain",
        body: "flowgate is stopping\n".into(),
    }
}

/// When the management loop ends, the request in progress and any later ones are
/// answered at once: the exporter's thread (joined at the end of the run) never waits
/// for a listing that will not come.
impl Drop for Lister {
    fn drop(&mut self) {
        if let Some(c) = self.current.take() {
            c.ask.answer(stopping());
        }
        self.asks.close(stopping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::prom::Exporter;
    use crate::config::Pipeline;
    use crate::r#gen::ack::{Template, handshake};
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicBool;

    fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(c, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut r = String::new();
        c.read_to_string(&mut r).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    /// Two workers on threads of their own, each stepping through its table between
    /// "bursts", the management loop on another, and requests over HTTP: every flow of
    /// both tables is listed once, filters and limits apply across workers, a bad query
    /// is answered 400, and a worker that stops stepping gets the request a 503.
    #[test]
    fn workers_list_their_flows_for_http_requests() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let p = Pipeline::load(&root.join("pipelines/web-farm.yaml")).unwrap();
        let tpl = Template::for_pipeline(&p).unwrap();
        let tables = Arc::new(Tables::build(p, 1));
        let board = Board::new(2);
        let stop = AtomicBool::new(false);
        let pause = AtomicBool::new(false);
        let asks = Arc::new(Asks::default());
        let exporter =
            Exporter::bind("127.0.0.1:0".parse().unwrap(), Some(Arc::clone(&asks))).unwrap();
        let addr = exporter.local_addr();
        let shared_tables = Mutex::new(Arc::clone(&tables));
        std::thread::scope(|s| {
            for idx in 0..2usize {
                let (tables, board, stop, pause) = (&tables, &board, &stop, &pause);
                s.spawn(move || {
                    let mut w = Worker::new(Arc::clone(tables));
                    let mut b = crate::action::FrameBuf::new(128);
                    // Worker 0 has flows 0..1000, worker 1 flows 1000..1500.
                    let ks = if idx == 0 { 0..1000 } else { 1000..1500 };
                    for k in ks {
                        handshake(k, tpl, |f, _| {
                            assert!(b.load(f));
                            let _ = w.process(&mut b, 0, 1);
                        });
                    }
                    let mut side = WorkerSide::default();
                    while !stop.load(Ordering::Relaxed) {
                        if idx == 1 && pause.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        }
                        side.step(board, idx, &w, 1_000_000_001);
                        std::thread::yield_now();
                    }
                });
            }
            let (board, stop, shared_tables, asks) = (&board, &stop, &shared_tables, &asks);
            s.spawn(move || {
                let mut l = Lister::new(Arc::clone(asks));
                while !stop.load(Ordering::Relaxed) {
                    l.turn(board, shared_tables);
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            // Whatever fails below, the threads are told to stop (or the scope never ends).
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = Stop(stop);
            let (status, body) = get(addr, "/flows?limit=2000");
            assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                (j["matched"].as_u64(), j["listed"].as_u64()),
                (Some(1500), Some(1500))
            );
            let flows = j["flows"].as_array().unwrap();
            let mut ports: Vec<(String, u64)> = flows
                .iter()
                .map(|f| {
                    (
                        f["src"].as_str().unwrap().to_owned(),
                        f["worker"].as_u64().unwrap(),
                    )
                })
                .collect();
            ports.sort();
            ports.dedup();
            assert_eq!(ports.len(), 1500, "each flow once");
            assert_eq!(flows.iter().filter(|f| f["worker"] == 1).count(), 500);
            assert!(
                flows
                    .iter()
                    .all(|f| f["state"] == "established" && f["idle_ms"] == 1000)
            );
            // The default limit and a filter, across both workers.
            let (_, body) = get(addr, "/flows?to=web1&limit=10");
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            let web1 = flows.iter().filter(|f| f["to"] == "web1").count() as u64;
            assert!(web1 > 0);
            assert_eq!(
                (j["matched"].as_u64(), j["listed"].as_u64()),
                (Some(web1), Some(10.min(web1)))
            );
            let (status, body) = get(addr, "/flows?to=nobody");
            assert_eq!(status, "HTTP/1.0 400 Bad Request");
            assert!(body.contains("no server named \"nobody\""), "{body}");
            // A worker that stops stepping: the answer is a 503 after WAIT, not a hang.
            pause.store(true, Ordering::Relaxed);
            let t0 = Instant::now();
            let (status, _) = get(addr, "/flows");
            assert_eq!(status, "HTTP/1.0 503 Service Unavailable");
            assert!(t0.elapsed() >= WAIT);
            // ... and once it steps again, the next request is answered in full.
            pause.store(false, Ordering::Relaxed);
            let (status, body) = get(addr, "/flows?service=http&limit=1500");
            assert_eq!(status, "HTTP/1.0 200 OK");
            let j: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(j["matched"].as_u64(), Some(1500));
            // The management loop ends (its Lister dropped): requests are refused at once.
            stop.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
            let t0 = Instant::now();
            let (status, _) = get(addr, "/flows");
            assert_eq!(status, "HTTP/1.0 503 Service Unavailable");
            assert!(t0.elapsed() < Duration::from_secs(2));
        });
        drop(exporter);
    }

    /// A resize while a worker walks its table for a listing: the walk waits while the
    /// flows move into the new table (some ahead of the others, moved by their packets),
    /// then starts again, so every flow is listed once.
    #[test]
    fn a_resize_during_a_listing_lists_each_flow_once() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut p = Pipeline::load(&root.join("pipelines/web-farm.yaml")).unwrap();
        p.flow_table.capacity = 4096;
        let tpl = Template::for_pipeline(&p).unwrap();
        let mut w = Worker::new(Arc::new(Tables::build(p.clone(), 1)));
        let mut b = crate::action::FrameBuf::new(128);
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for k in 0..3000 {
            handshake(k, tpl, |f, rev| {
                assert!(b.load(f));
                let _ = w.process(&mut b, 0, 1);
                if !rev {
                    frames.push(f.to_vec());
                }
            });
        }
        // A request, as the management loop sets it up.
        let board = Board::new(1);
        *board.parts[0].lock() = Part {
            epoch: 1,
            listing: Listing::with_limit(4000),
            done: false,
        };
        board.epoch.store(1, Ordering::Release);
        let mut side = WorkerSide::default();
        side.step(&board, 0, &w, 2);
        assert!(!board.parts[0].lock().done && board.parts[0].lock().listing.matched > 0);
        // A new size: the walk waits while the flows move; the last connections' packets
        // move them first, into the new table's first slots.
        p.flow_table.capacity = 8192;
        w.set_tables(Arc::new(Tables::build(p, 2))).unwrap();
        for f in frames.iter().rev().take(100) {
            assert!(b.load(f));
            let _ = w.process(&mut b, 0, 3);
        }
        let before = board.parts[0].lock().listing.matched;
        side.step(&board, 0, &w, 3);
        assert_eq!(board.parts[0].lock().listing.matched, before, "waits");
        while w.moves_due() {
            w.move_flows(256);
            side.step(&board, 0, &w, 3);
        }
        while !board.parts[0].lock().done {
            side.step(&board, 0, &w, 3);
        }
        let part = board.parts[0].lock();
        let mut keys: Vec<_> = part.listing.records.iter().map(|r| r.key).collect();
        assert_eq!((part.listing.matched, keys.len()), (3000, 3000));
        keys.sort_unstable_by_key(|k| (k.a, k.b, k.pa, k.pb));
        keys.dedup();
        assert_eq!(keys.len(), 3000, "each flow once");
    }
}
