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
///
/// An idle class *is* its timeout: a non-TCP flow sits in the class of its idle timeout
/// (its pattern rule's, or `flow_table`'s), and a reload that changes the timeout moves
/// the flows to the class of the new value ([`retime`](Self::retime)).
pub struct FlowTable {
    pub table: LruTable<FlowKey, Flow>,
    /// The idle classes' timeouts, from base class [`CLASS_IDLE`] on (distinct).
    idle: Vec<u64>,
    /// The idle timeouts flows may have (`flow_table`'s and the rules', at construction
    /// or the last reload): the classes of the other values hold no flow, and a reload
    /// may give them new values.
    used: Vec<u64>,
}

/// The distinct idle timeouts of a flow table for `conf` and pattern rules with idle
/// timeouts `rule_idle_ns`: `conf.idle_ns` first, then each rule's in rule order when
/// not seen before (at most [`MAX_IDLE_CLASSES`]).
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
/// the idle classes `idle`) twice, assured then unassured.
fn class_timeouts(conf: &FlowTableConf, idle: &[u64]) -> Vec<u64> {
    let tcp = [
        conf.tcp_syn_ns,
        conf.tcp_established_ns,
        conf.tcp_closing_ns,
    ];
    (tcp.iter().chain(idle)).flat_map(|&t| [t, t]).collect()
}

/// The table class of a flow in base class `base`, assured or not ([`FlowTable::class`]).
#[inline]
fn table_class(base: u8, assured: bool) -> u8 {
    base << 1 | u8::from(!assured)
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
        FlowTable {
            table,
            used: idle.clone(),
            idle,
        }
    }

    /// Takes the timeouts of `conf` and `rule_idle_ns` (a reload), at `now`. The TCP
    /// classes take `conf`'s timeouts under the flows they hold ([`LruTable::retime`]).
    /// Every idle timeout gets a class: one it had, one whose value no flow may have any
    /// more, or a new one. With `idle_of` (what a non-TCP flow's idle timeout is now, from
    /// its owner), every non-TCP flow moves to the class of its timeout, keeping its
    /// last-seen time; without it (no flow's timeout changed, e.g. rules were only added)
    /// no flow moves. One pass over the table when a TCP timeout changed or `idle_of` is
    /// given. An error, changing nothing, when the idle timeouts the flows may have had
    /// and may have now are more than [`MAX_IDLE_CLASSES`].
    pub fn retime(
        &mut self,
        conf: &FlowTableConf,
        rule_idle_ns: &[u64],
        now: u64,
        idle_of: Option<&dyn Fn(&Flow) -> u64>,
    ) -> Result<bool, String> {
        let used = idle_timeouts(conf, rule_idle_ns);
        let mut idle = self.idle.clone();
        for &t in &used {
            if idle.contains(&t) {
                continue;
            }
            // A class no flow is in (its value was not used, and is not wanted now).
            match (idle.iter()).position(|v| !self.used.contains(v) && !used.contains(v)) {
                Some(p) => idle[p] = t,
                None if idle.len() < MAX_IDLE_CLASSES => idle.push(t),
                None => {
                    return Err(format!(
                        "the idle timeouts of the open flows and of the new pipeline make \
                         more than {MAX_IDLE_CLASSES} distinct values"
                    ));
                }
            }
        }
        let timeouts = class_timeouts(conf, &idle);
        let grew = timeouts.len() > self.table.classes();
        let changed = match idle_of {
            Some(idle_of) => {
                let mut to = |_: &FlowKey, f: &mut Flow, c: u8| {
                    if f.tcp() != TcpState::None {
                        return c;
                    }
                    let ns = idle_of(f);
                    let p = idle.iter().position(|&v| v == ns).unwrap_or(0);
                    f.class = table_class(CLASS_IDLE + p as u8, f.assured());
                    f.class
                };
                self.table.retime(&timeouts, now, Some(&mut to))
            }
            None => self.table.retime(&timeouts, now, None),
        };
        if grew {
            self.table.set_evict_first(&unassured(timeouts.len()));
        }
        self.idle = idle;
        self.used = used;
        Ok(changed)
    }

    /// The base class for a non-TCP flow with idle timeout `ns` (the first idle class
    /// when the value is not one the table has a class for).
    pub fn idle_class(&self, ns: u64) -> u8 {
        CLASS_IDLE + self.idle.iter().position(|&t| t == ns).unwrap_or(0) as u8
    }

    /// The table class of a flow in base class `base`, assured or not.
    #[inline]
    pub fn class(&self, base: u8, assured: bool) -> u8 {
        table_class(base, assured)
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
        let classes = t.table.classes();
        assert_eq!(t.retime(&conf, &[30 * S, 45 * S], 0, None), Ok(false));
        assert_eq!(
            t.table.classes(),
            classes + 2,
            "a base class: two table classes"
        );
        let c45 = t.idle_class(45 * S);
        assert!(![c30, c60, CLASS_SYN, CLASS_ESTABLISHED, CLASS_CLOSING].contains(&c45));
        assert_eq!((t.idle_class(30 * S), t.idle_class(60 * S)), (c30, c60));
        // Flows in the new class expire at 45 s; the old ones at their own timeouts.
        t.table.insert(key(4), flow(), t.class(c45, false), 0);
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

    /// The keys `expire` removes at `now`, sorted.
    fn gone(t: &mut FlowTable, now: u64) -> Vec<u8> {
        let mut v = Vec::new();
        t.table.expire(now, usize::MAX, |k, _| v.push(k.a[0]));
        v.sort_unstable();
        v
    }

    /// A reload that changes the idle timeout of flows (their rule's) moves them to the
    /// class of the new value, keeping their last-seen time and assured mark; a class no
    /// flow may be in any more is given to a new value at the next reload.
    #[test]
    fn flows_move_to_the_class_of_their_new_idle_timeout() {
        let conf = FlowTableConf {
            capacity: 8,
            idle_ns: 60 * S,
            ..FlowTableConf::default()
        };
        // Rule 0 at 30 s, rule 1 at 60 s (the default's class).
        let mut t = FlowTable::new(&conf, &[30 * S, 60 * S]);
        let classes = t.table.classes();
        let add = |t: &mut FlowTable, n: u8, rule: u16, ns: u64, assured: bool| {
            let mut f = Flow::new(
                Target::Gateway,
                Owner::Rule(rule),
                [0; 6],
                0,
                false,
                TcpState::None,
                0,
            );
            if assured {
                f.mark(true);
                f.mark(false);
                f.mark(true);
            }
            assert_eq!(f.assured(), assured);
            f.class = t.class(t.idle_class(ns), assured);
            t.table.insert(key(n), f, f.class, 10 * S);
        };
        add(&mut t, 1, 0, 30 * S, true);
        add(&mut t, 2, 1, 60 * S, false);
        add(&mut t, 3, 1, 60 * S, true);
        let mut tcp = Flow::new(
            Target::Gateway,
            Owner::Rule(1),
            [0; 6],
            0,
            false,
            TcpState::Established,
            0,
        );
        tcp.class = t.class(CLASS_ESTABLISHED, false);
        t.table.insert(key(4), tcp, tcp.class, 10 * S);
        // Rule 0 now at 60 s, rule 1 at 20 s (a new value: a new class; the 30 s one
        // still holds rule 0's flow until the pass moves it).
        let rules = [60 * S, 20 * S];
        let idle_of = |f: &Flow| match f.owner {
            Owner::Rule(i) => rules[usize::from(i)],
            _ => 60 * S,
        };
        assert_eq!(t.retime(&conf, &rules, 11 * S, Some(&idle_of)), Ok(true));
        assert_eq!(t.table.classes(), classes + 2);
        let c20 = t.idle_class(20 * S);
        let class_of = |t: &FlowTable, n: u8| {
            let h = t.table.find(&key(n)).expect("live");
            assert_eq!(
                t.table.get(h).class,
                t.table.class(h),
                "value and table agree"
            );
            t.table.class(h)
        };
        assert_eq!(class_of(&t, 1), t.class(t.idle_class(60 * S), true));
        assert_eq!(class_of(&t, 2), t.class(c20, false));
        assert_eq!(class_of(&t, 3), t.class(c20, true));
        assert_eq!(
            class_of(&t, 4),
            t.class(CLASS_ESTABLISHED, false),
            "TCP stays"
        );
        // Seen at 10 s: rule 1's flows go 20 s after that, rule 0's 60 s after.
        assert_eq!(gone(&mut t, 29 * S), Vec::<u8>::new());
        assert_eq!(gone(&mut t, 32 * S), vec![2, 3]);
        assert_eq!(gone(&mut t, 69 * S), Vec::<u8>::new());
        assert_eq!(gone(&mut t, 74 * S), vec![1]);
        // A rule added at 90 s: it takes the class 30 s had, which no flow may be in any
        // more. Without `idle_of` nothing moves.
        add(&mut t, 5, 1, 20 * S, true);
        let c30 = t.idle_class(30 * S);
        assert_eq!(
            t.retime(&conf, &[60 * S, 20 * S, 90 * S], 75 * S, None),
            Ok(true)
        );
        assert_eq!(
            t.table.classes(),
            classes + 2,
            "the free class was taken again"
        );
        assert_eq!(t.idle_class(90 * S), c30);
        assert_eq!(class_of(&t, 5), t.class(c20, true));
    }

    /// Too many idle timeouts between the open flows' and the new ones: refused,
    /// changing nothing.
    #[test]
    fn too_many_idle_timeouts_are_refused() {
        let conf = FlowTableConf::default();
        let old: Vec<u64> = (1..MAX_IDLE_CLASSES as u64).map(|i| i * S).collect();
        let mut t = FlowTable::new(&conf, &old);
        let new: Vec<u64> = (1..MAX_IDLE_CLASSES as u64)
            .map(|i| (i + 1000) * S)
            .collect();
        let e = t.retime(&conf, &new, 0, None).unwrap_err();
        assert!(e.contains("more than 120 distinct values"), "{e}");
        assert_eq!(
            t.idle_class(1000 * S),
            t.idle_class(conf.idle_ns),
            "unknown: default"
        );
        assert_ne!(t.idle_class(S), t.idle_class(conf.idle_ns));
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
