//! A fixed-capacity hash table with per-class LRU lists: the storage under flows and
//! fragment records.
//!
//! Layer: `flow`. Sized once at construction; `insert`, `get`, `touch`, `remove` and
//! `expire` never allocate and never rehash:
//!
//! - Entries live in two parallel slabs (`Vec`s allocated once, indexed by the same slot
//!   number). The *hot* slab holds what a hit reads or writes — the last-seen time, the
//!   key and the value — in one cache-line-aligned slot, so that for a key and value of
//!   up to 56 bytes (flows: [`HOT_SLOT_BYTES`](crate::flow::HOT_SLOT_BYTES) is asserted at compile time)
//!   a hit touches one line of it. The *cold* slab holds the timer-list links, the window,
//!   the class and the stored hash: read only on relink, expiry, eviction and removal.
//! - Each timeout class has a ring of [`WINDOWS`] doubly-linked lists, one per time window
//!   of `timeout / 16` (the *grain*), a coarse timer wheel. An entry sits in the list of
//!   the window it was last linked in; a touch only records the time, and relinks the
//!   entry (cold-slab writes at it and its neighbours: cache misses a hit cannot afford on
//!   every packet) only when its last-seen time has moved to a newer window, or on
//!   [`touch_reclass`](LruTable::touch_reclass) when the class changes. The caller of
//!   [`touch`](LruTable::touch) names the entry's current class (the flow value carries
//!   it), so a plain hit never reads the cold slab (checked in debug builds). So every entry's
//!   last touch lies in (or before) the window of its list, and `expire` can drop whole
//!   windows that ended more than `timeout` ago without looking at anything else: an
//!   entry expires between `timeout` and `timeout + grain` after it was last seen, in
//!   O(expired).
//! - The index is open addressing with linear probing over a power-of-two array of
//!   4-byte buckets at load factor ≤ 1/2, with backward-shift deletion. Unlike a
//!   tombstone scheme (hashbrown rehashes in place when tombstones use up its growth
//!   budget), deletion leaves no debris, so the table never rehashes. A bucket holds the
//!   slot number + 1 in its low bits (as many as the capacity needs) and a *tag* in the
//!   rest (high bits of the hash, independent of the bits that pick the home bucket: 11
//!   bits for 2M flows), so a probe almost never reads another key's hot slot (a false
//!   tag match costs a key compare, never a wrong answer). The index stays small — 4
//!   bytes per bucket — because on the 1M-flow benchmark, where every lookup misses the
//!   caches and the TLB, what a lookup costs follows the memory it spreads over (page
//!   walks) more than the number of lines it reads: an 8-byte-bucket index, or entries
//!   stored in place at load 1/2, were both measured slower. The low 32 bits of the
//!   hash, enough to find a bucket's home (the bucket array has at most 2^31 entries),
//!   are kept in the cold slab for deletion.
//! - Bursts: [`prefetch_bucket`](LruTable::prefetch_bucket) and then
//!   [`prefetch_slot`](LruTable::prefetch_slot) let a caller start the two cache misses
//!   of every lookup in a burst before it needs any of them; prefetches do not hold the
//!   CPU's reorder buffer the way loads do, so the misses of a whole burst overlap with
//!   each other and with parsing.
//! - When the slab is full, `insert` evicts the entry idle the longest in the classes
//!   named by [`set_evict_first`](LruTable::set_evict_first) (flows: those not assured
//!   yet), and only when they are all empty the entry idle the longest in any class (the
//!   oldest head), and reports it. A flood of new entries then replaces its own kind
//!   instead of the entries that matter.
//!
//! Hashing uses hashbrown's default (randomly seeded foldhash), so flow keys chosen by an
//! attacker cannot aim at one probe chain.

use core::hash::{BuildHasher, Hash};

const NIL: u32 = u32::MAX;

/// The class of a slot that holds no entry (classes are below 255).
const FREE: u8 = u8::MAX;

/// Windows per timeout class (the wheel's size): the 16 windows a timeout spans, the
/// current one, and slack so that windows awaiting expiry are never reused early.
pub const WINDOWS: usize = 20;

/// Windows per timeout.
const GRAINS: u64 = 16;

/// What a hit reads and writes, cache-line aligned.
#[repr(C, align(64))]
struct Hot<K, V> {
    last_seen: u64,
    key: K,
    val: V,
}

/// What only relink, expiry, eviction and removal read.
#[derive(Clone, Copy)]
struct Cold {
    /// Absolute window number the entry is linked in.
    window: u64,
    /// Low bits of the key's hash (the bucket array has at most 2^31 entries).
    hash: u32,
    prev: u32,
    next: u32,
    class: u8,
}

/// Bytes one entry's hot slot takes (a multiple of 64): one cache line when the key and
/// value fit in 56 bytes together.
pub const fn hot_slot_bytes<K, V>() -> usize {
    core::mem::size_of::<Hot<K, V>>()
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

struct Class {
    timeout: u64,
    grain: u64,
    /// The window the latest touch fell in, `[win_start, win_start + grain)`: lets a
    /// touch tell whether an entry changed windows without dividing.
    win_start: u64,
    /// Oldest window that may still hold entries.
    next_window: u64,
    lists: [List; WINDOWS],
}

impl Class {
    /// An empty class with timeout `t` (ns).
    fn new(t: u64) -> Class {
        Class {
            timeout: t,
            grain: (t / GRAINS).max(1),
            win_start: 0,
            next_window: 0,
            lists: [List {
                head: NIL,
                tail: NIL,
            }; WINDOWS],
        }
    }
}

/// A handle to a live entry (slab index); valid until that entry is removed.
pub type Handle = u32;

/// What `insert` did to make room.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted<K, V> {
    /// There was a free slot.
    Fresh(Handle),
    /// The table was full: the entry idle the longest was evicted to make room.
    Evicted(Handle, K, V),
}

/// The table. `K` is the key, `V` the value; classes are timeout classes.
pub struct LruTable<K, V> {
    hot: Vec<Hot<K, V>>,
    cold: Vec<Cold>,
    cap: usize,
    free: Vec<u32>,
    /// Open-addressing index: tag bits | (slot number + 1), 0 for an empty bucket.
    buckets: Vec<u32>,
    /// The bits of a bucket that hold the slot number + 1; the others hold the tag.
    slot_bits: u32,
    mask: usize,
    classes: Vec<Class>,
    /// Classes whose entries a full table evicts before any other's.
    evict_first: Vec<u8>,
    len: usize,
    /// Inserts and removals so far: a handle found before stays valid while this holds.
    changes: u64,
    hasher: hashbrown::DefaultHashBuilder,
}

impl<K: Hash + Eq + Copy + Default, V: Copy + Default> LruTable<K, V> {
    /// A table for `capacity` entries and one timeout class per entry of `timeouts` (ns).
    ///
    /// # Panics
    /// If `capacity` is 0 or above 2^30, or `timeouts` is empty or longer than 255.
    pub fn new(capacity: usize, timeouts: &[u64]) -> Self {
        assert!(capacity > 0 && capacity <= 1 << 30);
        assert!(!timeouts.is_empty() && timeouts.len() < 256);
        let buckets = (capacity * 2).next_power_of_two();
        // Nothing is written up front: slots are pushed into reserved capacity as they are
        // first used, and the zeroed bucket array comes from the allocator's fresh pages,
        // so a big table costs nothing until flows arrive.
        LruTable {
            hot: Vec::with_capacity(capacity),
            cold: Vec::with_capacity(capacity),
            cap: capacity,
            free: Vec::with_capacity(capacity),
            buckets: vec![0; buckets],
            slot_bits: (1u32 << (32 - (capacity as u32).leading_zeros())) - 1,
            mask: buckets - 1,
            classes: timeouts.iter().map(|&t| Class::new(t)).collect(),
            evict_first: Vec::new(),
            len: 0,
            changes: 0,
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }

    /// Makes a full table evict the entry idle the longest in `classes` while any of them
    /// holds one, before considering the other classes (by default all classes are equal).
    ///
    /// # Panics
    /// If a class is not one of the table's.
    pub fn set_evict_first(&mut self, classes: &[u8]) {
        assert!(classes.iter().all(|&c| (c as usize) < self.classes.len()));
        self.evict_first = classes.to_vec();
    }

    /// Gives the classes the timeouts `timeouts` (one per class, in class order, and more
    /// for classes to append). Only an empty class may change its timeout (a class whose
    /// entries should take another timeout is left as it is, and its entries are moved to
    /// a class with that timeout by [`move_entries`](Self::move_entries)). Allocates when
    /// classes are added; does not visit the entries.
    ///
    /// # Panics
    /// If `timeouts` has fewer entries than the table has classes, or 256 or more; in
    /// debug builds, if a class whose timeout changes holds an entry.
    pub fn set_timeouts(&mut self, timeouts: &[u64]) {
        assert!(timeouts.len() >= self.classes.len() && timeouts.len() < 256);
        for (cl, &t) in self.classes.iter_mut().zip(timeouts) {
            if cl.timeout != t {
                debug_assert!(
                    cl.lists.iter().all(|l| l.head == NIL),
                    "a class with entries keeps its timeout"
                );
                *cl = Class::new(t);
            }
        }
        let have = self.classes.len();
        self.classes
            .extend(timeouts[have..].iter().map(|&t| Class::new(t)));
    }

    /// Visits the live entries in slots `from..` in slot order, at most `max` slots (live
    /// or not), and moves each to the class `to` names from its key, value and current
    /// class (`to` may change the value), at `now`; returns the slot to go on from, or
    /// `None` when every slot has been visited. A moved entry keeps its last-seen time and
    /// expires as if it had always been in its new class, or at the next
    /// [`expire`](Self::expire) call when that class's timeout has already passed. Reads
    /// both slabs sequentially: bounded background work (a reload), not the packet path.
    ///
    /// # Panics
    /// If `to` names a class the table does not have.
    pub fn move_entries(
        &mut self,
        from: usize,
        max: usize,
        now: u64,
        mut to: impl FnMut(&K, &mut V, u8) -> u8,
    ) -> Option<usize> {
        let end = from.saturating_add(max).min(self.hot.len());
        for s in from..end {
            let c = self.cold[s].class;
            if c == FREE {
                continue;
            }
            let slot = &mut self.hot[s];
            let n = to(&slot.key, &mut slot.val, c);
            if n == c {
                continue;
            }
            assert!(usize::from(n) < self.classes.len(), "no class {n}");
            self.reach_back(n, now);
            self.unlink(s as u32);
            let seen = self.hot[s].last_seen;
            self.link(s as u32, n, seen);
        }
        (end < self.hot.len()).then_some(end)
    }

    /// Lets `class` take, at `now`, an entry last seen at any time (moved in from
    /// another class or table): an entry may be past the class's timeout, so its window
    /// must be one `expire` still visits. Windows before `expired` are wholly expired at
    /// `now` (see `expire`); the ring holds the timeout's windows and slack, so the lists
    /// from `expired - 1` on hold no other windows.
    fn reach_back(&mut self, class: u8, now: u64) {
        let cl = &mut self.classes[usize::from(class)];
        let expired = now.saturating_sub(cl.timeout) / cl.grain;
        cl.next_window = cl.next_window.min(expired.saturating_sub(1));
    }

    /// Inserts `key` (which must not be present) in timeout `class` at `now`, last seen
    /// at `seen` (at or before `now`): an entry moved in from another table, which
    /// expires as if it had always been here (at the next [`expire`](Self::expire) call
    /// when its timeout has already passed). Evicts as [`insert`](Self::insert) does.
    pub fn insert_seen(
        &mut self,
        key: K,
        val: V,
        class: u8,
        seen: u64,
        now: u64,
    ) -> Inserted<K, V> {
        self.reach_back(class, now);
        self.insert(key, val, class, seen)
    }

    /// Removes the live entries in slots `from..` in slot order, at most `max` slots
    /// (live or not), handing each to `f` with its class and last-seen time; returns the
    /// slot to go on from, or `None` when every slot has been visited (a table being
    /// emptied into another in bounded steps).
    pub fn drain_step(
        &mut self,
        from: usize,
        max: usize,
        mut f: impl FnMut(K, V, u8, u64),
    ) -> Option<usize> {
        let end = from.saturating_add(max).min(self.hot.len());
        for s in from..end {
            let class = self.cold[s].class;
            if class != FREE {
                let Hot {
                    last_seen,
                    key,
                    val,
                    ..
                } = self.hot[s];
                self.remove(s as u32);
                f(key, val, class, last_seen);
            }
        }
        (end < self.hot.len()).then_some(end)
    }

    /// How many classes the table has.
    pub fn classes(&self) -> usize {
        self.classes.len()
    }

    /// How many inserts and removals the table has seen: a handle found while this was
    /// `n` still names the same entry as long as it is `n`.
    #[inline]
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no entry is live.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The table's memory as `(start, bytes)` regions (the hot and cold slabs at full
    /// capacity, the index), e.g. to ask for huge pages: every lookup lands in them.
    pub fn memory(&self) -> [(*const u8, usize); 3] {
        [
            (
                self.hot.as_ptr().cast(),
                self.hot.capacity() * core::mem::size_of::<Hot<K, V>>(),
            ),
            (
                self.cold.as_ptr().cast(),
                self.cold.capacity() * core::mem::size_of::<Cold>(),
            ),
            (self.buckets.as_ptr().cast(), self.buckets.len() * 4),
        ]
    }

    /// The hash `key` is stored under (lets a burst compute it once).
    #[inline]
    pub fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Starts loading the bucket `hash` starts at into the cache (first stage of a burst
    /// lookup; see the module docs).
    #[inline]
    pub fn prefetch_bucket(&self, hash: u64) {
        prefetch_index::prefetch_index(&self.buckets, hash as usize & self.mask);
    }

    /// Second stage: finds the first bucket of `hash`'s probe chain whose tag matches,
    /// and starts loading the hot slot it names (the line a hit reads and writes).
    /// Touches only buckets; a wrong or missing candidate just wastes the prefetch.
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        let tag = self.tag_of(hash);
        let mut b = hash as usize & self.mask;
        loop {
            let e = self.buckets[b];
            if e == 0 {
                return;
            }
            if e & !self.slot_bits == tag {
                let s = (e & self.slot_bits) as usize;
                prefetch_index::prefetch_index(&self.hot, s.wrapping_sub(1));
                return;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// The tag bits a bucket stores for `hash`: from its high half, independent of the
    /// low bits that choose the home bucket.
    #[inline]
    fn tag_of(&self, hash: u64) -> u32 {
        (hash >> 32) as u32 & !self.slot_bits
    }

    /// Finds `key`.
    #[inline]
    pub fn find(&self, key: &K) -> Option<Handle> {
        self.find_hashed(key, self.hash(key))
    }

    /// Finds `key` whose hash is `hash`.
    #[inline]
    pub fn find_hashed(&self, key: &K, hash: u64) -> Option<Handle> {
        let tag = self.tag_of(hash);
        let mut b = hash as usize & self.mask;
        loop {
            let e = self.buckets[b];
            if e == 0 {
                return None;
            }
            let s = e & self.slot_bits;
            if e & !self.slot_bits == tag && self.hot[s as usize - 1].key == *key {
                return Some(s - 1);
            }
            b = (b + 1) & self.mask;
        }
    }

    /// The value of a live entry.
    #[inline]
    pub fn get(&self, h: Handle) -> &V {
        &self.hot[h as usize].val
    }

    /// The value of a live entry, mutably.
    #[inline]
    pub fn get_mut(&mut self, h: Handle) -> &mut V {
        &mut self.hot[h as usize].val
    }

    /// The key of a live entry.
    #[inline]
    pub fn key(&self, h: Handle) -> &K {
        &self.hot[h as usize].key
    }

    /// When a live entry was last seen.
    pub fn last_seen(&self, h: Handle) -> u64 {
        self.hot[h as usize].last_seen
    }

    /// The timeout class of a live entry.
    pub fn class(&self, h: Handle) -> u8 {
        self.cold[h as usize].class
    }

    /// Inserts `key` (which must not be present) in timeout `class`, seen at `now`.
    pub fn insert(&mut self, key: K, val: V, class: u8, now: u64) -> Inserted<K, V> {
        let hash = self.hash(&key);
        self.insert_hashed(key, hash, val, class, now)
    }

    /// [`insert`](Self::insert) with the hash already computed.
    pub fn insert_hashed(
        &mut self,
        key: K,
        hash: u64,
        val: V,
        class: u8,
        now: u64,
    ) -> Inserted<K, V> {
        let mut evicted = None;
        if self.free.is_empty() && self.hot.len() < self.cap {
            self.free.push(self.hot.len() as u32);
            self.hot.push(Hot {
                last_seen: 0,
                key: K::default(),
                val: V::default(),
            });
            self.cold.push(Cold {
                window: 0,
                hash: 0,
                prev: NIL,
                next: NIL,
                class: FREE,
            });
        }
        if self.free.is_empty() {
            let Some(victim) = self.victim() else {
                unreachable!("a full table has entries")
            };
            let (k, v) = (self.hot[victim as usize].key, self.hot[victim as usize].val);
            self.remove(victim);
            evicted = Some((k, v));
        }
        let Some(s) = self.free.pop() else {
            unreachable!("a slot was freed above")
        };
        {
            let slot = &mut self.hot[s as usize];
            slot.key = key;
            slot.val = val;
            slot.last_seen = now;
        }
        self.cold[s as usize].hash = hash as u32;
        let mut b = hash as usize & self.mask;
        while self.buckets[b] != 0 {
            b = (b + 1) & self.mask;
        }
        self.buckets[b] = self.tag_of(hash) | (s + 1);
        self.link(s, class, now);
        self.len += 1;
        self.changes += 1;
        match evicted {
            None => Inserted::Fresh(s),
            Some((k, v)) => Inserted::Evicted(s, k, v),
        }
    }

    /// Marks `h`, which is in timeout `class`, seen at `now`. Reads and writes the hot
    /// slot only, unless the last-seen time entered a newer window (then it relinks).
    /// To move an entry to another class use [`touch_reclass`](Self::touch_reclass).
    #[inline(always)]
    pub fn touch(&mut self, h: Handle, class: u8, now: u64) {
        debug_assert_eq!(self.cold[h as usize].class, class, "touch in another class");
        let cl = &mut self.classes[class as usize];
        // One division per class and window, instead of two per touch.
        if now < cl.win_start || now - cl.win_start >= cl.grain {
            cl.win_start = now - now % cl.grain;
        }
        let slot = &mut self.hot[h as usize];
        if now > slot.last_seen {
            // last_seen < now, and now lies in the window at win_start: the entry
            // changed windows exactly when it was last seen before that window.
            let moved = slot.last_seen < cl.win_start;
            slot.last_seen = now;
            if moved {
                self.relink(h, class, now);
            }
        }
    }

    /// Moves `h` to the list of `class` for `now` (out of line: a hit seldom needs it).
    #[cold]
    #[inline(never)]
    fn relink(&mut self, h: Handle, class: u8, now: u64) {
        self.unlink(h);
        self.link(h, class, now);
    }

    /// Marks `h` seen at `now` in timeout `class` (which may differ from its current
    /// class, e.g. when a TCP flow becomes established). Relinks only when the clock
    /// entered a newer window or the class changed.
    pub fn touch_reclass(&mut self, h: Handle, class: u8, now: u64) {
        let slot = &mut self.hot[h as usize];
        if now > slot.last_seen {
            slot.last_seen = now;
        }
        let w = slot.last_seen / self.classes[class as usize].grain;
        let c = &self.cold[h as usize];
        if c.class != class || w != c.window {
            self.unlink(h);
            self.link(h, class, now);
        }
    }

    /// Removes a live entry.
    pub fn remove(&mut self, h: Handle) {
        self.unlink(h);
        // Find the bucket holding h, then backward-shift the cluster after it.
        let mut b = self.cold[h as usize].hash as usize & self.mask;
        while self.buckets[b] & self.slot_bits != h + 1 {
            b = (b + 1) & self.mask;
        }
        let mut hole = b;
        let mut j = (hole + 1) & self.mask;
        loop {
            let e = self.buckets[j];
            if e == 0 {
                break;
            }
            let home = self.cold[(e & self.slot_bits) as usize - 1].hash as usize & self.mask;
            // Move s into the hole unless its home lies cyclically in (hole, j].
            let dist_j = j.wrapping_sub(home) & self.mask;
            let dist_hole = hole.wrapping_sub(home) & self.mask;
            if dist_hole <= dist_j {
                self.buckets[hole] = e;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.buckets[hole] = 0;
        self.cold[h as usize].class = FREE;
        self.free.push(h);
        self.len -= 1;
        self.changes += 1;
    }

    /// Visits the live entries in slots `from..` in slot order, at most `max` slots (live
    /// or not), letting `f` change their values, and removes those for which `f` returns
    /// false; returns the slot to go on from, or `None` when every slot has been visited.
    /// The entries kept keep their keys, classes and timers, so `f` must not change
    /// anything the entry's class is derived from. (A removal frees its slot and moves
    /// only index entries: the slots not visited yet stay where they are.) Reads both
    /// slabs sequentially: for bounded background work, not for the packet path.
    pub fn visit_retain(
        &mut self,
        from: usize,
        max: usize,
        mut f: impl FnMut(&K, &mut V) -> bool,
    ) -> Option<usize> {
        let end = from.saturating_add(max).min(self.hot.len());
        for s in from..end {
            if self.cold[s].class != FREE {
                let slot = &mut self.hot[s];
                if !f(&slot.key, &mut slot.val) {
                    self.remove(s as Handle);
                }
            }
        }
        (end < self.hot.len()).then_some(end)
    }

    /// Visits the live entries in slots `from..` in slot order, at most `max` slots (live
    /// or not), calling `f` with each one's key, value, last-seen time and class timeout;
    /// returns the slot to go on from, or `None` when every slot has been visited. Reads
    /// both slabs sequentially: for bounded background work (listing flows), not for the
    /// packet path.
    pub fn visit(
        &self,
        from: usize,
        max: usize,
        mut f: impl FnMut(&K, &V, u64, u64),
    ) -> Option<usize> {
        let end = from.saturating_add(max).min(self.hot.len());
        for s in from..end {
            let class = self.cold[s].class;
            if class != FREE {
                let slot = &self.hot[s];
                f(
                    &slot.key,
                    &slot.val,
                    slot.last_seen,
                    self.classes[usize::from(class)].timeout,
                );
            }
        }
        (end < self.hot.len()).then_some(end)
    }

    /// Removes up to `max` entries not seen for their class timeout at `now`, calling
    /// `f` for each; returns how many. Whole windows are dropped, oldest first.
    pub fn expire(&mut self, now: u64, max: usize, mut f: impl FnMut(&K, &V)) -> usize {
        let mut n = 0;
        for c in 0..self.classes.len() {
            let (timeout, grain) = (self.classes[c].timeout, self.classes[c].grain);
            // Window w holds touches in [w*grain, (w+1)*grain): expired when that ends
            // at least `timeout` before now.
            let Some(limit) = now.checked_sub(timeout) else {
                continue;
            };
            let end = limit / grain; // windows < end are wholly expired
            let first = self.classes[c].next_window;
            if first >= end {
                continue;
            }
            // After a long gap every list is visited once.
            for w in first..first + (end - first).min(WINDOWS as u64) {
                let i = (w % WINDOWS as u64) as usize;
                let mut h = self.classes[c].lists[i].head;
                while h != NIL {
                    let next = self.cold[h as usize].next;
                    // After a clock jump a list can also hold a newer window's entries.
                    if self.cold[h as usize].window < end {
                        if n == max {
                            self.classes[c].next_window = w;
                            return n;
                        }
                        let slot = &self.hot[h as usize];
                        f(&slot.key, &slot.val);
                        self.remove(h);
                        n += 1;
                    }
                    h = next;
                }
            }
            self.classes[c].next_window = end;
        }
        n
    }

    /// What a full table evicts: the entry idle the longest in the evict-first classes,
    /// or, when they hold none, in any class.
    fn victim(&self) -> Option<Handle> {
        self.oldest(self.evict_first.iter().copied())
            .or_else(|| self.oldest(0..self.classes.len() as u8))
    }

    /// About the entry idle the longest in `classes`: the head of their oldest non-empty
    /// window.
    fn oldest(&self, classes: impl Iterator<Item = u8>) -> Option<Handle> {
        let mut best: Option<(u64, Handle)> = None;
        for c in classes {
            let cl = &self.classes[c as usize];
            for k in 0..WINDOWS as u64 {
                let h = cl.lists[((cl.next_window + k) % WINDOWS as u64) as usize].head;
                if h != NIL {
                    let t = self.hot[h as usize].last_seen;
                    if best.is_none_or(|(bt, _)| t < bt) {
                        best = Some((t, h));
                    }
                    break;
                }
            }
        }
        best.map(|(_, h)| h)
    }

    fn link(&mut self, s: u32, class: u8, now: u64) {
        let cl = &mut self.classes[class as usize];
        let w = now.max(self.hot[s as usize].last_seen) / cl.grain;
        let w = w.max(cl.next_window);
        let l = &mut cl.lists[(w % WINDOWS as u64) as usize];
        let old_tail = l.tail;
        l.tail = s;
        if old_tail == NIL {
            l.head = s;
        }
        let c = &mut self.cold[s as usize];
        c.prev = old_tail;
        c.next = NIL;
        c.class = class;
        c.window = w;
        if old_tail != NIL {
            self.cold[old_tail as usize].next = s;
        }
    }

    fn unlink(&mut self, s: u32) {
        let Cold {
            prev,
            next,
            class,
            window,
            ..
        } = self.cold[s as usize];
        let i = (window % WINDOWS as u64) as usize;
        if prev == NIL {
            self.classes[class as usize].lists[i].head = next;
        } else {
            self.cold[prev as usize].next = next;
        }
        if next == NIL {
            self.classes[class as usize].lists[i].tail = prev;
        } else {
            self.cold[next as usize].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn insert_find_remove_evict() {
        let mut t: LruTable<u64, u32> = LruTable::new(3, &[100, 10]);
        let a = match t.insert(1, 10, 0, 1) {
            Inserted::Fresh(h) => h,
            _ => panic!(),
        };
        t.insert(2, 20, 1, 2);
        t.insert(3, 30, 0, 3);
        assert_eq!(t.find(&1), Some(a));
        t.touch(a, 0, 20); // a newer window (grain 100/16 = 6): relinked
        match t.insert(4, 40, 0, 21) {
            Inserted::Evicted(_, k, v) => assert_eq!((k, v), (2, 20)), // idle the longest
            _ => panic!("expected eviction"),
        }
        assert_eq!(t.find(&2), None);
        assert_eq!(t.len(), 3);
        let mut gone = vec![];
        // Entry 3, seen at 3 (window 0 = [0, 6)), expires once now - 100 >= 6.
        assert_eq!(t.expire(102, 10, |k, _| gone.push(*k)), 0);
        assert_eq!(t.expire(106, 10, |k, _| gone.push(*k)), 1);
        assert_eq!(gone, vec![3]);
        // 1 (seen 20, window 3) and 4 (seen 21, window 3; touched at 25, window 4).
        let h = t.find(&4).unwrap();
        t.touch(h, 0, 25);
        assert_eq!(t.expire(123, 10, |_, _| {}), 0);
        assert_eq!(t.expire(124, 10, |_, _| {}), 1);
        assert!(t.find(&1).is_none() && t.find(&4).is_some());
        assert_eq!(t.expire(129, 10, |_, _| {}), 0);
        assert_eq!(t.expire(130, 10, |_, _| {}), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn visit_retain_sees_each_live_entry_once_in_steps() {
        let mut t: LruTable<u64, u32> = LruTable::new(8, &[1000]);
        for k in 0..8 {
            t.insert(k, 0, 0, 1);
        }
        for k in [1, 4, 5] {
            let h = t.find(&k).unwrap();
            t.remove(h);
        }
        t.insert(9, 0, 0, 2); // reuses a freed slot
        let mut seen = vec![];
        let mut at = Some(0);
        let mut steps = 0;
        while let Some(from) = at {
            at = t.visit_retain(from, 3, |k, v| {
                seen.push(*k);
                *v = *k as u32 * 10;
                true
            });
            steps += 1;
        }
        assert_eq!(steps, 3, "8 slots, 3 a step");
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 2, 3, 6, 7, 9], "live entries only, each once");
        for k in [0, 2, 3, 6, 7, 9] {
            assert_eq!(*t.get(t.find(&k).unwrap()), k as u32 * 10);
        }
        // Removed while visiting (a step ending between them): the others stay, with
        // their values, found through the index, and still expire on their timers.
        let mut at = Some(0);
        while let Some(from) = at {
            at = t.visit_retain(from, 5, |k, _| k % 3 != 0);
        }
        assert_eq!(t.len(), 2);
        for k in [0, 3, 6, 9] {
            assert!(t.find(&k).is_none(), "{k} removed");
        }
        for k in [2, 7] {
            assert_eq!(*t.get(t.find(&k).unwrap()), k as u32 * 10);
        }
        t.insert(10, 0, 0, 3); // a freed slot taken again
        assert_eq!(t.len(), 3);
        assert_eq!(t.expire(2000, 100, |_, _| {}), 3);
        assert_eq!(t.visit_retain(0, 100, |_, _| panic!("no live entry")), None);
    }

    #[test]
    fn expiry_is_never_early_and_at_most_a_grain_late() {
        // timeout 160, grain 10: seen at 5 (window [0, 10)) => expires in [165, 170].
        let mut t: LruTable<u64, u64> = LruTable::new(16, &[160]);
        let h = match t.insert(1, 0, 0, 0) {
            Inserted::Fresh(h) => h,
            _ => panic!(),
        };
        t.touch(h, 0, 5);
        assert_eq!(t.expire(164, 4, |_, _| {}), 0);
        assert_eq!(t.expire(169, 4, |_, _| {}), 0);
        assert_eq!(t.expire(170, 4, |_, _| {}), 1);
    }

    #[test]
    fn moved_entries_take_their_new_class_timeout() {
        // Classes 0 and 3: 160 (grain 10); 1 and 2: 1600 (grain 100).
        let mut t: LruTable<u64, u64> = LruTable::new(16, &[160, 1600]);
        t.insert(1, 0, 0, 5);
        t.insert(2, 0, 1, 5);
        t.insert(3, 0, 1, 400);
        t.set_timeouts(&[160, 1600, 1600, 160]);
        assert_eq!(t.classes(), 4);
        // Key 1 to class 2, keys 2 and 3 to class 3; one slot a step, values too.
        let to = |k: &u64, v: &mut u64, c: u8| {
            *v += 1;
            match (k, c) {
                (1, 0) => 2,
                (2 | 3, 1) => 3,
                _ => c,
            }
        };
        let mut at = Some(0);
        let mut steps = 0;
        while let Some(from) = at {
            at = t.move_entries(from, 1, 450, to);
            steps += 1;
        }
        assert_eq!(steps, 3);
        let classes: Vec<(u8, u64)> = (1..=3)
            .map(|k| {
                let h = t.find(&k).unwrap();
                (t.class(h), *t.get(h))
            })
            .collect();
        assert_eq!(classes, [(2, 1), (3, 1), (3, 1)]);
        // Key 2 (seen at 5) is past 160 already: gone at the next call; key 3 (seen at
        // 400, window [400, 410)) expires at 570; key 1 (window [0, 100)) at 1700.
        let mut gone = Vec::new();
        t.expire(450, 8, |k, _| gone.push(*k));
        assert_eq!(gone, [2]);
        assert_eq!(t.expire(569, 8, |_, _| {}), 0);
        assert_eq!(t.expire(570, 8, |_, _| {}), 1);
        assert_eq!(t.expire(1699, 8, |_, _| {}), 0);
        assert_eq!(t.expire(1700, 8, |_, _| {}), 1);
        assert!(t.is_empty());
        // An empty class takes a new timeout: 50 (grain 3); seen at 2000, window
        // [1998, 2001), gone at 2051.
        t.set_timeouts(&[50, 1600, 1600, 160]);
        t.insert(4, 0, 0, 2000);
        assert_eq!(t.expire(2050, 8, |_, _| {}), 0);
        assert_eq!(t.expire(2051, 8, |_, _| {}), 1);
    }

    #[test]
    fn a_clock_jump_expires_everything_old() {
        let mut t: LruTable<u64, u64> = LruTable::new(64, &[160, 16]);
        for k in 0..50u64 {
            t.insert(k, k, (k % 2) as u8, k * 7);
        }
        assert_eq!(t.expire(1_000_000, 100, |_, _| {}), 50);
        assert!(t.is_empty());
        // and the table still works afterwards
        t.insert(1, 1, 0, 1_000_001);
        assert_eq!(t.expire(1_000_100, 100, |_, _| {}), 0);
        assert_eq!(t.expire(1_000_200, 100, |_, _| {}), 1);
    }

    #[test]
    fn reclass_moves_an_entry_to_the_new_timeout() {
        // class 0: timeout 1600 (grain 100); class 1: timeout 160 (grain 10).
        let mut t: LruTable<u64, u64> = LruTable::new(8, &[1600, 160]);
        let h = match t.insert(1, 0, 0, 0) {
            Inserted::Fresh(h) => h,
            _ => panic!(),
        };
        t.touch(h, 0, 50); // same window of class 0: no relink
        assert_eq!((t.class(h), t.last_seen(h)), (0, 50));
        t.touch_reclass(h, 1, 55); // window [50, 60) of class 1: expires at 220
        assert_eq!(t.class(h), 1);
        assert_eq!(t.expire(219, 4, |_, _| {}), 0);
        assert_eq!(t.expire(220, 4, |_, _| {}), 1);
        // Same class through touch_reclass: only the time and window move.
        let h = match t.insert(2, 0, 1, 300) {
            Inserted::Fresh(h) => h,
            _ => panic!(),
        };
        t.touch_reclass(h, 1, 315);
        t.touch(h, 1, 325); // a newer window: relinked ([320, 330) expires at 490)
        assert_eq!(t.expire(489, 4, |_, _| {}), 0);
        assert_eq!(t.expire(490, 4, |_, _| {}), 1);
    }

    #[test]
    fn a_full_table_evicts_from_the_evict_first_classes_first() {
        // class 0: long-lived entries; class 1: entries to lose first.
        let mut t: LruTable<u64, u64> = LruTable::new(4, &[1000, 1000]);
        t.set_evict_first(&[1]);
        t.insert(1, 0, 0, 1); // the oldest entry of all
        t.insert(2, 0, 1, 500);
        t.insert(3, 0, 0, 600);
        t.insert(4, 0, 1, 700);
        // Full: each insert takes the oldest class-1 entry while there is one ...
        for (k, gone) in [(5, 2), (6, 4), (7, 5)] {
            match t.insert(k, 0, 1, 800 + k) {
                Inserted::Evicted(_, ek, _) => assert_eq!(ek, gone),
                Inserted::Fresh(_) => panic!("expected an eviction"),
            }
        }
        // ... and the oldest of any class once class 1 is empty.
        let h = t.find(&6).unwrap();
        t.remove(h);
        let h = t.find(&7).unwrap();
        t.remove(h);
        t.insert(8, 0, 0, 900);
        t.insert(9, 0, 0, 901);
        match t.insert(10, 0, 0, 902) {
            Inserted::Evicted(_, ek, _) => assert_eq!(ek, 1),
            Inserted::Fresh(_) => panic!("expected an eviction"),
        }
        // Without the setting, the oldest of all goes, whatever its class.
        let mut t: LruTable<u64, u64> = LruTable::new(2, &[1000, 1000]);
        t.insert(1, 0, 0, 1);
        t.insert(2, 0, 1, 500);
        match t.insert(3, 0, 1, 600) {
            Inserted::Evicted(_, ek, _) => assert_eq!(ek, 1),
            Inserted::Fresh(_) => panic!("expected an eviction"),
        }
    }

    proptest! {
        // The table agrees with a HashMap model under random insert/remove/touch.
        #[test]
        fn matches_model(ops in proptest::collection::vec((0u8..3, 0u64..64), 1..400)) {
            let cap = 48;
            let mut t: LruTable<u64, u64> = LruTable::new(cap, &[1000]);
            let mut m: HashMap<u64, u64> = HashMap::new();
            for (i, (op, k)) in ops.into_iter().enumerate() {
                let now = i as u64;
                match op {
                    0 => if t.find(&k).is_none() {
                        match t.insert(k, k * 7, 0, now) {
                            Inserted::Fresh(_) => {}
                            Inserted::Evicted(_, ek, _) => { m.remove(&ek); }
                        }
                        m.insert(k, k * 7);
                    },
                    1 => if let Some(h) = t.find(&k) { t.remove(h); m.remove(&k); },
                    _ => if let Some(h) = t.find(&k) { t.touch(h, 0, now); },
                }
                prop_assert_eq!(t.len(), m.len());
                for (k, v) in &m {
                    let h = t.find(k);
                    prop_assert!(h.is_some());
                    prop_assert_eq!(*t.get(h.unwrap()), *v);
                }
            }
        }

        // Entries moved between classes in passes of random steps, classes appended
        // and empty ones given new timeouts, at random moments under live entries: every
        // entry expires no earlier than its class's timeout after it was last seen, and
        // no later than that timeout plus the class's grain (an entry whose new class's
        // timeout has already passed goes at the next expire call).
        #[test]
        fn moved_entries_expire_on_their_class_timeout(
            ops in proptest::collection::vec((0u8..8, 0u64..40, 1u64..40), 1..300),
        ) {
            let mut timeouts = vec![320u64, 64];
            let mut t: LruTable<u64, u64> = LruTable::new(64, &timeouts);
            // Model: key -> (class, last seen).
            let mut m: HashMap<u64, (u8, u64)> = HashMap::new();
            // A pass under way: keys that are `r` modulo 3 move to class `to`; next slot.
            let mut pass: Option<(u64, u8, usize)> = None;
            let mut now = 0u64;
            for (op, k, x) in ops {
                now += x % 7;
                let class = (k % timeouts.len() as u64) as u8;
                match op {
                    0 | 1 if t.find(&k).is_none() && t.len() < 64 => {
                        t.insert(k, 0, class, now);
                        m.insert(k, (class, now));
                    }
                    2 | 3 => if let Some(h) = t.find(&k) {
                        let c = t.class(h);
                        t.touch(h, c, now);
                        m.insert(k, (c, now));
                    },
                    4 if timeouts.len() < 6 => {
                        timeouts.push(x * 16);
                        t.set_timeouts(&timeouts);
                    }
                    5 => {
                        // A class no entry is in, nor a pass moves entries to.
                        let c = (x % timeouts.len() as u64) as u8;
                        if m.values().all(|&(mc, _)| mc != c) && pass.is_none_or(|p| p.1 != c) {
                            timeouts[usize::from(c)] = x * 16;
                            t.set_timeouts(&timeouts);
                        }
                    }
                    6 if pass.is_none() => pass = Some((x % 3, class, 0)),
                    _ => {}
                }
                if let Some((r, to, from)) = pass {
                    let mut moved = Vec::new();
                    let next = t.move_entries(from, (x % 5) as usize, now, |key, v, c| {
                        if key % 3 != r || c == to {
                            return c;
                        }
                        *v += 1;
                        moved.push(*key);
                        to
                    });
                    for key in moved {
                        let e = m.get_mut(&key);
                        prop_assert!(e.is_some());
                        e.unwrap().0 = to;
                    }
                    pass = next.map(|n| (r, to, n));
                }
                let mut gone = Vec::new();
                t.expire(now, usize::MAX, |k, _| gone.push(*k));
                for k in gone {
                    let (c, seen) = m.remove(&k).expect("a live entry");
                    prop_assert!(now - seen >= timeouts[c as usize], "{} expired early", k);
                }
                for (k, &(c, seen)) in &m {
                    let grain = (timeouts[c as usize] / 16).max(1);
                    prop_assert!(now - seen < timeouts[c as usize] + grain, "{} not expired", k);
                    let h = t.find(k);
                    prop_assert!(h.is_some());
                    prop_assert_eq!(t.class(h.unwrap()), c);
                }
                prop_assert_eq!(t.len(), m.len());
            }
        }

        // With evict-first classes, a full table never evicts an entry of another class
        // while one of theirs is live, and the table still agrees with the model.
        #[test]
        fn evicts_first_classes_first(ops in proptest::collection::vec((0u8..4, 0u64..64), 1..400)) {
            let mut t: LruTable<u64, u64> = LruTable::new(24, &[1000, 1000, 50]);
            t.set_evict_first(&[1, 2]);
            let mut m: HashMap<u64, u8> = HashMap::new();
            for (i, (op, k)) in ops.into_iter().enumerate() {
                let now = i as u64;
                let class = (k % 3) as u8;
                match op {
                    0 | 1 => if t.find(&k).is_none() {
                        let first_live = m.values().any(|&c| c != 0);
                        if let Inserted::Evicted(_, ek, _) = t.insert(k, 0, class, now) {
                            let c = m.remove(&ek);
                            prop_assert!(c.is_some());
                            prop_assert!(!first_live || c != Some(0), "evicted {} of class 0", ek);
                        }
                        m.insert(k, class);
                    },
                    2 => if let Some(h) = t.find(&k) { t.remove(h); m.remove(&k); },
                    _ => if let Some(h) = t.find(&k) { t.touch(h, class, now); },
                }
                prop_assert_eq!(t.len(), m.len());
                for (k, c) in &m {
                    let h = t.find(k);
                    prop_assert!(h.is_some());
                    prop_assert_eq!(t.class(h.unwrap()), *c);
                }
            }
        }
    }
}
