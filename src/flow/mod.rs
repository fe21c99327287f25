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

/// Most distinct timeouts a flow table has classes for at once (TCP's, the idle
/// timeouts, and those open flows keep until a reload's move pass is done; the pipeline
/// refuses more): each is a pair of table classes, below the table's limit of 255.
pub const MAX_TIMEOUTS: usize = 127;

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
    /// [`TcpState`] in bits 0–1, counted in bit 2, replied in bit 5, assured in bit 6,
    /// `swapped` in bit 7.
    bits: u8,
}

const SWAPPED: u8 = 0x80;
const ASSURED: u8 = 0x40;
const REPLIED: u8 = 0x20;
const COUNTED: u8 = 0x04;

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

    /// Whether the flow counts against its client's `conn_limit` (see
    /// `pipeline::gauges::ConnCounts`): marked when it was counted, cleared when it is
    /// uncounted (it closed, or left its service).
    #[inline]
    pub fn counted(&self) -> bool {
        self.bits & COUNTED != 0
    }

    /// Marks the flow counted or not.
    #[inline]
    pub fn set_counted(&mut self, on: bool) {
        self.bits = (self.bits & !COUNTED) | if on { COUNTED } else { 0 };
    }
}

/// Bytes of a flow's hot slot (key, flow, last-seen time): one cache line, so a hit
/// reads and writes one line of the slab.
pub const HOT_SLOT_BYTES: usize = table::hot_slot_bytes::<FlowKey, Flow>();
const _: () = assert!(HOT_SLOT_BYTES == 64);

/// Flows of one worker: a fixed-capacity [`LruTable`] whose timeout classes are the
/// timeouts flows have.
///
/// A *base* class is a timeout (a class *is* its timeout: the values are distinct): TCP
/// flows sit in the class of their state's timeout (`flow_table`'s SYN, established and
/// closing timeouts), non-TCP flows in that of their idle timeout (their pattern rule's,
/// or `flow_table`'s). Each base class `c` is a pair of table classes with its timeout:
/// `2c` holds its assured flows, `2c + 1` its unassured ones, and the table evicts from
/// the odd classes first (see the module docs).
///
/// A reload that changes a timeout ([`retime`](Self::retime)) gives the new value a class
/// (one no flow may be in any more, or a new pair appended: no flow is renumbered) and
/// leaves the open flows where they are; [`move_step`](Self::move_step), called between
/// bursts, then moves them to the classes of their new timeouts a bounded number of slots
/// at a time, so a reload never holds a worker for a pass over the table. Until the pass
/// reaches it a flow keeps its old timeout, unless its TCP state changes first (a
/// packet that changes the state names the class of the new state's timeout).
///
/// A reload that changes the capacity ([`resize`](Self::resize)) gives the worker a new
/// table the same way: new flows go into it at once, open ones move from the old table
/// when [`find`](Self::find) meets them there or the move reaches them.
pub struct FlowTable {
    pub table: LruTable<FlowKey, Flow>,
    /// Each base class's timeout (distinct).
    timeouts: Vec<u64>,
    /// The base class of each [`TcpState`]'s timeout, by state (`None`: `flow_table`'s
    /// idle timeout).
    tcp: [u8; 4],
    /// The base class of each pattern rule's idle timeout, by rule.
    rules: Vec<u8>,
    /// The timeouts flows may have: those the classes above name and, while a move pass
    /// is due, those of the reloads before it. The classes of the other values hold no
    /// flow, and a reload may give them new values.
    held: Vec<u64>,
    /// Where the move pass goes on; `None` when none is due.
    pass: Option<usize>,
    /// While a resize is under way ([`resize`](Self::resize)): the table before it, whose
    /// flows move into `table`, and the slot the move goes on from.
    old: Option<(Box<LruTable<FlowKey, Flow>>, usize)>,
    /// The old table once every flow has left it, for the owner to free where freeing
    /// (unmapping its memory: milliseconds for 1M flows) holds up no packet
    /// ([`take_retired`](Self::take_retired)); freed here otherwise, at the next resize.
    retired: Option<Box<LruTable<FlowKey, Flow>>>,
    /// Resizes so far: a walk over the slots started before the latest one walks
    /// another table ([`resizes`](Self::resizes)).
    resizes: u64,
}

/// A step of a resize's move handles `max / RESIZE_SLOWER` slots of the move pass's `max`:
/// each flow it moves is an insert into the new table (whose memory is touched for the
/// first time) and a removal from the old one.
const RESIZE_SLOWER: usize = 8;

/// The distinct timeouts of a flow table for `conf` and pattern rules with idle timeouts
/// `rule_idle_ns`: TCP's three, `conf.idle_ns`, then each rule's, each when not seen
/// before (a file may list up to 65534 rules: a set keeps this linear).
pub fn distinct_timeouts(conf: &FlowTableConf, rule_idle_ns: &[u64]) -> Vec<u64> {
    let mut seen = hashbrown::HashSet::new();
    let all = [
        conf.tcp_syn_ns,
        conf.tcp_established_ns,
        conf.tcp_closing_ns,
        conf.idle_ns,
    ];
    (all.iter().chain(rule_idle_ns))
        .copied()
        .filter(|&t| seen.insert(t))
        .collect()
}

/// Every table class's timeout, in class order: each base class's twice, assured then
/// unassured.
fn class_timeouts(base: &[u64]) -> Vec<u64> {
    base.iter().flat_map(|&t| [t, t]).collect()
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

/// Puts flow `f` (key `k`, last seen at `seen`), taken out of a resized table's old one,
/// into `table` at `now`, in the class of its timeout by the maps `tcp` and `rules`;
/// `gone` is given the key and value of a flow it evicts. Its handle.
#[allow(clippy::too_many_arguments)]
fn move_in(
    table: &mut LruTable<FlowKey, Flow>,
    tcp: &[u8; 4],
    rules: &[u8],
    k: FlowKey,
    mut f: Flow,
    seen: u64,
    now: u64,
    mut gone: impl FnMut(&FlowKey, &Flow),
) -> Handle {
    f.class = table_class(base_of(tcp, rules, f.tcp(), f.owner), f.assured());
    match table.insert_seen(k, f, f.class, seen, now) {
        Inserted::Fresh(h) => h,
        Inserted::Evicted(h, ek, e) => {
            gone(&ek, &e);
            h
        }
    }
}

/// The base class of a flow in TCP state `s` owned by `owner`, from a table's maps.
#[inline]
fn base_of(tcp: &[u8; 4], rules: &[u8], s: TcpState, owner: Owner) -> u8 {
    match (s, owner) {
        (TcpState::None, Owner::Rule(i)) => rules.get(usize::from(i)).copied().unwrap_or(tcp[0]),
        (s, _) => tcp[s as usize],
    }
}

impl FlowTable {
    /// A table for `conf.capacity` flows; `rule_idle_ns` lists the idle timeouts that
    /// pattern rules ask for, by rule.
    ///
    /// # Panics
    /// If the timeouts make more than [`MAX_TIMEOUTS`] distinct values (the pipeline
    /// refuses more).
    pub fn new(conf: &FlowTableConf, rule_idle_ns: &[u64]) -> Self {
        let timeouts = distinct_timeouts(conf, rule_idle_ns);
        assert!(timeouts.len() <= MAX_TIMEOUTS, "too many timeouts");
        let classes = class_timeouts(&timeouts);
        let mut table = LruTable::new(conf.capacity, &classes);
        table.set_evict_first(&unassured(classes.len()));
        let mut t = FlowTable {
            table,
            held: timeouts.clone(),
            timeouts,
            tcp: [0; 4],
            rules: Vec::new(),
            pass: None,
            old: None,
            retired: None,
            resizes: 0,
        };
        (t.tcp, t.rules) = t.maps(conf, rule_idle_ns);
        t
    }

    /// The base classes of the TCP states and the rules for `conf` and `rule_idle_ns`
    /// (each value must have a class).
    fn maps(&self, conf: &FlowTableConf, rule_idle_ns: &[u64]) -> ([u8; 4], Vec<u8>) {
        let of = |ns: u64| {
            let c = self.timeouts.iter().position(|&t| t == ns);
            debug_assert!(c.is_some(), "{ns} ns has no class");
            c.unwrap_or(0) as u8
        };
        (
            [
                of(conf.idle_ns),
                of(conf.tcp_syn_ns),
                of(conf.tcp_established_ns),
                of(conf.tcp_closing_ns),
            ],
            rule_idle_ns.iter().map(|&ns| of(ns)).collect(),
        )
    }

    /// Takes the timeouts of `conf` and `rule_idle_ns` (a reload, the rules those of the
    /// table's pipeline grown), at `now`. Every value gets a class: one it had, one whose
    /// value no flow may have any more, or a new one. New flows go into the classes of the
    /// new values at once; when the timeout of flows already in the table changed (a TCP
    /// state's, `flow_table`'s idle timeout or a rule's), a move pass is due
    /// ([`move_step`](Self::move_step)) and `Ok(true)` says so. An error, changing nothing,
    /// when the timeouts the flows may have had and those of the new pipeline are more
    /// than [`MAX_TIMEOUTS`] distinct values even after the pass (or resize) of an earlier
    /// reload is finished (which this then does at once; `gone` is given the key and value
    /// of each flow a resize evicts).
    pub fn retime(
        &mut self,
        conf: &FlowTableConf,
        rule_idle_ns: &[u64],
        now: u64,
        mut gone: impl FnMut(&FlowKey, &Flow),
    ) -> Result<bool, String> {
        let want = distinct_timeouts(conf, rule_idle_ns);
        let timeouts = match self.classes_for(&want) {
            Some(t) => t,
            // The values of an unfinished pass take classes: finish it, and try again.
            None if self.moving() => {
                while self.moving() {
                    self.move_step(usize::MAX, now, &mut gone);
                }
                self.classes_for(&want)
                    .ok_or_else(|| too_many(&self.held, &want))?
            }
            None => return Err(too_many(&self.held, &want)),
        };
        self.table.set_timeouts(&class_timeouts(&timeouts));
        self.table.set_evict_first(&unassured(self.table.classes()));
        self.timeouts = timeouts;
        let (tcp, rules) = self.maps(conf, rule_idle_ns);
        let moves = tcp != self.tcp || (self.rules.iter().zip(&rules)).any(|(a, b)| a != b);
        self.tcp = tcp;
        self.rules = rules;
        for t in want {
            if !self.held.contains(&t) {
                self.held.push(t);
            }
        }
        if moves {
            // From the start again: flows already passed may have to move again.
            self.pass = Some(0);
        } else if self.pass.is_none() {
            self.held = self.named();
        }
        Ok(moves)
    }

    /// The timeouts the table's maps name.
    fn named(&self) -> Vec<u64> {
        let mut v: Vec<u64> = Vec::new();
        for &c in self.tcp.iter().chain(&self.rules) {
            let t = self.timeouts[usize::from(c)];
            if !v.contains(&t) {
                v.push(t);
            }
        }
        v
    }

    /// The base classes' timeouts once every value of `want` has a class: a class keeps
    /// its value, or takes a wanted one when no flow may be in it and its value is not
    /// wanted; more are appended. `None` when that makes more than [`MAX_TIMEOUTS`].
    fn classes_for(&self, want: &[u64]) -> Option<Vec<u64>> {
        let mut timeouts = self.timeouts.clone();
        for &t in want {
            if timeouts.contains(&t) {
                continue;
            }
            match (timeouts.iter()).position(|v| !self.held.contains(v) && !want.contains(v)) {
                Some(p) => timeouts[p] = t,
                None if timeouts.len() < MAX_TIMEOUTS => timeouts.push(t),
                None => return None,
            }
        }
        Some(timeouts)
    }

    /// Goes on with the move pass a reload started ([`retime`](Self::retime)): at most
    /// `max` slots, at `now` (call between bursts, like expiry); returns how many flows
    /// it moved. A no-op when no pass is due.
    pub fn move_step(&mut self, max: usize, now: u64, gone: impl FnMut(&FlowKey, &Flow)) -> usize {
        if self.old.is_some() {
            return self.resize_step((max / RESIZE_SLOWER).max(1), now, gone);
        }
        let Some(from) = self.pass else {
            return 0;
        };
        let (tcp, rules) = (&self.tcp, &self.rules[..]);
        let mut moved = 0;
        self.pass = self.table.move_entries(from, max, now, |_, f, c| {
            let n = table_class(base_of(tcp, rules, f.tcp(), f.owner), f.assured());
            if n != c {
                f.class = n;
                moved += 1;
            }
            n
        });
        if self.pass.is_none() {
            // Every flow is in the class of its timeout: the others' classes are free.
            self.held = self.named();
        }
        moved
    }

    /// Whether a move pass, or the move of a resize, is due.
    pub fn moving(&self) -> bool {
        self.pass.is_some() || self.old.is_some()
    }

    /// Whether a resize's move is under way.
    pub fn resizing(&self) -> bool {
        self.old.is_some()
    }

    /// How many resizes the table has had: slot positions of [`table`](Self::table) from
    /// before the latest one name other flows. A walk over its slots that must see each
    /// flow once waits while [`resizing`](Self::resizing) (flows still in the old table,
    /// or moving behind the walk) and starts again after a resize.
    pub fn resizes(&self) -> u64 {
        self.resizes
    }

    /// Gives the table room for `capacity` flows (a reload), at `now`: a new table takes
    /// new flows at once, and the open flows move into it, each when a packet of it finds
    /// it in the old table ([`find`](Self::find)) or when [`move_step`](Self::move_step)
    /// reaches it, keeping its last-seen time and taking the class of its timeout (the
    /// move pass of a reload before is done by the same move). Both tables' memory is
    /// held until the move is done. A resize while one is under way finishes that one
    /// first (at once). A table smaller than the open flows evicts while they move in
    /// (`gone` is given the key and value of each flow evicted).
    pub fn resize(&mut self, capacity: usize, now: u64, mut gone: impl FnMut(&FlowKey, &Flow)) {
        if self.old.is_some() {
            self.resize_step(usize::MAX, now, &mut gone);
        }
        let mut table = LruTable::new(capacity, &class_timeouts(&self.timeouts));
        table.set_evict_first(&unassured(table.classes()));
        let old = std::mem::replace(&mut self.table, table);
        self.old = Some((Box::new(old), 0));
        self.resizes += 1;
        // The new table is empty: its flows will come in the classes of their timeouts.
        self.pass = None;
        self.held = self.named();
    }

    /// Moves the flows of `max` slots of the old table into the new one (see
    /// [`resize`](Self::resize)); returns how many.
    fn resize_step(
        &mut self,
        max: usize,
        now: u64,
        mut gone: impl FnMut(&FlowKey, &Flow),
    ) -> usize {
        let Some((mut old, from)) = self.old.take() else {
            return 0;
        };
        let (tcp, rules, table) = (&self.tcp, &self.rules[..], &mut self.table);
        let mut moved = 0;
        let next = old.drain_step(from, max, |k, f, _, seen| {
            move_in(table, tcp, rules, k, f, seen, now, &mut gone);
            moved += 1;
        });
        match next {
            Some(at) => self.old = Some((old, at)),
            None => {
                self.retired = Some(old);
                // Every flow is in the new table, in the class of its timeout.
                if self.pass.is_none() {
                    self.held = self.named();
                }
            }
        }
        moved
    }

    /// The table a finished resize emptied, if it was not taken yet: for the caller to
    /// free elsewhere (see [`resize`](Self::resize)).
    pub fn take_retired(&mut self) -> Option<Box<LruTable<FlowKey, Flow>>> {
        self.retired.take()
    }

    /// Finds `key` (whose hash in [`table`](Self::table) is `hash`); while a resize is
    /// under way, a flow still in the old table is moved into the new one first (`gone`
    /// is given the key and value of a flow that evicts, in a new table smaller than the
    /// open flows).
    pub fn find(
        &mut self,
        key: &FlowKey,
        hash: u64,
        now: u64,
        gone: impl FnMut(&FlowKey, &Flow),
    ) -> Option<Handle> {
        let h = self.table.find_hashed(key, hash);
        if h.is_some() {
            return h;
        }
        let (old, _) = self.old.as_mut()?;
        let o = old.find(key)?;
        let (f, seen) = (*old.get(o), old.last_seen(o));
        old.remove(o);
        let (tcp, rules) = (&self.tcp, &self.rules[..]);
        Some(move_in(
            &mut self.table,
            tcp,
            rules,
            *key,
            f,
            seen,
            now,
            gone,
        ))
    }

    /// Expires flows idle past their timeouts at `now`, at most `max` (see
    /// [`LruTable::expire`]), in both tables while a resize is under way; `f` is given
    /// each one's key and value.
    pub fn expire(&mut self, now: u64, max: usize, mut f: impl FnMut(&FlowKey, &Flow)) -> usize {
        let mut n = self.table.expire(now, max, |k, v| f(k, v));
        if let Some((old, _)) = self.old.as_mut() {
            n += old.expire(now, max.saturating_sub(n), |k, v| f(k, v));
        }
        n
    }

    /// Open flows (in both tables while a resize is under way).
    pub fn len(&self) -> usize {
        self.table.len() + self.old.as_ref().map_or(0, |(o, _)| o.len())
    }

    /// True when no flow is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The base class of a new flow in TCP state `s` owned by `owner`: its state's
    /// timeout's for TCP, otherwise its rule's idle timeout's or `flow_table`'s.
    #[inline]
    pub fn base_class_of(&self, s: TcpState, owner: Owner) -> u8 {
        base_of(&self.tcp, &self.rules, s, owner)
    }

    /// The table class of a TCP flow in state `s`, assured or not (the hit path's, when
    /// a packet changes the state).
    #[inline]
    pub fn tcp_class(&self, s: TcpState, assured: bool) -> u8 {
        table_class(self.tcp[s as usize], assured)
    }

    /// The base class whose timeout is `ns`, if the table has one.
    pub fn class_of_timeout(&self, ns: u64) -> Option<u8> {
        self.timeouts.iter().position(|&t| t == ns).map(|c| c as u8)
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

/// The error of a reload whose timeouts do not fit.
fn too_many(held: &[u64], want: &[u64]) -> String {
    let mut all = held.to_vec();
    all.extend(want.iter().filter(|t| !held.contains(t)));
    format!(
        "the timeouts of the open flows and of the new pipeline make {} distinct values; \
         at most {MAX_TIMEOUTS}",
        all.len()
    )
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

    /// The base class of timeout `ns` (the test's values all have one).
    fn base(t: &FlowTable, ns: u64) -> u8 {
        t.class_of_timeout(ns).expect("a class")
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
        let (c30, c60) = (base(&t, 30 * S), base(&t, 60 * S));
        let est = t.base_class_of(TcpState::Established, Owner::Other);
        assert_eq!(est, base(&t, conf.tcp_established_ns));
        assert_eq!(
            (t.base_class_of(TcpState::None, Owner::Rule(0))),
            c30,
            "the rule's"
        );
        assert_eq!(
            (t.base_class_of(TcpState::None, Owner::Service(0))),
            c60,
            "flow_table's"
        );
        let flow = Flow::default;
        for (n, base) in [(1, c30), (2, c60), (3, est)] {
            t.table.insert(key(n), flow(), t.class(base, true), 0);
        }
        assert_eq!(t.class_of_timeout(45 * S), None);
        let classes = t.table.classes();
        assert_eq!(
            t.retime(&conf, &[30 * S, 45 * S], 0, |_, _| {}),
            Ok(false),
            "no move"
        );
        assert!(!t.moving());
        assert_eq!(
            t.table.classes(),
            classes + 2,
            "a base class: two table classes"
        );
        let c45 = base(&t, 45 * S);
        assert_eq!(t.base_class_of(TcpState::None, Owner::Rule(1)), c45);
        let syn = t.base_class_of(TcpState::Syn, Owner::Other);
        assert!(![c30, c60, est, syn].contains(&c45));
        assert_eq!((base(&t, 30 * S), base(&t, 60 * S)), (c30, c60));
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

    /// A flow of `rule` (non-TCP, or established TCP), created at 10 s in the class the
    /// table names for it.
    fn add(t: &mut FlowTable, n: u8, rule: u16, tcp: TcpState, assured: bool) {
        let mut f = Flow::new(Target::Gateway, Owner::Rule(rule), [0; 6], 0, false, tcp, 0);
        if assured {
            f.mark(true);
            f.mark(false);
            f.mark(true);
        }
        assert_eq!(f.assured(), assured);
        f.class = t.class(t.base_class_of(tcp, f.owner), assured);
        t.table.insert(key(n), f, f.class, 10 * S);
    }

    /// The class of flow `n`, which its value and the table agree on.
    fn class_of(t: &FlowTable, n: u8) -> u8 {
        let h = t.table.find(&key(n)).expect("live");
        assert_eq!(
            t.table.get(h).class,
            t.table.class(h),
            "value and table agree"
        );
        t.table.class(h)
    }

    /// A reload that changes the idle timeout of flows (their rule's) gives new flows
    /// the class of the new value at once and moves the open ones there in steps,
    /// keeping their last-seen time and assured mark; a class no flow may be in any more
    /// (not before the pass is done) is given to a new value at a later reload.
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
        let none = TcpState::None;
        add(&mut t, 1, 0, none, true);
        add(&mut t, 2, 1, none, false);
        add(&mut t, 3, 1, none, true);
        add(&mut t, 4, 1, TcpState::Established, false);
        let c30 = base(&t, 30 * S);
        // Rule 0 now at 60 s, rule 1 at 20 s (a new value: a new class; the 30 s one
        // still holds rule 0's flow until the pass moves it).
        assert_eq!(
            t.retime(&conf, &[60 * S, 20 * S], 11 * S, |_, _| {}),
            Ok(true)
        );
        assert!(t.moving());
        assert_eq!(t.table.classes(), classes + 2);
        let (c20, c60) = (base(&t, 20 * S), base(&t, 60 * S));
        assert_eq!(t.base_class_of(none, Owner::Rule(0)), c60, "new flows");
        assert_eq!(t.base_class_of(none, Owner::Rule(1)), c20, "new flows");
        assert_eq!(class_of(&t, 1), t.class(c30, true), "not moved yet");
        // Rules added while the pass is due: 90 s and then 100 s may not take the 30 s
        // class, which holds flows until the pass is done.
        assert_eq!(
            t.retime(&conf, &[60 * S, 20 * S, 90 * S], 11 * S, |_, _| {}),
            Ok(false)
        );
        let rules = [60 * S, 20 * S, 90 * S, 100 * S];
        assert_eq!(t.retime(&conf, &rules, 11 * S, |_, _| {}), Ok(false));
        assert_eq!(t.table.classes(), classes + 6);
        let mut moved = 0;
        let mut steps = 0;
        while t.moving() {
            moved += t.move_step(3, 11 * S, |_, _| {});
            steps += 1;
        }
        assert_eq!((moved, steps), (3, 2), "4 slots, 3 a step; TCP stays");
        assert_eq!(class_of(&t, 1), t.class(c60, true));
        assert_eq!(class_of(&t, 2), t.class(c20, false));
        assert_eq!(class_of(&t, 3), t.class(c20, true));
        let est = t.base_class_of(TcpState::Established, Owner::Other);
        assert_eq!(class_of(&t, 4), t.class(est, false), "TCP stays");
        // Seen at 10 s: rule 1's flows go 20 s after that, rule 0's 60 s after.
        assert_eq!(gone(&mut t, 29 * S), Vec::<u8>::new());
        assert_eq!(gone(&mut t, 32 * S), vec![2, 3]);
        assert_eq!(gone(&mut t, 69 * S), Vec::<u8>::new());
        assert_eq!(gone(&mut t, 74 * S), vec![1]);
        // The pass is done: a rule added now takes the class 30 s had, which no flow may
        // be in any more. Nothing moves.
        add(&mut t, 5, 1, none, true);
        assert_eq!(
            t.retime(
                &conf,
                &[60 * S, 20 * S, 90 * S, 100 * S, 120 * S],
                75 * S,
                |_, _| {}
            ),
            Ok(false)
        );
        assert_eq!(
            t.table.classes(),
            classes + 6,
            "the free class was taken again"
        );
        assert_eq!(base(&t, 120 * S), c30);
        assert_eq!(class_of(&t, 5), t.class(c20, true));
    }

    /// A changed TCP timeout: new transitions go to the class of the new value at once
    /// (the hit path names it), and the pass moves the open flows of that state.
    #[test]
    fn tcp_flows_move_to_the_class_of_their_new_timeout() {
        let conf = FlowTableConf {
            capacity: 8,
            ..FlowTableConf::default()
        };
        let mut t = FlowTable::new(&conf, &[]);
        add(&mut t, 1, 0, TcpState::Established, true);
        add(&mut t, 2, 0, TcpState::Syn, false);
        let (syn, est) = (class_of(&t, 2), class_of(&t, 1));
        let longer = FlowTableConf {
            tcp_established_ns: 600 * S,
            ..conf
        };
        assert_eq!(t.retime(&longer, &[], 11 * S, |_, _| {}), Ok(true));
        let c600 = base(&t, 600 * S);
        assert_eq!(
            t.tcp_class(TcpState::Established, true),
            t.class(c600, true)
        );
        assert_eq!(t.tcp_class(TcpState::Syn, false), syn, "SYN's timeout kept");
        assert_eq!(class_of(&t, 1), est, "not moved yet");
        assert_eq!(t.move_step(usize::MAX, 11 * S, |_, _| {}), 1);
        assert_eq!(class_of(&t, 1), t.class(c600, true));
        assert_eq!(class_of(&t, 2), syn);
        // Seen at 10 s: the established flow goes at 600 s after that, not 300.
        assert_eq!(gone(&mut t, 21 * S), vec![2]);
        assert_eq!(gone(&mut t, 320 * S), Vec::<u8>::new());
        assert_eq!(gone(&mut t, 648 * S), vec![1]);
    }

    /// A resize under open flows: the new table takes new flows at once; an open flow
    /// moves into it when it is looked up or when the pass reaches it, keeping its
    /// last-seen time and taking its timeout's class (here a timeout changed just before
    /// the resize: the move does the pass's work too); both tables expire. A smaller
    /// table evicts as a full table does.
    #[test]
    fn a_resize_moves_the_open_flows_into_the_new_table() {
        let conf = FlowTableConf {
            capacity: 8,
            ..FlowTableConf::default()
        };
        let mut t = FlowTable::new(&conf, &[30 * S]);
        for n in 1..=3 {
            add(&mut t, n, 0, TcpState::None, n != 3);
        }
        for n in 4..=6 {
            add(&mut t, n, 0, TcpState::Established, n != 6);
        }
        assert_eq!(t.retime(&conf, &[20 * S], 11 * S, |_, _| {}), Ok(true));
        let none = |_: &FlowKey, _: &Flow| panic!("no eviction");
        t.resize(64, 11 * S, none);
        assert!(t.moving());
        assert_eq!((t.len(), t.table.len(), t.table.capacity()), (6, 0, 64));
        // A lookup moves flow 1 at once.
        let k = key(1);
        let h = t.find(&k, t.table.hash(&k), 11 * S, none).expect("found");
        assert_eq!((t.table.len(), t.table.last_seen(h)), (1, 10 * S));
        assert_eq!(class_of(&t, 1), t.class(base(&t, 20 * S), true));
        // The rest in steps of two slots (the old table used 6): a resize's step is an
        // eighth of the pass's.
        let (mut moved, mut steps) = (0, 0);
        while t.moving() {
            moved += t.move_step(2 * RESIZE_SLOWER, 11 * S, none);
            steps += 1;
        }
        assert_eq!((moved, steps, t.len(), t.table.len()), (5, 3, 6, 6));
        assert!(
            t.take_retired().is_some(),
            "the emptied table, to free elsewhere"
        );
        for n in 1..=6 {
            let h = t.table.find(&key(n)).expect("in the new table");
            let f = *t.table.get(h);
            assert_eq!(t.table.last_seen(h), 10 * S);
            let want = t.class(t.base_class_of(f.tcp(), f.owner), f.assured());
            assert_eq!(class_of(&t, n), want);
        }
        // Seen at 10 s: the rule's flows go 20 s later, at most a grain late.
        assert_eq!(gone(&mut t, 29 * S), Vec::<u8>::new());
        assert_eq!(gone(&mut t, 32 * S), vec![1, 2, 3]);
        // Both tables expire while a resize is under way.
        for n in 7..=9 {
            add(&mut t, n, 0, TcpState::None, true);
        }
        t.resize(4, 33 * S, none);
        assert_eq!(
            t.expire(60 * S, usize::MAX, |_, _| {}),
            3,
            "the old table's"
        );
        while t.moving() {
            t.move_step(usize::MAX, 60 * S, none);
        }
        assert_eq!((t.len(), t.table.capacity()), (3, 4));
        // Smaller than the open flows: those that do not fit are evicted as they move.
        add(&mut t, 10, 0, TcpState::Established, true);
        let mut evicted = 0;
        t.resize(2, 61 * S, |_, _| evicted += 1);
        while t.moving() {
            t.move_step(1, 61 * S, |_, _| evicted += 1);
        }
        assert_eq!(
            (evicted, t.len(), t.table.len()),
            (2, 2, 2),
            "4 flows, room for 2"
        );
    }

    /// Too many timeouts between the open flows' and the new ones: refused, changing
    /// nothing; with a pass due, it is finished first, which frees the classes of the
    /// values no flow has any more.
    #[test]
    fn too_many_timeouts_are_refused() {
        let conf = FlowTableConf::default();
        // TCP's two values (10 s, 300 s), flow_table's 60 s, and the rules'.
        let rules = |from: u64, n: u64| -> Vec<u64> { (from..from + n).map(|i| i * S).collect() };
        let mut t = FlowTable::new(&conf, &rules(1000, 123));
        let e = t
            .retime(&conf, &rules(2000, 123), 0, |_, _| {})
            .unwrap_err();
        assert!(e.contains("make 249 distinct values; at most 127"), "{e}");
        assert_eq!(t.class_of_timeout(2000 * S), None);
        assert!(t.class_of_timeout(1000 * S).is_some());
        // 3 + 61 values; then 61 others (a pass moves the flows); then 61 more while the
        // pass is due: the first 61 are free once it is done.
        let mut t = FlowTable::new(&conf, &rules(1000, 61));
        add(&mut t, 1, 0, TcpState::None, false);
        assert_eq!(t.retime(&conf, &rules(2000, 61), S, |_, _| {}), Ok(true));
        let c1000 = base(&t, 1000 * S);
        assert_eq!(class_of(&t, 1), t.class(c1000, false), "not moved yet");
        assert_eq!(t.retime(&conf, &rules(3000, 61), S, |_, _| {}), Ok(true));
        assert_eq!(class_of(&t, 1), t.class(base(&t, 2000 * S), false), "moved");
        assert_eq!(base(&t, 3000 * S), c1000, "a freed class");
        assert!(t.moving(), "to the 3000 s class, next");
        t.move_step(usize::MAX, S, |_, _| {});
        assert_eq!(class_of(&t, 1), t.class(c1000, false));
    }

    proptest::proptest! {
        // Reloads that change any timeout (TCP's, flow_table's idle, a rule's), add
        // rules or resize the table, at random moments between flows created, changing
        // TCP state, move steps and expiry: a class with flows never changes its timeout (so a flow
        // always has a timeout it had or has now), a flow's value and the table agree
        // on its class, and once the pass is done every flow is in the class of its
        // timeout.
        #[test]
        fn reloads_keep_every_flow_in_a_class_of_its_old_or_new_timeout(
            ops in proptest::collection::vec((0u8..8, 0u8..8, 0u8..8), 1..200),
        ) {
            let vals = [10, 20, 30, 45, 60, 300, 600, 900].map(|v: u64| v * S);
            let mut conf = FlowTableConf { capacity: 48, ..FlowTableConf::default() };
            let mut rules = vec![30 * S, 60 * S];
            let mut t = FlowTable::new(&conf, &rules);
            let mut now = 0;
            let mut n = 0u8;
            let timeouts = |t: &FlowTable| {
                let mut v = Vec::new();
                t.table.visit(0, usize::MAX, |k, _, _, timeout| v.push((*k, timeout)));
                v
            };
            for (op, a, b) in ops {
                now += S;
                match op {
                    0 | 1 if t.len() < 48 => {
                        let tcp = [TcpState::None, TcpState::Syn, TcpState::Established, TcpState::Closing][usize::from(b % 4)];
                        let owner = if a % 3 == 0 {
                            Owner::Service(0)
                        } else {
                            Owner::Rule(u16::from(a) % rules.len() as u16)
                        };
                        let mut f = Flow::new(Target::Gateway, owner, [0; 6], 0, false, tcp, 0);
                        if b >= 4 {
                            f.mark(true);
                            f.mark(false);
                            f.mark(true);
                        }
                        f.class = t.class(t.base_class_of(tcp, owner), f.assured());
                        n = n.wrapping_add(1);
                        let mut k = key(n);
                        k.b[0] = a;
                        let hash = t.table.hash(&k);
                        if t.find(&k, hash, now, |_, _| {}).is_none() {
                            t.table.insert(k, f, f.class, now);
                        }
                    }
                    2 => {
                        let v = vals[usize::from(b)];
                        match a {
                            0 => conf.tcp_syn_ns = v,
                            1 => conf.tcp_established_ns = v,
                            2 => conf.tcp_closing_ns = v,
                            3 => conf.idle_ns = v,
                            4 if rules.len() < 6 => rules.push(v),
                            _ => {
                                let i = usize::from(a) % rules.len();
                                rules[i] = v;
                            }
                        }
                        let before = timeouts(&t);
                        let r = t.retime(&conf, &rules, now, |_, _| {});
                        proptest::prop_assert!(r.is_ok());
                        proptest::prop_assert_eq!(timeouts(&t), before, "a class with flows kept its timeout");
                    }
                    3 => {
                        t.move_step(usize::from(b) + 1, now, |_, _| {});
                    }
                    4 => {
                        // A packet that closes a TCP flow: a new state, a new class.
                        let mut hit = None;
                        t.table.visit(0, usize::MAX, |k, f, _, _| {
                            if hit.is_none() && f.tcp() != TcpState::None && f.tcp() != TcpState::Closing {
                                hit = Some(*k);
                            }
                        });
                        if let Some(k) = hit {
                            let h = t.table.find(&k).unwrap();
                            let mut f = *t.table.get(h);
                            f.set_tcp(TcpState::Closing);
                            f.class = t.tcp_class(TcpState::Closing, f.assured());
                            *t.table.get_mut(h) = f;
                            t.table.touch_reclass(h, f.class, now);
                        }
                    }
                    5 => {
                        t.expire(now, usize::MAX, |_, _| {});
                    }
                    _ => t.resize(16 + usize::from(b) * 8, now, |_, _| {}),
                }
                let mut flows = Vec::new();
                t.table.visit(0, usize::MAX, |k, f, _, _| flows.push((*k, *f)));
                for (k, f) in flows {
                    let h = t.table.find(&k).unwrap();
                    proptest::prop_assert_eq!(f.class, t.table.class(h));
                    proptest::prop_assert_eq!(t.assured_class(f.class), f.assured());
                    if !t.moving() {
                        let want = t.class(t.base_class_of(f.tcp(), f.owner), f.assured());
                        proptest::prop_assert_eq!(f.class, want, "in its timeout's class");
                    }
                }
                // Each flow in one table only, all of them visited.
                let mut keys = Vec::new();
                t.table.visit(0, usize::MAX, |k, _, _, _| keys.push(*k));
                if let Some((old, _)) = &t.old {
                    old.visit(0, usize::MAX, |k, _, _, _| keys.push(*k));
                }
                let n = keys.len();
                keys.sort_unstable_by_key(|k| (k.a, k.b));
                keys.dedup();
                proptest::prop_assert_eq!((keys.len(), n), (t.len(), t.len()));
            }
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
