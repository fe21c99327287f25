//! A fixed-capacity hash table with per-class LRU lists: the storage under flows and
//! fragment records.
//!
//! Layer: `flow`. Sized once at construction; `insert`, `get`, `touch`, `remove` and
//! `expire` never allocate and never rehash:
//!
//! - Entries live in a slab (`Vec` of slots, allocated once) linked into one of a few
//!   doubly-linked LRU lists, one per timeout class. Each list has a single timeout and
//!   is kept in last-seen order (a touch moves the entry to the tail), so the head of each
//!   list is its oldest entry and expiry is exact and O(expired).
//! - The index is open addressing with linear probing over a power-of-two bucket array at
//!   load factor ≤ 1/2, with backward-shift deletion. Unlike a tombstone scheme (hashbrown
//!   rehashes in place when tombstones use up its growth budget), deletion leaves no
//!   debris, so the table never rehashes.
//! - When the slab is full, `insert` evicts the entry idle the longest across all lists
//!   (the oldest head) and reports it.
//!
//! Hashing uses hashbrown's default (randomly seeded foldhash), so flow keys chosen by an
//! attacker cannot aim at one probe chain.

use core::hash::{BuildHasher, Hash};

const NIL: u32 = u32::MAX;

struct Slot<K, V> {
    key: K,
    val: V,
    hash: u64,
    last_seen: u64,
    prev: u32,
    next: u32,
    class: u8,
    used: bool,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    timeout: u64,
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
    slots: Vec<Slot<K, V>>,
    free: Vec<u32>,
    buckets: Vec<u32>,
    mask: usize,
    lists: Vec<List>,
    len: usize,
    hasher: hashbrown::DefaultHashBuilder,
}

impl<K: Hash + Eq + Copy + Default, V: Copy + Default> LruTable<K, V> {
    /// A table for `capacity` entries and one LRU class per entry of `timeouts` (ns).
    ///
    /// # Panics
    /// If `capacity` is 0 or above 2^30, or `timeouts` is empty or longer than 255.
    pub fn new(capacity: usize, timeouts: &[u64]) -> Self {
        assert!(capacity > 0 && capacity <= 1 << 30);
        assert!(!timeouts.is_empty() && timeouts.len() < 256);
        let buckets = (capacity * 2).next_power_of_two();
        let mut slots = Vec::with_capacity(capacity);
        for _ in 0..capacity {
            slots.push(Slot {
                key: K::default(),
                val: V::default(),
                hash: 0,
                last_seen: 0,
                prev: NIL,
                next: NIL,
                class: 0,
                used: false,
            });
        }
        LruTable {
            slots,
            free: (0..capacity as u32).rev().collect(),
            buckets: vec![NIL; buckets],
            mask: buckets - 1,
            lists: timeouts
                .iter()
                .map(|&t| List {
                    head: NIL,
                    tail: NIL,
                    timeout: t,
                })
                .collect(),
            len: 0,
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
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
        self.slots.len()
    }

    /// The hash `key` will be stored under (lets a batch prefetch or reuse it).
    #[inline]
    pub fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Finds `key`.
    #[inline]
    pub fn find(&self, key: &K) -> Option<Handle> {
        self.find_hashed(key, self.hash(key))
    }

    /// Finds `key` whose hash is `hash`.
    #[inline]
    pub fn find_hashed(&self, key: &K, hash: u64) -> Option<Handle> {
        let mut b = hash as usize & self.mask;
        loop {
            let s = self.buckets[b];
            if s == NIL {
                return None;
            }
            let slot = &self.slots[s as usize];
            if slot.hash == hash && slot.key == *key {
                return Some(s);
            }
            b = (b + 1) & self.mask;
        }
    }

    /// The value of a live entry.
    #[inline]
    pub fn get(&self, h: Handle) -> &V {
        &self.slots[h as usize].val
    }

    /// The value of a live entry, mutably.
    #[inline]
    pub fn get_mut(&mut self, h: Handle) -> &mut V {
        &mut self.slots[h as usize].val
    }

    /// The key of a live entry.
    #[inline]
    pub fn key(&self, h: Handle) -> &K {
        &self.slots[h as usize].key
    }

    /// When a live entry was last seen.
    pub fn last_seen(&self, h: Handle) -> u64 {
        self.slots[h as usize].last_seen
    }

    /// Inserts `key` (which must not be present) in timeout `class`, seen at `now`.
    pub fn insert(&mut self, key: K, val: V, class: u8, now: u64) -> Inserted<K, V> {
        let mut evicted = None;
        if self.free.is_empty() {
            let victim = self.oldest().expect("a full table has entries");
            let (k, v) = (
                self.slots[victim as usize].key,
                self.slots[victim as usize].val,
            );
            self.remove(victim);
            evicted = Some((k, v));
        }
        let Some(s) = self.free.pop() else {
            unreachable!("a slot was freed above")
        };
        let hash = self.hash(&key);
        {
            let slot = &mut self.slots[s as usize];
            slot.key = key;
            slot.val = val;
            slot.hash = hash;
            slot.last_seen = now;
            slot.class = class;
            slot.used = true;
        }
        let mut b = hash as usize & self.mask;
        while self.buckets[b] != NIL {
            b = (b + 1) & self.mask;
        }
        self.buckets[b] = s;
        self.link_tail(s, class);
        self.len += 1;
        match evicted {
            None => Inserted::Fresh(s),
            Some((k, v)) => Inserted::Evicted(s, k, v),
        }
    }

    /// Marks `h` seen at `now` and moves it to the tail of `class` (which may differ from
    /// its current class, e.g. when a TCP flow becomes established).
    #[inline]
    pub fn touch(&mut self, h: Handle, class: u8, now: u64) {
        self.unlink(h);
        let slot = &mut self.slots[h as usize];
        slot.last_seen = slot.last_seen.max(now);
        slot.class = class;
        self.link_tail(h, class);
    }

    /// Removes a live entry.
    pub fn remove(&mut self, h: Handle) {
        debug_assert!(self.slots[h as usize].used);
        self.unlink(h);
        // Find the bucket holding h, then backward-shift the cluster after it.
        let mut b = self.slots[h as usize].hash as usize & self.mask;
        while self.buckets[b] != h {
            b = (b + 1) & self.mask;
        }
        let mut hole = b;
        let mut j = (hole + 1) & self.mask;
        loop {
            let s = self.buckets[j];
            if s == NIL {
                break;
            }
            let home = self.slots[s as usize].hash as usize & self.mask;
            // Move s into the hole when its home is not in (hole, j] cyclically.
            let dist_j = j.wrapping_sub(home) & self.mask;
            let dist_hole = hole.wrapping_sub(home) & self.mask;
            if dist_hole < dist_j || dist_hole == dist_j {
                self.buckets[hole] = s;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.buckets[hole] = NIL;
        let slot = &mut self.slots[h as usize];
        slot.used = false;
        self.free.push(h);
        self.len -= 1;
    }

    /// Pops up to `max` entries whose class timeout has passed at `now`, calling `f`
    /// for each. Returns how many were removed.
    pub fn expire(&mut self, now: u64, max: usize, mut f: impl FnMut(&K, &V)) -> usize {
        let mut n = 0;
        for c in 0..self.lists.len() {
            while n < max {
                let h = self.lists[c].head;
                if h == NIL {
                    break;
                }
                let slot = &self.slots[h as usize];
                if slot.last_seen.saturating_add(self.lists[c].timeout) > now {
                    break;
                }
                f(&slot.key, &slot.val);
                self.remove(h);
                n += 1;
            }
        }
        n
    }

    /// The entry idle the longest (smallest last-seen among list heads).
    fn oldest(&self) -> Option<Handle> {
        self.lists
            .iter()
            .filter(|l| l.head != NIL)
            .min_by_key(|l| self.slots[l.head as usize].last_seen)
            .map(|l| l.head)
    }

    fn link_tail(&mut self, s: u32, class: u8) {
        let l = &mut self.lists[class as usize];
        let old_tail = l.tail;
        l.tail = s;
        if old_tail == NIL {
            l.head = s;
        }
        self.slots[s as usize].prev = old_tail;
        self.slots[s as usize].next = NIL;
        if old_tail != NIL {
            self.slots[old_tail as usize].next = s;
        }
    }

    fn unlink(&mut self, s: u32) {
        let (prev, next, class) = {
            let x = &self.slots[s as usize];
            (x.prev, x.next, x.class)
        };
        let l = &mut self.lists[class as usize];
        if prev == NIL {
            l.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        let l = &mut self.lists[class as usize];
        if next == NIL {
            l.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
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
        t.touch(a, 0, 5); // 1 is now the most recent; 2 (class 1) is oldest
        match t.insert(4, 40, 0, 6) {
            Inserted::Evicted(_, k, v) => assert_eq!((k, v), (2, 20)),
            _ => panic!("expected eviction"),
        }
        assert_eq!(t.find(&2), None);
        assert_eq!(t.len(), 3);
        let mut gone = vec![];
        // class 0 timeout 100: entry 3 (seen 3) expires at 103; 1 (seen 5) at 105
        assert_eq!(t.expire(104, 10, |k, _| gone.push(*k)), 1);
        assert_eq!(gone, vec![3]);
        assert!(t.find(&1).is_some() && t.find(&4).is_some());
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
    }
}
