//! The control plane: protocol, supervisor, end-system agent, the intermediate
//! system's listener, the Assigned Numbers Authority and their drivers.
//!
//! Layer: above `pipeline/`, below the CLI. Nothing here touches packets of the data
//! plane; the listener hands [`listener::TableEvent`]s to whoever builds the tables.
//!
//! Structure (quinn-proto style, see `docs/PROTOCOL.md` for the wire format):
//! - [`proto`]: framing, HMAC-SHA256, replay window, message codecs. No state.
//! - [`supervisor`], [`agent`], [`listener`]: sans-IO state machines. Each takes
//!   `handle(now, from, &[u8])` and `handle_timeout(now)`, and gives
//!   `poll_transmit(now)`, `poll_timeout()` and `poll_event()`. No sockets, no clock:
//!   simulation tests drive them with a fake clock and a lossy network.
//! - [`session`]: the client half shared by agent and listener (registration,
//!   reliable requests, number leases). An agent can route the number blocks it holds
//!   to itself as flow advertisements ([`agent::NumberRoute`]).
//! - [`ana`]: number pools and grants; [`store`]: the supervisor's crash-safe log.
//! - [`conns`]: the open TCP connections on the service ports, which an agent's drain
//!   waits for before it leaves.
//! - [`driver`]: the thin UDP loops; [`cli`]: `flowgate supervisor|agent|ctl`.
//!
//! Invariants: no input can panic a state machine; every refused datagram is counted;
//! the supervisor persists a registration or grant before acknowledging it; a number
//! is never held by two live systems at once (see [`session`] for the holder's rule).
//!
//! Demo (from the repository root, over loopback; `conf/control.key` is a demo key):
//!
//! ```text
//! flowgate supervisor --conf conf/supervisor.yaml &
//! flowgate agent --conf conf/agent.yaml &          # advertises "web", gets a nat-ports block
//! flowgate ctl systems; flowgate ctl --json numbers
//! flowgate agent flow add --src 192.0.2.7 --dst 10.0.0.100 --sport 40000 --dport 30001 --dscp 46
//! flowgate ctl flows; flowgate agent drain         # or kill -TERM the agent
//! ```
//!
//! - [`overlay`]: what the listener knows about the pipeline's servers (state, load,
//!   the services they offer), applied to a copy of the pipeline; `flowgate run` embeds
//!   a listener and publishes the result as new tables (a `control:` section in its
//!   conf). No CLI subcommand runs a bare listener.

pub mod agent;
pub mod ana;
pub mod cli;
pub mod conns;
pub mod driver;
pub mod health;
pub mod listener;
pub mod overlay;
pub mod proto;
pub mod session;
pub mod store;
pub mod supervisor;

use std::net::SocketAddr;

/// One datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}
