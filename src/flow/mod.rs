//! Flows: symmetric keys, TCP-state-aware timeouts, and fragment records.
//!
//! Layer: `flow`, below `pipeline`. A flow is a TCP connection, or the packets of one
//! 5-tuple matched by a pattern rule or a non-TCP service (idle timeout). Keys are
//! *symmetric*: both directions of a connection normalise to the same [`FlowKey`], so an
//! end system's response finds the flow its request created. Each flow remembers which
//! orientation created it, so the pipeline knows request from response.
//!
//! A flow is *assured* (Linux conntrack's word) once its creator has spoken again after
//! an answer: a packet in the creating direction after one against it, e.g. the ACK that
//! completes a TCP handshake. Until then it sits in the unassured twin of its timeout
//! class (same timeout), and a full table evicts the unassured flow idle the longest
//! before any assured one, as conntrack's early drop does. A flood from spoofed sources
//! never gets assured — the servers answer the spoofed SYNs or datagrams, but the
//! spoofed clients never see the answers — so it replaces its own flows and not the
//! open connections.
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

/// Most idle classes a flow table has (distinct idle timeouts; the pipeline refuses more):
/// with the three TCP classes and every class's unassured twin, the classes stay below
/// the table's limit of 255.
pub const MAX_IDLE_CLASSES: usize = 120;

/// A direction-free 5-tuple: the (address, port) ends sorted.
#[derive(Clone, Copy, Debug, Default, Eq)]
pub struct FlowKey {
    pub a: [u8; 16],
    pub b: [u8; 16],
    pub pa: u16,
    pub pb: u16,
    pub proto: u8,
}

/// Three word writes instead of the derived per-field (and length-prefixed array)
/// writes: hashed once per packet. Equal keys write equal words.
impl core::hash::Hash for FlowKey {
    #[inline]
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        h.write_u128(u128::from_ne_bytes(self.a));
        h.write_u128(u128::from_ne_bytes(self.b));
        h.write_u64(u64::from(self.pa) | u64::from(self.pb) << 16 | u64::from(self.proto) << 32);
    }
}

/// Three wide compares instead of the derived field-by-field (and byte-array) ones: every
/// flow-table hit compares a key. The same fields as the derived impl.
impl PartialEq for FlowKey {
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        let ports =
            |k: &FlowKey| u64::from(k.pa) | u64::from(k.pb) << 16 | u64::from(k.proto) << 32;
        u128::from_ne_bytes(self.a) == u128::from_ne_bytes(o.a)
            && u128::from_ne_bytes(self.b) == u128::from_ne_bytes(o.b)
            && ports(self) == ports(o)
    }
}

impl FlowKey {
    /// The symmetric key of `t`, and whether `t` runs from the `b` end to the `a` end.
    #[inline]
    pub fn of(t: &Tuple) -> (FlowKey, bool) {
        // (src, src_port) <= (dst, dst_port), bytes compared in order: as big-endian
        // integers, one wide compare each instead of a byte-array comparison.
        let (s, d) = (u128::from_be_bytes(t.src), u128::from_be_bytes(t.dst));
        let fwd = s < d || (s == d && t.src_port <= t.dst_port);
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
#[repr(u8)]
pub enum TcpState {
    /// Not TCP.
    #[default]
    None = 0,
    /// SYN seen, no answer yet.
    Syn = 1,
    /// Traffic seen both ways (or picked up mid-stream).
    Established = 2,
    /// FIN or RST seen.
    Closing = 3,
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

/// One flow: 18 bytes, so that with its [`FlowKey`] and the table's last-seen time it
/// fits one cache line (asserted below).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Flow {
    /// Where packets in the creating direction go.
    pub target: Target,
    pub owner: Owner,
    /// Source MAC and port of the creating packet: where the reverse direction goes
    /// when the forward target is not a server (learned, as a switch would).
    pub origin_mac: Mac,
    pub origin_port: u16,
    /// The timeout class the flow is in (the table's class of its entry): an unassured
    /// twin exactly while the assured mark is clear (see [`FlowTable`]).
    pub class: u8,
    /// [`TcpState`] in bits 0–1, replied in bit 5, assured in bit 6, `swapped` in bit 7.
    bits: u8,
}

const SWAPPED: u8 = 0x80;
const ASSURED: u8 = 0x40;
const REPLIED: u8 = 0x20;

impl Flow {
    /// A flow; `swapped` is the orientation of the creating packet relative to the key
    /// (see [`FlowKey::of`]).
    pub fn new(
        target: Target,
        owner: Owner,
        origin_mac: Mac,
        origin_port: u16,
        swapped: bool,
        tcp: TcpState,
        class: u8,
    ) -> Flow {
        Flow {
            target,
            owner,
            origin_mac,
            origin_port,
            class,
            bits: tcp as u8 | if swapped { SWAPPED } else { 0 },
        }
    }

    /// Orientation of the creating packet relative to the key (see [`FlowKey::of`]).
    #[inline]
    pub fn swapped(&self) -> bool {
        self.bits & SWAPPED != 0
    }

    /// Whether a packet has travelled against the creating direction.
    #[inline]
    pub fn replied(&self) -> bool {
        self.bits & REPLIED != 0
    }

    /// Whether a packet has travelled in the creating direction after a reply (see the
    /// module docs).
    #[inline]
    pub fn assured(&self) -> bool {
        self.bits & ASSURED != 0
    }

    /// Whether a packet going `forward` (in the creating direction) or not changes the
    /// flow's replied or assured mark: a first reply, or the creator's next packet.
    #[inline]
    pub fn marks_change(&self, forward: bool) -> bool {
        self.bits & ASSURED == 0 && forward == self.replied()
    }

    /// Records a packet going `forward` or not in the replied and assured marks.
    #[inline]
    pub fn mark(&mut self, forward: bool) {
        if !forward {
            self.bits |= REPLIED;
        } else if self.replied() {
            self.bits |= ASSURED;
        }
    }

    /// The TCP state.
    #[inline]
    pub fn tcp(&self) -> TcpState {
        match self.bits & 3 {
            0 => TcpState::None,
            1 => TcpState::Syn,
            2 => TcpState::Established,
            _ => TcpState::Closing,
        }
    }

    /// Sets the TCP state.
    #[inline]
    pub fn set_tcp(&mut self, s: TcpState) {
        self.bits = (self.bits & !3) | s as u8;
    }
}

/// Bytes of a flow's hot slot (key, flow, last-seen time): one cache line, so a hit
/// reads and writes one line of the slab.
pub const HOT_SLOT_BYTES: usize = table::hot_slot_bytes::<FlowKey, Flow>();
const _: () = assert!(HOT_SLOT_BYTES == 64);

/// Flows of one worker: a fixed-capacity [`LruTable`] with the TCP timeout classes.
///
/// Class numbers: each *base* class (SYN, established, closing, then the idle classes)
/// is a pair of table classes with its timeout: `2c` holds base class `c`'s assured
/// flows, `2c + 1` its unassured ones, and the table evicts from the odd classes first
/// (see the module docs). Pairs so that a reload can append idle classes without
/// renumbering the flows of the others.
pub struct FlowTable {
    pub table: LruTable<FlowKey, Flow>,
    idle: Vec<u64>,
}

/// The distinct idle timeouts of a flow table for `conf` and pattern rules with idle
/// timeouts `rule_idle_ns`, in class order: `conf.idle_ns` first, then each rule's in
/// rule order when not seen before (at most [`MAX_IDLE_CLASSES`]).
pub fn idle_timeouts(conf: &FlowTableConf, rule_idle_ns: &[u64]) -> Vec<u64> {
    let mut idle = vec![conf.idle_ns];
    for &t in rule_idle_ns {
        if !idle.contains(&t) && idle.len() < MAX_IDLE_CLASSES {
            idle.push(t);
        }
    }
    idle
}

/// Every table class's timeout, in class order: each base class (the TCP classes, then
/// the idle classes `idle`, see [`idle_timeouts`]) twice, assured then unassured.
fn class_timeouts(conf: &FlowTableConf, idle: &[u64]) -> Vec<u64> {
    let tcp = [
        conf.tcp_syn_ns,
        conf.tcp_established_ns,
        conf.tcp_closing_ns,
    ];
    (tcp.iter().chain(idle)).flat_map(|&t| [t, t]).collect()
}

/// The unassured classes of a table with `classes` classes (see [`FlowTable`]).
fn unassured(classes: usize) -> Vec<u8> {
    (1..classes as u8).step_by(2).collect()
}

impl FlowTable {
    /// A table for `conf.capacity` flows; `rule_idle_ns` lists the idle timeouts that
    /// pattern rules ask for (each distinct value gets its own class).
    pub fn new(conf: &FlowTableConf, rule_idle_ns: &[u64]) -> Self {
        let idle = idle_timeouts(conf, rule_idle_ns);
        let timeouts = class_timeouts(conf, &idle);
        let mut table = LruTable::new(conf.capacity, &timeouts);
        table.set_evict_first(&unassured(timeouts.len()));
        FlowTable { table, idle }
    }

    /// Takes the timeouts of `conf` and `rule_idle_ns` (a reload), at `now`: the classes
    /// keep their flows and change their timeouts ([`LruTable::set_timeouts`]), and idle
    /// timeouts beyond those the table has get new classes (rules added by a reload).
    /// The first idle timeouts must map onto the table's idle classes, one for one
    /// ([`idle_timeouts`] at least as long; the caller checks that each rule keeps its
    /// class, see [`Pipeline::flow_table_change`](crate::config::Pipeline::flow_table_change));
    /// returns false, changing nothing, when they do not.
    pub fn set_timeouts(&mut self, conf: &FlowTableConf, rule_idle_ns: &[u64], now: u64) -> bool {
        let idle = idle_timeouts(conf, rule_idle_ns);
        if idle.len() < self.idle.len() {
            return false;
        }
        let timeouts = class_timeouts(conf, &idle);
        let have = class_timeouts(conf, &self.idle).len();
        self.table.set_timeouts(&timeouts[..have], now);
        if timeouts.len() > have {
            self.table.add_classes(&timeouts[have..]);
            self.table.set_evict_first(&unassured(timeouts.len()));
        }
        self.idle = idle;
        true
    }

    /// The base class for a non-TCP flow with idle timeout `ns` (the default class when
    /// the value was not declared at construction).
    pub fn idle_class(&self, ns: u64) -> u8 {
        CLASS_IDLE + self.idle.iter().position(|&t| t == ns).unwrap_or(0) as u8
    }

    /// The table class of a flow in base class `base`, assured or not.
    #[inline]
    pub fn class(&self, base: u8, assured: bool) -> u8 {
        base << 1 | u8::from(!assured)
    }

    /// The base class of table class `class`.
    #[inline]
    pub fn base_class(&self, class: u8) -> u8 {
        class >> 1
    }

    /// Whether table class `class` holds assured flows.
    #[inline]
    pub fn assured_class(&self, class: u8) -> bool {
        class & 1 == 0
    }
}

/// The base class a TCP state belongs to.
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

    const S: u64 = 1_000_000_000;

    fn key(n: u8) -> FlowKey {
        FlowKey {
            a: [n; 16],
            ..FlowKey::default()
        }
    }

    /// A reload that declares a new idle timeout gets a class for it, assured and
    /// unassured, without touching the flows of the classes the table had; the new
    /// unassured class is evicted first like the others.
    #[test]
    fn new_idle_timeouts_get_classes_beside_the_open_flows() {
        let conf = FlowTableConf {
            capacity: 4,
            idle_ns: 60 * S,
            ..FlowTableConf::default()
        };
        let mut t = FlowTable::new(&conf, &[30 * S]);
        let (c30, c60) = (t.idle_class(30 * S), t.idle_class(60 * S));
        assert_ne!(c30, c60);
        let flow = Flow::default;
        for (n, base) in [(1, c30), (2, c60), (3, CLASS_ESTABLISHED)] {
            t.table.insert(key(n), flow(), t.class(base, true), 0);
        }
        // Unknown before the reload: the default idle class.
        assert_eq!(t.idle_class(45 * S), c60);
        assert!(t.set_timeouts(&conf, &[30 * S, 45 * S], 0));
        let c45 = t.idle_class(45 * S);
        assert!(![c30, c60, CLASS_SYN, CLASS_ESTABLISHED, CLASS_CLOSING].contains(&c45));
        assert_eq!((t.idle_class(30 * S), t.idle_class(60 * S)), (c30, c60));
        // Fewer idle timeouts than classes: refused, nothing changed.
        assert!(!t.set_timeouts(&conf, &[], 0));
        assert_eq!(t.idle_class(45 * S), c45);
        // Flows in the new class expire at 45 s; the old ones at their own timeouts.
        t.table.insert(key(4), flow(), t.class(c45, false), 0);
        let gone = |t: &mut FlowTable, now: u64| {
            let mut v = Vec::new();
            t.table.expire(now, usize::MAX, |k, _| v.push(k.a[0]));
            v.sort_unstable();
            v
        };
        assert_eq!(gone(&mut t, 29 * S), Vec::<u8>::new());
        // (Never early, at most a grain, a sixteenth of the timeout, late.)
        assert_eq!(gone(&mut t, 32 * S), vec![1]);
        assert_eq!(gone(&mut t, 44 * S), Vec::<u8>::new());
        assert_eq!(gone(&mut t, 48 * S), vec![4]);
        assert_eq!(gone(&mut t, 59 * S), Vec::<u8>::new());
        assert_eq!(gone(&mut t, 64 * S), vec![2]);
        // A full table evicts the unassured flow of the new class before assured ones.
        t.table.insert(key(5), flow(), t.class(c30, true), 100 * S);
        t.table.insert(key(6), flow(), t.class(c45, false), 101 * S);
        t.table.insert(key(7), flow(), t.class(c60, true), 102 * S);
        match t.table.insert(key(8), flow(), t.class(c30, true), 103 * S) {
            Inserted::Evicted(_, k, _) => assert_eq!(k.a[0], 6),
            Inserted::Fresh(_) => panic!("the table was full"),
        }
    }

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

    #[test]
    fn a_flow_is_assured_when_its_creator_speaks_after_a_reply() {
        let mut f = Flow::new(
            Target::Gateway,
            Owner::Rule(1),
            [1; 6],
            0,
            true,
            TcpState::Syn,
            0,
        );
        assert!(!f.replied() && !f.assured());
        // More from the creator changes nothing before a reply ...
        assert!(!f.marks_change(true));
        // ... a reply is recorded, once ...
        assert!(f.marks_change(false));
        f.mark(false);
        assert!(f.replied() && !f.assured());
        assert!(!f.marks_change(false), "a second reply changes nothing");
        // ... and the creator's next packet assures the flow.
        assert!(f.marks_change(true));
        f.mark(true);
        assert!(f.assured());
        assert!(!f.marks_change(true) && !f.marks_change(false));
        // The marks live beside the TCP state and the orientation.
        f.set_tcp(TcpState::Closing);
        assert!(f.replied() && f.assured() && f.swapped());
        assert_eq!(f.tcp(), TcpState::Closing);
    }

    #[test]
    fn flow_packs_tcp_state_and_orientation() {
        use TcpState::*;
        for s in [None, Syn, Established, Closing] {
            for swapped in [false, true] {
                let mut f = Flow::new(Target::Gateway, Owner::Rule(7), [1; 6], 3, swapped, s, 9);
                assert_eq!((f.tcp(), f.swapped(), f.class), (s, swapped, 9));
                for t in [None, Syn, Established, Closing] {
                    f.set_tcp(t);
                    assert_eq!((f.tcp(), f.swapped()), (t, swapped));
                }
            }
        }
    }
}
