//! The fallback cache's storage: a least-recently-used map from key bytes to a value, laid out for memory.
//!
//! `cache.max_bytes` bounds the keys and values held; whatever the cache spends beyond them is memory the
//! operator did not budget for. A general-purpose LRU (a boxed node per entry, separate key and value
//! allocations, a map of pointers) spent about 235 bytes of bookkeeping on each entry, more than twice a
//! 100-byte value. Here an entry is an 8-byte header, its key and (for a string) its value, packed into the
//! cache's own [`Arena`], plus a 24-byte [`Slot`] in one vector. Slots are linked in recency order by 32-bit
//! indices and found through a hash table of 32-bit indices, so the bookkeeping is about 40 bytes an entry.
//! An expiry the Redis key is known to have (rare: SET with a TTL, EXPIRE) takes 8 more bytes in the entry,
//! and hashes, rare in a fallback cache, keep their fields in a side map.
//!
//! The store knows nothing of limits or clocks: `cache/mod.rs` decides what to keep and when it expires, in
//! [`Tick`]s it converts from its clock.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

use super::arena::{Arena, Loc};

/// A point in time as nanoseconds since the cache's creation ([`NEVER`] = no expiry): 8 bytes where an
/// `Option<Instant>` takes 16.
pub(super) type Tick = u64;

/// The tick of something that never happens; `min` with it leaves the other operand.
pub(super) const NEVER: Tick = Tick::MAX;

/// Index of a slot; also the "no slot" value of the links.
type Idx = u32;
const NIL: Idx = Idx::MAX;

/// Largest key plus value an entry can hold: the header's 30-bit key length, and lengths that stay far from
/// the arena's 32-bit offsets. Request bodies are far smaller; this only guards the encoding.
pub(super) const MAX_ENTRY_BYTES: u64 = (1 << 30) - 1;

/// The first 8 bytes of an entry: key length and flags, then the string value's length. An entry with
/// [`Header::DEADLINE`] has the deadline's 8 bytes next; then come the key and the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    word: u32,
    value_len: u32,
}

impl Header {
    const SIZE: usize = 8;
    /// The entry's value is a hash, kept in [`Store::hashes`] (its `value_len` is 0).
    const HASH: u32 = 1 << 31;
    /// A deadline follows the header.
    const DEADLINE: u32 = 1 << 30;
    const KEY_LEN: u32 = Header::DEADLINE - 1;

    fn new(key_len: usize, value_len: usize, hash: bool, deadline: bool) -> Header {
        let len = |n: usize| u32::try_from(n).ok().filter(|&n| n <= Header::KEY_LEN);
        let key_len = len(key_len).expect("entries are checked against MAX_ENTRY_BYTES");
        let flags = if hash { Header::HASH } else { 0 } | if deadline { Header::DEADLINE } else { 0 };
        Header {
            word: key_len | flags,
            value_len: len(value_len).expect("entries are checked against MAX_ENTRY_BYTES"),
        }
    }

    fn read(bytes: &[u8]) -> Header {
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        Header {
            word: word(0),
            value_len: word(4),
        }
    }

    fn write(self, bytes: &mut [u8]) {
        bytes[..4].copy_from_slice(&self.word.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.value_len.to_le_bytes());
    }

    fn is_hash(self) -> bool {
        self.word & Header::HASH != 0
    }

    fn has_deadline(self) -> bool {
        self.word & Header::DEADLINE != 0
    }

    /// Offset of the key in the entry.
    fn key_at(self) -> usize {
        Header::SIZE + if self.has_deadline() { 8 } else { 0 }
    }

    /// Offset of the value in the entry.
    fn value_at(self) -> usize {
        self.key_at() + (self.word & Header::KEY_LEN) as usize
    }

    /// Length of the whole entry.
    fn len(self) -> usize {
        self.value_at() + self.value_len as usize
    }
}

/// The key of the entry at `loc`.
fn key_at(arena: &Arena, loc: Loc) -> &[u8] {
    let bytes = arena.bytes(loc);
    let h = Header::read(bytes);
    &bytes[h.key_at()..h.value_at()]
}

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
    /// A Redis string (GET/SET/INCR), copied into the entry.
    Str(&'a [u8]),
    /// A Redis hash.
    Hash(HashFields),
}

impl Value<'_> {
    /// Value bytes as `max_bytes` counts them.
    pub(super) fn bytes(&self) -> usize {
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
    pub(super) fn expired(&self, now: Tick) -> bool {
        now >= self.fresh_until.min(self.deadline)
    }
}

/// One entry, or a free place in the slot vector.
#[derive(Clone, Copy)]
struct Slot {
    /// Where the entry is in the arena; meaningless while the slot is free.
    loc: Loc,
    /// The next more recently used entry (towards `head`).
    prev: Idx,
    /// The next less recently used entry (towards `tail`); for a free slot, the next free slot.
    next: Idx,
    fresh_until: Tick,
}

/// The LRU map. Entries are addressed by the index `find` returns, valid until that entry is removed (an
/// entry moved within the arena keeps its index).
pub(super) struct Store {
    slots: Vec<Slot>,
    /// Slot indices, hashed by their entry's key.
    index: HashTable<Idx>,
    hasher: DefaultHashBuilder,
    /// The entries' bytes.
    arena: Arena,
    /// Values of the entries whose header has [`Header::HASH`].
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
    pub(super) fn new() -> Self {
        Store::with_arena(Arena::new())
    }

    fn with_arena(arena: Arena) -> Self {
        Store {
            slots: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            arena,
            hashes: HashMap::new(),
            head: NIL,
            tail: NIL,
            free: NIL,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn slot(&self, i: Idx) -> &Slot {
        &self.slots[i as usize]
    }

    fn slot_mut(&mut self, i: Idx) -> &mut Slot {
        &mut self.slots[i as usize]
    }

    /// An entry's header and bytes (the entry is the first `header.len()`).
    fn entry(&self, i: Idx) -> (Header, &[u8]) {
        let bytes = self.arena.bytes(self.slot(i).loc);
        (Header::read(bytes), bytes)
    }

    fn key(&self, i: Idx) -> &[u8] {
        key_at(&self.arena, self.slot(i).loc)
    }

    pub(super) fn find(&self, key: &[u8]) -> Option<Idx> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&i| self.key(i) == key).copied()
    }

    pub(super) fn value(&self, i: Idx) -> ValueRef<'_> {
        let (h, bytes) = self.entry(i);
        if h.is_hash() {
            ValueRef::Hash(&self.hashes[&i])
        } else {
            ValueRef::Str(&bytes[h.value_at()..h.len()])
        }
    }

    /// The entry's hash, or `None` if it holds a string.
    pub(super) fn hash_mut(&mut self, i: Idx) -> Option<&mut HashFields> {
        self.hashes.get_mut(&i)
    }

    /// Key plus value bytes, as `max_bytes` counts them.
    pub(super) fn bytes(&self, i: Idx) -> u64 {
        let (h, _) = self.entry(i);
        let value = match h.is_hash() {
            true => self.hashes[&i].bytes(),
            false => h.value_len as usize,
        };
        (h.value_at() - h.key_at() + value) as u64
    }

    pub(super) fn expiry(&self, i: Idx) -> Expiry {
        let (h, bytes) = self.entry(i);
        let deadline = match h.has_deadline() {
            true => Tick::from_le_bytes(bytes[Header::SIZE..Header::SIZE + 8].try_into().expect("8 bytes")),
            false => NEVER,
        };
        Expiry {
            fresh_until: self.slot(i).fresh_until,
            deadline,
        }
    }

    pub(super) fn set_expiry(&mut self, i: Idx, expiry: Expiry) {
        self.slot_mut(i).fresh_until = expiry.fresh_until;
        let (h, _) = self.entry(i);
        if h.has_deadline() {
            let at = self.slot(i).loc.add(Header::SIZE);
            self.arena
                .bytes_mut(at, 8)
                .copy_from_slice(&expiry.deadline.to_le_bytes());
        } else if expiry.deadline != NEVER {
            let with_deadline = Header {
                word: h.word | Header::DEADLINE,
                ..h
            };
            self.rewrite(i, with_deadline, expiry.deadline, None);
        }
    }

    /// Brings every entry's `fresh_until` forward to `at` where it is later (a shorter `cache.ttl`); never
    /// extends one. Free slots are capped too, harmlessly: an insert overwrites a free slot whole.
    pub(super) fn cap_fresh_until(&mut self, at: Tick) {
        for slot in &mut self.slots {
            slot.fresh_until = slot.fresh_until.min(at);
        }
    }

    /// Adds an entry for a key that is not present, as the most recently used.
    pub(super) fn insert(&mut self, key: &[u8], value: Value<'_>, expiry: Expiry) -> Idx {
        debug_assert!(self.find(key).is_none(), "insert of a present key");
        let str_value = match &value {
            Value::Str(v) => v,
            Value::Hash(_) => &[][..],
        };
        let deadline = expiry.deadline != NEVER;
        let h = Header::new(key.len(), str_value.len(), matches!(value, Value::Hash(_)), deadline);
        let loc = self.arena.alloc(h.len());
        let bytes = self.arena.bytes_mut(loc, h.len());
        h.write(bytes);
        if deadline {
            bytes[Header::SIZE..Header::SIZE + 8].copy_from_slice(&expiry.deadline.to_le_bytes());
        }
        bytes[h.key_at()..h.value_at()].copy_from_slice(key);
        bytes[h.value_at()..].copy_from_slice(str_value);
        let slot = Slot {
            loc,
            prev: NIL,
            next: NIL,
            fresh_until: expiry.fresh_until,
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
            index,
            slots,
            hasher,
            arena,
            ..
        } = self;
        index.insert_unique(hasher.hash_one(key), i, |&j| {
            hasher.hash_one(key_at(arena, slots[j as usize].loc))
        });
        self.push_front(i);
        self.len += 1;
        i
    }

    /// Replaces an entry's value, keeping its key, expiry and place in the recency order.
    pub(super) fn replace(&mut self, i: Idx, value: Value<'_>) {
        let (h, _) = self.entry(i);
        match value {
            // The common overwrite (same key, same value length) is done in place.
            Value::Str(v) if !h.is_hash() && h.value_len as usize == v.len() => {
                let at = self.slot(i).loc.add(h.value_at());
                self.arena.bytes_mut(at, v.len()).copy_from_slice(v);
            }
            Value::Str(v) => {
                let key_len = h.value_at() - h.key_at();
                let string = Header::new(key_len, v.len(), false, h.has_deadline());
                self.rewrite(i, string, self.expiry(i).deadline, Some(v));
                self.hashes.remove(&i);
            }
            Value::Hash(fields) => {
                if !h.is_hash() {
                    let key_len = h.value_at() - h.key_at();
                    let hash = Header::new(key_len, 0, true, h.has_deadline());
                    self.rewrite(i, hash, self.expiry(i).deadline, Some(&[]));
                }
                self.hashes.insert(i, fields);
            }
        }
    }

    /// Moves an entry to a new place in the arena with a new header (same key), for a value of another
    /// length or a deadline the old entry had no room for. `value`: the new value, or `None` to keep it.
    fn rewrite(&mut self, i: Idx, h: Header, deadline: Tick, value: Option<&[u8]>) {
        let (old, _) = self.entry(i);
        let from = self.slot(i).loc;
        let to = self.arena.alloc(h.len());
        let bytes = self.arena.bytes_mut(to, h.len());
        h.write(bytes);
        if h.has_deadline() {
            bytes[Header::SIZE..Header::SIZE + 8].copy_from_slice(&deadline.to_le_bytes());
        }
        if let Some(v) = value {
            bytes[h.value_at()..].copy_from_slice(v);
        } else {
            let len = h.value_len as usize;
            self.arena.copy(from.add(old.value_at()), to.add(h.value_at()), len);
        }
        let key_len = h.value_at() - h.key_at();
        self.arena.copy(from.add(old.key_at()), to.add(h.key_at()), key_len);
        self.slot_mut(i).loc = to;
        self.arena.free(from, old.len());
        self.compact();
    }

    /// Marks an entry as the most recently used.
    pub(super) fn promote(&mut self, i: Idx) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// Removes an entry; returns its bytes as [`Store::bytes`] counts them.
    pub(super) fn remove(&mut self, i: Idx) -> u64 {
        let bytes = self.bytes(i);
        let hash = self.hasher.hash_one(self.key(i));
        match self.index.find_entry(hash, |&j| j == i) {
            Ok(entry) => {
                entry.remove();
            }
            Err(_) => unreachable!("a live slot is always indexed"),
        }
        self.unlink(i);
        self.hashes.remove(&i);
        let (h, _) = self.entry(i);
        self.arena.free(self.slot(i).loc, h.len());
        let free = self.free;
        self.slot_mut(i).next = free;
        self.free = i;
        self.len -= 1;
        self.compact();
        bytes
    }

    /// Removes the least recently used entry; returns its bytes, or `None` if the store is empty.
    pub(super) fn pop_lru(&mut self) -> Option<u64> {
        (self.tail != NIL).then(|| self.remove(self.tail))
    }

    /// Drops every entry and gives the memory back.
    pub(super) fn clear(&mut self) {
        *self = Store::with_arena(self.arena.emptied());
    }

    /// Moves the live entries out of the arena's emptiest segment once its dead bytes pass the arena's
    /// bound, so that the segment can be given back. An entry is live if the index leads to a slot at its
    /// place: an entry removed, or moved by a rewrite, is not. Slot indices do not change.
    fn compact(&mut self) {
        let Some(seg) = self.arena.victim() else {
            return;
        };
        let end = self.arena.used(seg);
        let mut at = Loc { seg, off: 0 };
        // Once its last live entry has moved, the segment is given back: nothing more to read in it.
        while at.off < end && self.arena.is_live(seg) {
            let len = Header::read(self.arena.bytes(at)).len();
            let hash = self.hasher.hash_one(key_at(&self.arena, at));
            let slots = &self.slots;
            if let Some(&i) = self.index.find(hash, |&j| slots[j as usize].loc == at) {
                let to = self.arena.alloc(len);
                self.arena.copy(at, to, len);
                self.slot_mut(i).loc = to;
                self.arena.free(at, len);
            }
            at = at.add(len);
        }
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
    //! whatever the slots, links, free list and arena do, the two must agree after every step. The arena's
    //! segments are small (256 bytes, entries over 16 bytes on their own), so that both kinds of segment,
    //! their reuse and compaction all happen within a few hundred operations.

    use super::*;
    use proptest::prelude::*;

    const SEGMENT: usize = 256;

    fn small_store() -> Store {
        Store::with_arena(Arena::with_segment(SEGMENT))
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert, or replace the value if the key is present.
        Put(u8, Vec<u8>),
        PutHash(u8, u8),
        /// Set a known Redis expiry on the key, if present.
        Deadline(u8, Tick),
        Get(u8),
        Remove(u8),
        PopLru,
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct keys, so that replaces, removes and free-slot reuse happen often; values from empty to
        // larger than a sixteenth of a segment; clearing rare enough for the arena to fill and compact.
        prop_oneof![
            30 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(k, v)| Op::Put(k, v)),
            10 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..24)).prop_map(|(k, v)| Op::Put(k, v)),
            10 => (any::<u8>(), any::<u8>()).prop_map(|(k, f)| Op::PutHash(k, f)),
            10 => (any::<u8>(), 0..1000u64).prop_map(|(k, t)| Op::Deadline(k, t)),
            30 => any::<u8>().prop_map(Op::Get),
            20 => any::<u8>().prop_map(Op::Remove),
            10 => Just(Op::PopLru),
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

    /// The arena's accounting: its live bytes are exactly the entries the slots point at.
    fn check_arena(store: &Store) {
        let mut live = 0;
        let mut at = store.head;
        while at != NIL {
            live += store.entry(at).0.len() as u64;
            at = store.slot(at).next;
        }
        assert_eq!(store.arena.live(), live, "live bytes");
    }

    fn check(store: &Store, model: &[(Vec<u8>, Model, Tick)]) {
        assert_eq!(store.len(), model.len());
        // Walk from the most recently used entry: the model's order, front first.
        let mut at = store.head;
        for (k, value, deadline) in model {
            assert_ne!(at, NIL, "list shorter than the model");
            assert_eq!(store.find(k), Some(at), "index of {k:?}");
            assert_eq!(store.key(at), &k[..]);
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
            let expiry = store.expiry(at);
            assert_eq!(expiry.deadline, *deadline, "deadline of {k:?}");
            assert_eq!(expiry.fresh_until, k.len() as Tick, "fresh_until of {k:?}");
            at = store.slot(at).next;
        }
        assert_eq!(at, NIL, "list longer than the model");
        assert_eq!(
            store.hashes.len(),
            model.iter().filter(|(_, v, _)| matches!(v, Model::Hash(_))).count()
        );
        check_arena(store);
    }

    /// Moves the model's entry for `k` to the front, with `value` if given; returns whether it was there.
    fn touch(model: &mut Vec<(Vec<u8>, Model, Tick)>, k: &[u8], value: Option<Model>) -> bool {
        match model.iter().position(|(mk, _, _)| mk == k) {
            Some(at) => {
                let mut entry = model.remove(at);
                if let Some(v) = value {
                    entry.1 = v;
                }
                model.insert(0, entry);
                true
            }
            None => {
                if let Some(v) = value {
                    model.insert(0, (k.to_vec(), v, NEVER));
                }
                false
            }
        }
    }

    /// Each entry's `fresh_until` is its key's length, so that the check can tell whether it survived.
    fn fresh(k: &[u8]) -> Expiry {
        Expiry {
            fresh_until: k.len() as Tick,
            deadline: NEVER,
        }
    }

    fn put(store: &mut Store, k: &[u8], value: Value<'_>) {
        match store.find(k) {
            Some(i) => {
                store.replace(i, value);
                store.promote(i);
            }
            None => {
                store.insert(k, value, fresh(k));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn store_matches_an_lru_model(ops in proptest::collection::vec(op(), 1..1500)) {
            let mut store = small_store();
            let mut model: Vec<(Vec<u8>, Model, Tick)> = Vec::new();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let k = key(k);
                        put(&mut store, &k, Value::Str(&v));
                        touch(&mut model, &k, Some(Model::Str(v)));
                    }
                    Op::PutHash(k, f) => {
                        let k = key(k);
                        put(&mut store, &k, Value::Hash(one_field(f)));
                        touch(&mut model, &k, Some(Model::Hash(f)));
                    }
                    Op::Deadline(k, t) => {
                        let k = key(k);
                        if let Some(i) = store.find(&k) {
                            store.set_expiry(i, Expiry { deadline: t, ..store.expiry(i) });
                        }
                        if let Some(entry) = model.iter_mut().find(|(mk, _, _)| *mk == k) {
                            entry.2 = t;
                        }
                    }
                    Op::Get(k) => {
                        let k = key(k);
                        let found = store.find(&k);
                        if let Some(i) = found {
                            store.promote(i);
                        }
                        prop_assert_eq!(found.is_some(), touch(&mut model, &k, None));
                    }
                    Op::Remove(k) => {
                        let k = key(k);
                        if let Some(i) = store.find(&k) {
                            store.remove(i);
                        }
                        model.retain(|(mk, _, _)| *mk != k);
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

    /// Random writes, reads and deletes over a key space larger than the store: removals land anywhere,
    /// so without compaction segments holding a single live entry would pile up.
    #[test]
    fn compaction_bounds_the_dead_bytes_under_random_churn() {
        let mut store = small_store();
        let mut values: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut jitter = crate::jitter::Jitter::new(0x9e37_79b9_7f4a_7c15);
        let mut below = |n: u64| (jitter.unit() * n as f64) as u64;
        let mut peak_capacity = 0;
        for _ in 0..20_000 {
            let k = below(1000).to_le_bytes()[..2].to_vec();
            match below(16) {
                0..=7 => {
                    let v = vec![below(256) as u8; below(13) as usize];
                    put(&mut store, &k, Value::Str(&v));
                    values.insert(k, v);
                }
                8..=11 => {
                    if let Some(i) = store.find(&k) {
                        store.promote(i);
                    }
                }
                _ => {
                    if let Some(i) = store.find(&k) {
                        store.remove(i);
                    }
                    values.remove(&k);
                }
            }
            while store.len() > 300 {
                let tail = store.tail;
                values.remove(store.key(tail));
                store.pop_lru();
            }
            let arena = &store.arena;
            let bound = (arena.capacity() / 16).max(2 * SEGMENT as u64) + SEGMENT as u64;
            assert!(arena.dead() <= bound, "dead bytes {} over {bound}", arena.dead());
            peak_capacity = peak_capacity.max(arena.capacity());
        }
        // 300 entries of at most 8 + 2 + 12 bytes take at most 26 segments' worth; the arena stayed within a
        // third more.
        assert!(peak_capacity <= 35 * SEGMENT as u64, "peak capacity {peak_capacity}");
        check_arena(&store);
        assert_eq!(store.len(), values.len());
        for (k, v) in &values {
            let i = store.find(k).expect("a held key is found");
            assert!(
                matches!(store.value(i), ValueRef::Str(got) if got == &v[..]),
                "value of {k:?}"
            );
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
    fn a_slot_is_twenty_four_bytes_and_an_entry_adds_eight() {
        // The figures the module's memory budget is built on; a new field should be a deliberate choice.
        assert_eq!(std::mem::size_of::<Slot>(), 24);
        let mut store = small_store();
        let i = store.insert(b"key", Value::Str(b"value"), fresh(b"key"));
        assert_eq!(store.entry(i).0.len(), 8 + 3 + 5);
        assert_eq!(store.arena.live(), 16);
        // A known deadline takes 8 more.
        store.set_expiry(
            i,
            Expiry {
                deadline: 1,
                ..store.expiry(i)
            },
        );
        assert_eq!(store.arena.live(), 24);
    }
}
