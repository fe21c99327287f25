//! Flows: symmetric keys, TCP-state-aware timeouts, and fragment records.
//!
//! Layer: `flow`, below `pipeline`. A flow is a TCP connection, or the packets of one
//! 5-tuple matched by a pattern rule or a non-TCP service (idle timeout). Keys are
//! *symmetric*: both directions of a connection normalise to the same [`FlowKey`], so an
//! end system's response finds the flow its request created. Each flow remembers which
//! orientation created it, so the pipeline knows request from response.
//!
//! Non-first IP fragments carry no ports; [`FragKey`] records map (src, dst, proto, id)
//! of a first fragment to its flow's decision, so later fragments follow it.

pub mod table;

use crate::config::{FlowTableConf, Mac, Target};
use crate::pipeline::meta::Tuple;
pub use table::{Handle, Inserted, LruTable};

/// Timeout class of a TCP flow in SYN state.
pub const CLASS_SYN: u8 = 0;
/// Timeout class of an established TCP flow.
pub const CLASS_ESTABLISHED: u8 = 1;
/// Timeout class of a TCP flow after FIN or RST.
pub const CLASS_CLOSING: u8 = 2;
/// First idle class (non-TCP flows); pattern rules with their own idle timeout get
/// classes after it (see [`FlowTable::idle_class`]).
pub const CLASS_IDLE: u8 = 3;

/// A direction-free 5-tuple: the (address, port) ends sorted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub a: [u8; 16],
    pub b: [u8; 16],
    pub pa: u16,
    pub pb: u16,
    pub proto: u8,
}

impl FlowKey {
    /// The symmetric key of `t`, and whether `t` runs from the `b` end to the `a` end.
    #[inline]
    pub fn of(t: &Tuple) -> (FlowKey, bool) {
        let fwd = (t.src, t.src_port) <= (t.dst, t.dst_port);
        let k = if fwd {
            FlowKey {
                a: t.src,
                b: t.dst,
                pa: t.src_port,
                pb: t.dst_port,
                proto: t.proto,
            }
        } else {
            FlowKey {
                a: t.dst,
                b: t.src,
                pa: t.dst_port,
                pb: t.src_port,
                proto: t.proto,
            }
        };
        (k, !fwd)
    }
}

/// Where a first fragment went, keyed by (src, dst, proto, id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: u32,
    pub proto: u8,
}

/// TCP connection state as far as timeouts care.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TcpState {
    /// Not TCP.
    #[default]
    None,
    /// SYN seen, no answer yet.
    Syn,
    /// Traffic seen both ways (or picked up mid-stream).
    Established,
    /// FIN or RST seen.
    Closing,
}

/// Who created a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Owner {
    /// A service (index).
    Service(u16),
    /// A pattern rule (index).
    Rule(u16),
    /// Not from the pipeline (e.g. an advertised flow).
    #[default]
    Other,
}

/// One flow.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Flow {
    /// Where packets in the creating direction go.
    pub target: Target,
    /// Source MAC and port of the creating packet: where the reverse direction goes
    /// when the forward target is not a server (learned, as a switch would).
    pub origin_mac: Mac,
    pub origin_port: u16,
    /// Orientation of the creating packet relative to the key (see [`FlowKey::of`]).
    pub swapped: bool,
    pub owner: Owner,
    pub tcp: TcpState,
    pub class: u8,
    pub created: u64,
}

/// Flows of one worker: a fixed-capacity [`LruTable`] with the TCP timeout classes.
pub struct FlowTable {
    pub table: LruTable<FlowKey, Flow>,
    idle: Vec<u64>,
}

impl FlowTable {
    /// A table for `conf.capacity` flows; `rule_idle_ns` lists the idle timeouts that
    /// pattern rules ask for (each distinct value gets its own class).
    pub fn new(conf: &FlowTableConf, rule_idle_ns: &[u64]) -> Self {
        let mut idle = vec![conf.idle_ns];
        for &t in rule_idle_ns {
            if !idle.contains(&t) && idle.len() < 250 {
                idle.push(t);
            }
        }
        let mut timeouts = vec![
            conf.tcp_syn_ns,
            conf.tcp_established_ns,
            conf.tcp_closing_ns,
        ];
        timeouts.extend_from_slice(&idle);
        FlowTable {
            table: LruTable::new(conf.capacity, &timeouts),
            idle,
        }
    }

    /// The class for a non-TCP flow with idle timeout `ns` (the default class when the
    /// value was not declared at construction).
    pub fn idle_class(&self, ns: u64) -> u8 {
        CLASS_IDLE + self.idle.iter().position(|&t| t == ns).unwrap_or(0) as u8
    }
}

/// The class a TCP state belongs to.
pub fn tcp_class(s: TcpState) -> u8 {
    match s {
        TcpState::Syn => CLASS_SYN,
        TcpState::Established | TcpState::None => CLASS_ESTABLISHED,
        TcpState::Closing => CLASS_CLOSING,
    }
}

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// The state after a packet with `flags` travelling `forward` (creating direction) or
/// not, in state `s`.
pub fn tcp_next(s: TcpState, flags: u8, forward: bool) -> TcpState {
    use tcp_flags::*;
    if flags & (RST | FIN) != 0 {
        return TcpState::Closing;
    }
    match s {
        TcpState::Syn if !forward || flags & ACK != 0 && flags & SYN == 0 => TcpState::Established,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_symmetric() {
        let t = Tuple {
            src: [1; 16],
            dst: [2; 16],
            src_port: 40000,
            dst_port: 80,
            proto: 6,
        };
        let r = Tuple {
            src: t.dst,
            dst: t.src,
            src_port: t.dst_port,
            dst_port: t.src_port,
            proto: 6,
        };
        let (k1, s1) = FlowKey::of(&t);
        let (k2, s2) = FlowKey::of(&r);
        assert_eq!(k1, k2);
        assert_ne!(s1, s2);
    }

    #[test]
    fn tcp_states() {
        use tcp_flags::*;
        assert_eq!(
            tcp_next(TcpState::Syn, SYN | ACK, false),
            TcpState::Established
        );
        assert_eq!(tcp_next(TcpState::Syn, SYN, true), TcpState::Syn);
        assert_eq!(
            tcp_next(TcpState::Established, FIN | ACK, true),
            TcpState::Closing
        );
        assert_eq!(
            tcp_next(TcpState::Established, RST, false),
            TcpState::Closing
        );
        assert_eq!(tcp_next(TcpState::Closing, ACK, true), TcpState::Closing);
    }
}
