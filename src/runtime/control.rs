//! The control plane inside `flowgate run`: the management core's listener.
//!
//! Layer: `runtime`, above `control` and `config`. Builds and is tested without DPDK
//! (`tests/control_run.rs` runs it against a real supervisor and agents). With a
//! `control:` section in the run conf, the management core registers with the
//! supervisor as an intermediate system, hears the end systems' advertisements (relayed
//! by the supervisor), and after every turn of its loop compares what they say about
//! the pipeline's servers and which flows they advertise with what the published tables
//! say ([`crate::control::overlay`]); when that changed, it logs each change and
//! publishes new tables, which the workers take between two bursts. The pipeline file stays the
//! base: SIGHUP reloads it and the control plane's view is applied again on top.
//!
//! Fail static: in relay mode every advertisement comes through the supervisor, so an
//! end system that falls silent may just be a supervisor that did. So when a system of
//! the published view, or one of its advertised flows (the supervisor repeats them twice
//! an interval, and the listener drops those it stops hearing of), vanishes from the
//! listener, nothing changes until the supervisor
//! answers a keepalive sent after that moment (within an advertisement interval when it
//! is up). If it does not answer for a dead interval, the last view is held (the log says
//! so, the stats JSON counts it) and, once it answers again, held one dead interval more
//! for the agents' adverts to come back before the agents are followed again. So neither a
//! supervisor crash nor a broken path to it takes servers out of the tables
//! (`tests/control_run.rs` kills and restarts one, and cuts a relay between the two).
//!
//! Guarantees: the control plane runs on the management core only, and a turn reports a
//! socket error and goes on, so neither a missing supervisor nor a dead agent stops the
//! data plane (both tested; datagrams go through the same authenticated decoding the
//! fuzzed supervisor uses). Only shape-preserving changes are published (states, loads,
//! weights, the reserved rule slots of advertised flows), so no worker refuses the
//! tables and a publication drops no flow from a flow table.

use super::conf::ControlConf;
use crate::config::{Pipeline, ServerState};
use crate::control::driver::Driver;
use crate::control::listener::{Listener, ListenerConfig, TableEvent};
use crate::control::overlay::{self, Overlay, View};
use crate::control::proto::{SeqGen, cap};
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

/// Shortest time between two publications: changes that come closer together (agents'
/// loads, a burst of adverts) are published together, so the management core never
/// rebuilds tables more than ten times a second however many agents advertise.
pub const MIN_PUBLISH: Duration = Duration::from_millis(100);

/// The management core's control-plane state.
pub struct ControlRt {
    driver: Driver,
    listener: Listener,
    overlay: Overlay,
    /// The pipeline file's, with the advertised-flow slots reserved (as many as
    /// `view.flows.slots` has).
    base: Pipeline,
    view: View,
    /// Tables published because the control plane's view changed.
    pub published: u64,
    /// A change not yet published (publications are at least [`MIN_PUBLISH`] apart).
    dirty: bool,
    /// When a system of the published view was first seen missing from the listener
    /// (the supervisor must answer after that before anything is published).
    vanished_at: Option<Instant>,
    /// The view is held (supervisor silent for a dead interval), and since when the
    /// supervisor answers again.
    holding: bool,
    answering_since: Option<Instant>,
    /// Times the view was held because the supervisor went silent.
    pub holds: u64,
    last_publish: Option<Instant>,
}

impl ControlRt {
    /// Loads the key, binds the socket and starts registering; `base` is the pipeline
    /// as loaded (its system MAC and addresses are what it registers with). The tables
    /// to publish come from [`effective`](Self::effective): `base` plus `c.flow_slots`
    /// pattern rules reserved for advertised flows.
    pub fn start(c: &ControlConf, base: Pipeline) -> Result<ControlRt> {
        let key = crate::control::cli::load_key(&c.key_file).context("control: key_file")?;
        let mut driver = Driver::bind(c.listen)
            .with_context(|| format!("control: binding the UDP socket on {}", c.listen))?;
        if let Some(g) = c.multicast_group {
            driver
                .join_group(g)
                .with_context(|| format!("control: joining the multicast group {g}"))?;
        }
        let cfg = ListenerConfig {
            name: c.name.clone(),
            mac: base.mac,
            addrs: base.addresses.clone(),
            capabilities: cap::SERVICES | cap::FLOWS,
            supervisor: c.supervisor,
            advert_interval: Duration::from_millis(c.advert_interval_ms),
            dead_interval: Duration::from_millis(c.dead_interval_ms),
            pools: Vec::new(),
        };
        let listener = Listener::new(cfg, key, SeqGen::from_wall_clock(), Instant::now());
        // Rule indices travel as u16 on the packet path (u16::MAX means none).
        if base.flow_rules.len() + c.flow_slots >= usize::from(u16::MAX) {
            anyhow::bail!(
                "control: {} pattern rules plus {} flow_slots exceed 65534",
                base.flow_rules.len(),
                c.flow_slots
            );
        }
        let mut base = base;
        overlay::reserve_flow_slots(&mut base, c.flow_slots);
        let mut overlay = Overlay::new(base.servers.len(), c.unheard, c.flow_slots);
        let view = overlay.view(&base, std::iter::empty(), std::iter::empty());
        Ok(ControlRt {
            driver,
            listener,
            overlay,
            base,
            view,
            published: 0,
            dirty: false,
            vanished_at: None,
            holding: false,
            answering_since: None,
            holds: 0,
            last_publish: None,
        })
    }

    /// Whether the supervisor has acknowledged the registration.
    pub fn registered(&self) -> bool {
        self.listener.is_registered()
    }

    /// The pipeline to publish: the base with the control plane's current view.
    pub fn effective(&self) -> Pipeline {
        overlay::apply(&self.base, &self.view)
    }

    /// `p` (a pipeline file as loaded) with the advertised-flow slots reserved: the shape
    /// of what this control plane publishes.
    pub fn with_slots(&self, mut p: Pipeline) -> Pipeline {
        overlay::reserve_flow_slots(&mut p, self.view.flows.slots.len());
        p
    }

    /// The base pipeline: the file as loaded (or reloaded), with the slots reserved.
    pub fn base(&self) -> &Pipeline {
        &self.base
    }

    /// A new base pipeline (SIGHUP reload, from [`with_slots`](Self::with_slots), same
    /// shape); returns the pipeline to publish.
    pub fn set_base(&mut self, base: Pipeline) -> Pipeline {
        self.base = base;
        self.view = self
            .overlay
            .view(&self.base, self.listener.systems(), self.listener.flows());
        self.effective()
    }

    /// One turn of the protocol (waits at most `wait` for a datagram). Returns the
    /// pipeline to publish when the control plane's view of the servers or of the
    /// advertised flows changed (at most once per [`MIN_PUBLISH`]; a change waits for the
    /// next turn after that), after logging each change of state or flow on stderr (a new
    /// refusal of an advert is logged but changes no table).
    pub fn turn(&mut self, wait: Duration) -> Option<Pipeline> {
        if let Err(e) = self.driver.step(&mut self.listener, wait) {
            // A socket error is reported and retried next turn; the data plane goes on.
            crate::logln!("control: socket error: {e}");
            std::thread::sleep(wait);
        }
        while let Some(ev) = self.listener.poll_event() {
            match ev {
                TableEvent::Registered => {
                    crate::logln!(
                        "control: registered with the supervisor (id {:016x})",
                        self.listener.id()
                    );
                }
                TableEvent::ServerDown(id) => {
                    crate::logln!("control: end system {id:016x} left or went silent");
                }
                _ => {}
            }
        }
        if self.hold(Instant::now()) {
            return None;
        }
        let view = self
            .overlay
            .view(&self.base, self.listener.systems(), self.listener.flows());
        if view != self.view {
            for line in overlay::changes(&self.base, &self.view, &view) {
                crate::logln!("{line}");
            }
            self.dirty |=
                view.servers != self.view.servers || view.flows.slots != self.view.flows.slots;
            self.view = view;
        }
        if !self.dirty || self.last_publish.is_some_and(|t| t.elapsed() < MIN_PUBLISH) {
            return None;
        }
        self.dirty = false;
        self.last_publish = Some(Instant::now());
        self.published += 1;
        Some(self.effective())
    }

    /// Whether to hold the last view now (see the module docs), logging the changes.
    fn hold(&mut self, now: Instant) -> bool {
        let dead = self.listener.dead_interval();
        let acked = self.listener.supervisor_acked();
        if self.holding {
            // Wait until the supervisor has answered for a whole dead interval.
            let answering = acked.is_some_and(|t| now.saturating_duration_since(t) < dead);
            if !answering {
                self.answering_since = None;
                return true;
            }
            let since = *self.answering_since.get_or_insert(now);
            if now.saturating_duration_since(since) < dead {
                return true;
            }
            self.holding = false;
            self.answering_since = None;
            self.vanished_at = None;
            crate::logln!("control: the supervisor answers again: following the agents");
            return false;
        }
        let live: Vec<u64> = self.listener.systems().map(|(i, _)| i.id).collect();
        // A flow the listener no longer has is a disappearance too: its origin went (the
        // listener drops a server's flows with it), or the supervisor's repeats of it
        // stopped, which a silent supervisor must not be taken for any more than for the
        // servers' silence.
        let flows: Vec<(u64, u64)> = self
            .listener
            .flows()
            .map(|f| (f.origin, f.flow_id))
            .collect();
        let vanished = self
            .view
            .servers
            .iter()
            .filter_map(|v| v.system)
            .any(|id| !live.contains(&id))
            || self
                .view
                .flows
                .slots
                .iter()
                .flatten()
                .any(|(f, _)| !flows.contains(&(f.origin, f.flow_id)));
        if !vanished {
            self.vanished_at = None;
            return false;
        }
        let at = *self.vanished_at.get_or_insert(now);
        if acked.is_some_and(|t| t > at) {
            // The supervisor is alive after the system went: the silence is real.
            self.vanished_at = None;
            return false;
        }
        if now.saturating_duration_since(at) >= dead {
            self.holding = true;
            self.holds += 1;
            crate::logln!(
                "control: no answer from the supervisor for {} ms: holding the last view \
                 (no server goes down for silence)",
                dead.as_millis()
            );
        }
        true
    }

    /// One line for the periodic summary: registration, servers by state, applied flows.
    pub fn summary(&self) -> String {
        // Free indices (a removed server's, `Pipeline::reclaim`) are no servers.
        let n = |st: ServerState| {
            (self.view.servers.iter().zip(&self.base.servers))
                .filter(|(v, s)| v.state == st && !s.vacant())
                .count()
        };
        format!(
            "control: {}{}, servers up {} draining {} down {}, advertised flows {}",
            if self.registered() {
                "registered"
            } else {
                "not registered"
            },
            if self.holding { " (holding)" } else { "" },
            n(ServerState::Up),
            n(ServerState::Draining),
            n(ServerState::Down),
            self.view.flows.slots.iter().flatten().count()
        )
    }

    /// The state the control plane gives each server, by name (for the stats JSON).
    pub fn to_json(&self) -> serde_json::Value {
        let servers: serde_json::Map<String, serde_json::Value> = self
            .base
            .servers
            .iter()
            .zip(&self.view.servers)
            .enumerate()
            .filter(|(_, (s, _))| !s.vacant())
            .map(|(i, (s, v))| {
                let state = match v.state {
                    ServerState::Up => "up",
                    ServerState::Draining => "draining",
                    ServerState::Down => "down",
                };
                // Per service it is a member of: the advertised weight, in percent of
                // the pipeline's (0: not advertised, or advertised at 0).
                let weights: serde_json::Map<String, serde_json::Value> = (self.base.services)
                    .iter()
                    .zip(&v.weights)
                    .filter(|(svc, _)| svc.members.iter().any(|m| m.server as usize == i))
                    .map(|(svc, w)| (svc.name.clone(), w.unwrap_or(0).into()))
                    .collect();
                (
                    s.name.clone(),
                    serde_json::json!({ "state": state, "load": v.load, "weights": weights,
                        "system": v.system.map(|id| format!("{id:016x}")) }),
                )
            })
            .collect();
        let first = overlay::first_slot(&self.base);
        let flows: Vec<serde_json::Value> = self
            .view
            .flows
            .slots
            .iter()
            .enumerate()
            .filter_map(|(k, s)| {
                let (f, t) = s.as_ref()?;
                Some(serde_json::json!({
                    "origin": format!("{:016x}", f.origin), "flow_id": f.flow_id,
                    "rule": first + k, "server": self.base.servers[usize::from(*t)].name,
                }))
            })
            .collect();
        let refused: Vec<serde_json::Value> = self
            .view
            .flows
            .refused
            .iter()
            .map(|((o, id), why)| {
                serde_json::json!({ "origin": format!("{o:016x}"), "flow_id": id, "why": why })
            })
            .collect();
        serde_json::json!({
            "flows": flows,
            "flows_refused": refused,
            "registered": self.registered(),
            "holding": self.holding,
            "holds": self.holds,
            "published": self.published,
            "servers": servers,
            "protocol": self.listener.stats(),
            "send_errors": self.driver.send_errors,
        })
    }
}
