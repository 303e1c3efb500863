//! The fallback cache's storage: a least-recently-used map from key bytes to a value, laid out for memory.
//!
//! `cache.max_bytes` bounds the keys and values held; whatever the cache spends beyond them is memory the
//! operator did not budget for. A general-purpose LRU (a boxed node per entry, separate key and value
//! allocations, a map of pointers) spent about 235 bytes of bookkeeping on each entry, more than twice a
//! 100-byte value. Here an entry is one heap allocation holding a 4-byte header, its key and (for a string)
//! its value, plus a 40-byte [`Slot`] in one vector. Slots are linked in recency order by 32-bit indices and
//! found through a hash table of 32-bit indices, so the bookkeeping is about 50 bytes plus the allocator's
//! rounding. Hashes, rare in a fallback cache, keep their fields in a side map.
//!
//! The store knows nothing of limits or clocks: `cache.rs` decides what to keep and when it expires, in
//! [`Tick`]s it converts from its clock.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// A point in time as nanoseconds since the cache's creation ([`NEVER`] = no expiry): 8 bytes where an
/// `Option<Instant>` takes 16.
pub(super) type Tick = u64;

/// The tick of something that never happens; `min` with it leaves the other operand.
pub(super) const NEVER: Tick = Tick::MAX;

/// Index of a slot; also the "no slot" value of the links.
type Idx = u32;
const NIL: Idx = Idx::MAX;

/// Header bit marking an entry whose value is a hash (kept in [`Store::hashes`]).
const HASH_BIT: u32 = 1 << 31;
const HEADER: usize = 4;

/// Keys must fit the header's 31-bit length (request bodies are far smaller; this only guards the encoding).
pub(super) const MAX_KEY_LEN: usize = (HASH_BIT - 1) as usize;

/// A Redis hash as cached. `complete` is true only when it came from HGETALL (or was built from one): a
/// partial hash (fields learned from HGET/HSET) must never answer HGETALL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HashFields {
    pub fields: HashMap<Vec<u8>, Vec<u8>>,
    pub complete: bool,
}

impl HashFields {
    fn bytes(&self) -> usize {
        self.fields.iter().map(|(f, v)| f.len() + v.len()).sum()
    }
}

/// A value to store.
pub(super) enum Value<'a> {
    /// A Redis string (GET/SET/INCR), copied into the entry's allocation.
    Str(&'a [u8]),
    /// A Redis hash.
    Hash(HashFields),
}

impl Value<'_> {
    /// Value bytes as `max_bytes` counts them.
    pub fn bytes(&self) -> usize {
        match self {
            Value::Str(v) => v.len(),
            Value::Hash(h) => h.bytes(),
        }
    }
}

/// A stored value, borrowed.
pub(super) enum ValueRef<'a> {
    Str(&'a [u8]),
    Hash(&'a HashFields),
}

/// When an entry stops being servable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expiry {
    /// Last refresh + `cache.ttl`: reset whenever a new value is learned.
    pub fresh_until: Tick,
    /// Expiry known to exist on the Redis key (SET with a TTL, EXPIRE): only ever shortened while the entry
    /// lives, since refreshing a value in Redis (GET, HSET) does not clear the key's TTL either.
    pub deadline: Tick,
}

impl Expiry {
    pub fn expired(&self, now: Tick) -> bool {
        now >= self.fresh_until.min(self.deadline)
    }
}

/// One entry, or a free place in the slot vector.
struct Slot {
    /// Header (key length, [`HASH_BIT`]), key, and a string's value. Empty while the slot is free.
    data: Box<[u8]>,
    /// The next more recently used entry (towards `head`).
    prev: Idx,
    /// The next less recently used entry (towards `tail`); for a free slot, the next free slot.
    next: Idx,
    fresh_until: Tick,
    deadline: Tick,
}

impl Slot {
    fn header(&self) -> u32 {
        u32::from_le_bytes(self.data[..HEADER].try_into().expect("header"))
    }

    fn is_hash(&self) -> bool {
        self.header() & HASH_BIT != 0
    }

    fn key(&self) -> &[u8] {
        let len = (self.header() & !HASH_BIT) as usize;
        &self.data[HEADER..HEADER + len]
    }

    fn str_value(&self) -> &[u8] {
        &self.data[HEADER + self.key().len()..]
    }
}

/// Builds an entry's allocation: header, key, and a string's value (`None`: the entry holds a hash).
fn encode(key: &[u8], str_value: Option<&[u8]>) -> Box<[u8]> {
    let (flag, tail) = match str_value {
        Some(v) => (0, v),
        None => (HASH_BIT, &[][..]),
    };
    let header = u32::try_from(key.len()).expect("key length checked against MAX_KEY_LEN") | flag;
    let mut data = Vec::with_capacity(HEADER + key.len() + tail.len());
    data.extend_from_slice(&header.to_le_bytes());
    data.extend_from_slice(key);
    data.extend_from_slice(tail);
    data.into_boxed_slice()
}

/// The LRU map. Entries are addressed by the index `find` returns, valid until that entry is removed.
pub(super) struct Store {
    slots: Vec<Slot>,
    /// Slot indices, hashed by their entry's key.
    index: HashTable<Idx>,
    hasher: DefaultHashBuilder,
    /// Values of the entries whose header has [`HASH_BIT`].
    hashes: HashMap<Idx, HashFields>,
    /// Most recently used entry.
    head: Idx,
    /// Least recently used entry: the next to evict.
    tail: Idx,
    /// First free slot.
    free: Idx,
    len: usize,
}

impl Store {
    pub fn new() -> Self {
        Store {
            slots: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            hashes: HashMap::new(),
            head: NIL,
            tail: NIL,
            free: NIL,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn slot(&self, i: Idx) -> &Slot {
        &self.slots[i as usize]
    }

    fn slot_mut(&mut self, i: Idx) -> &mut Slot {
        &mut self.slots[i as usize]
    }

    pub fn find(&self, key: &[u8]) -> Option<Idx> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&i| self.slot(i).key() == key).copied()
    }

    pub fn value(&self, i: Idx) -> ValueRef<'_> {
        let slot = self.slot(i);
        if slot.is_hash() {
            ValueRef::Hash(&self.hashes[&i])
        } else {
            ValueRef::Str(slot.str_value())
        }
    }

    /// The entry's hash, or `None` if it holds a string.
    pub fn hash_mut(&mut self, i: Idx) -> Option<&mut HashFields> {
        self.hashes.get_mut(&i)
    }

    /// Key plus value bytes, as `max_bytes` counts them.
    pub fn bytes(&self, i: Idx) -> u64 {
        let value = match self.value(i) {
            ValueRef::Str(v) => v.len(),
            ValueRef::Hash(h) => h.bytes(),
        };
        (self.slot(i).key().len() + value) as u64
    }

    pub fn expiry(&self, i: Idx) -> Expiry {
        let slot = self.slot(i);
        Expiry {
            fresh_until: slot.fresh_until,
            deadline: slot.deadline,
        }
    }

    pub fn set_expiry(&mut self, i: Idx, expiry: Expiry) {
        let slot = self.slot_mut(i);
        slot.fresh_until = expiry.fresh_until;
        slot.deadline = expiry.deadline;
    }

    /// Adds an entry for a key that is not present, as the most recently used.
    pub fn insert(&mut self, key: &[u8], value: Value<'_>, expiry: Expiry) -> Idx {
        debug_assert!(self.find(key).is_none(), "insert of a present key");
        let str_value = match &value {
            Value::Str(v) => Some(*v),
            Value::Hash(_) => None,
        };
        let slot = Slot {
            data: encode(key, str_value),
            prev: NIL,
            next: NIL,
            fresh_until: expiry.fresh_until,
            deadline: expiry.deadline,
        };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.slot(i).next;
            *self.slot_mut(i) = slot;
            i
        } else {
            let i = Idx::try_from(self.slots.len())
                .ok()
                .filter(|&i| i != NIL)
                .expect("fewer than 2^32-1 entries");
            self.slots.push(slot);
            i
        };
        if let Value::Hash(h) = value {
            self.hashes.insert(i, h);
        }
        let Store {
            index, slots, hasher, ..
        } = self;
        index.insert_unique(hasher.hash_one(key), i, |&j| hasher.hash_one(slots[j as usize].key()));
        self.push_front(i);
        self.len += 1;
        i
    }

    /// Replaces an entry's value, keeping its key, expiry and place in the recency order.
    pub fn replace(&mut self, i: Idx, value: Value<'_>) {
        let slot = &mut self.slots[i as usize];
        match value {
            // The common overwrite (same key, same value length) reuses the allocation.
            Value::Str(v) if !slot.is_hash() && slot.str_value().len() == v.len() => {
                let at = HEADER + slot.key().len();
                slot.data[at..].copy_from_slice(v);
            }
            Value::Str(v) => {
                slot.data = encode(slot.key(), Some(v));
                self.hashes.remove(&i);
            }
            Value::Hash(h) => {
                if !slot.is_hash() {
                    slot.data = encode(slot.key(), None);
                }
                self.hashes.insert(i, h);
            }
        }
    }

    /// Marks an entry as the most recently used.
    pub fn promote(&mut self, i: Idx) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// Removes an entry; returns its bytes as [`Store::bytes`] counts them.
    pub fn remove(&mut self, i: Idx) -> u64 {
        let bytes = self.bytes(i);
        let hash = self.hasher.hash_one(self.slot(i).key());
        match self.index.find_entry(hash, |&j| j == i) {
            Ok(entry) => {
                entry.remove();
            }
            Err(_) => unreachable!("a live slot is always indexed"),
        }
        self.unlink(i);
        self.hashes.remove(&i);
        let free = self.free;
        let slot = self.slot_mut(i);
        slot.data = Box::default();
        slot.next = free;
        self.free = i;
        self.len -= 1;
        bytes
    }

    /// Removes the least recently used entry; returns its bytes, or `None` if the store is empty.
    pub fn pop_lru(&mut self) -> Option<u64> {
        (self.tail != NIL).then(|| self.remove(self.tail))
    }

    /// Drops every entry and gives the memory back.
    pub fn clear(&mut self) {
        *self = Store::new();
    }

    fn unlink(&mut self, i: Idx) {
        let Slot { prev, next, .. } = *self.slot(i);
        match prev {
            NIL => self.head = next,
            p => self.slot_mut(p).next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slot_mut(n).prev = prev,
        }
    }

    fn push_front(&mut self, i: Idx) {
        let head = self.head;
        let slot = self.slot_mut(i);
        slot.prev = NIL;
        slot.next = head;
        match head {
            NIL => self.tail = i,
            h => self.slot_mut(h).prev = i,
        }
        self.head = i;
    }
}

#[cfg(test)]
mod tests {
    //! The store against a model (a vector of keys in recency order), over random operation sequences:
    //! whatever the slots, links and free list do, the two must agree after every step.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert, or replace the value if the key is present.
        Put(u8, Vec<u8>),
        PutHash(u8, u8),
        Get(u8),
        Remove(u8),
        PopLru,
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct keys, so that replaces, removes and free-slot reuse happen often.
        prop_oneof![
            4 => (0..12u8, proptest::collection::vec(any::<u8>(), 0..6)).prop_map(|(k, v)| Op::Put(k, v)),
            1 => (0..12u8, any::<u8>()).prop_map(|(k, f)| Op::PutHash(k, f)),
            3 => (0..12u8).prop_map(Op::Get),
            2 => (0..12u8).prop_map(Op::Remove),
            1 => Just(Op::PopLru),
            1 => Just(Op::Clear),
        ]
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Model {
        Str(Vec<u8>),
        Hash(u8),
    }

    fn key(k: u8) -> Vec<u8> {
        // Keys of different lengths, so that a key's length is exercised along with its bytes.
        vec![b'k'; k as usize % 4 + 1].into_iter().chain([k]).collect()
    }

    fn one_field(f: u8) -> HashFields {
        HashFields {
            fields: [(vec![f], vec![f, f])].into_iter().collect(),
            complete: f.is_multiple_of(2),
        }
    }

    fn check(store: &Store, model: &[(Vec<u8>, Model)]) {
        assert_eq!(store.len(), model.len());
        // Walk from the most recently used entry: the model's order, front first.
        let mut at = store.head;
        for (k, value) in model {
            assert_ne!(at, NIL, "list shorter than the model");
            assert_eq!(store.find(k), Some(at), "index of {k:?}");
            assert_eq!(store.slot(at).key(), &k[..]);
            match (store.value(at), value) {
                (ValueRef::Str(got), Model::Str(want)) => assert_eq!(got, &want[..]),
                (ValueRef::Hash(got), Model::Hash(f)) => assert_eq!(got, &one_field(*f)),
                _ => panic!("wrong kind for {k:?}"),
            }
            let value_bytes = match value {
                Model::Str(v) => v.len(),
                Model::Hash(_) => 3,
            };
            assert_eq!(store.bytes(at), (k.len() + value_bytes) as u64);
            at = store.slot(at).next;
        }
        assert_eq!(at, NIL, "list longer than the model");
        assert_eq!(
            store.hashes.len(),
            model.iter().filter(|(_, v)| matches!(v, Model::Hash(_))).count()
        );
    }

    proptest! {
        #[test]
        fn store_matches_an_lru_model(ops in proptest::collection::vec(op(), 1..200)) {
            let mut store = Store::new();
            let mut model: Vec<(Vec<u8>, Model)> = Vec::new();
            let never = Expiry { fresh_until: NEVER, deadline: NEVER };
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let k = key(k);
                        match store.find(&k) {
                            Some(i) => {
                                store.replace(i, Value::Str(&v));
                                store.promote(i);
                            }
                            None => {
                                store.insert(&k, Value::Str(&v), never);
                            }
                        }
                        model.retain(|(mk, _)| *mk != k);
                        model.insert(0, (k, Model::Str(v)));
                    }
                    Op::PutHash(k, f) => {
                        let k = key(k);
                        match store.find(&k) {
                            Some(i) => {
                                store.replace(i, Value::Hash(one_field(f)));
                                store.promote(i);
                            }
                            None => {
                                store.insert(&k, Value::Hash(one_field(f)), never);
                            }
                        }
                        model.retain(|(mk, _)| *mk != k);
                        model.insert(0, (k, Model::Hash(f)));
                    }
                    Op::Get(k) => {
                        let k = key(k);
                        let at = model.iter().position(|(mk, _)| *mk == k);
                        prop_assert_eq!(store.find(&k).is_some(), at.is_some());
                        if let (Some(i), Some(at)) = (store.find(&k), at) {
                            store.promote(i);
                            let entry = model.remove(at);
                            model.insert(0, entry);
                        }
                    }
                    Op::Remove(k) => {
                        let k = key(k);
                        if let Some(i) = store.find(&k) {
                            store.remove(i);
                        }
                        model.retain(|(mk, _)| *mk != k);
                    }
                    Op::PopLru => {
                        let popped = store.pop_lru();
                        prop_assert_eq!(popped.is_some(), !model.is_empty());
                        model.pop();
                    }
                    Op::Clear => {
                        store.clear();
                        model.clear();
                    }
                }
                check(&store, &model);
            }
        }
    }

    #[test]
    fn expiry_is_the_earlier_of_freshness_and_deadline() {
        let e = Expiry {
            fresh_until: 10,
            deadline: NEVER,
        };
        assert!(!e.expired(9));
        assert!(e.expired(10));
        let e = Expiry {
            fresh_until: NEVER,
            deadline: 5,
        };
        assert!(e.expired(5));
        assert!(!Expiry {
            fresh_until: NEVER,
            deadline: NEVER
        }
        .expired(NEVER - 1));
    }

    #[test]
    fn a_slot_is_forty_bytes() {
        // The figure the module's memory budget is built on; a new field should be a deliberate choice.
        assert_eq!(std::mem::size_of::<Slot>(), 40);
    }
}
