//! `Idempotency-Key` repeats and conflicts at the edge (SPEC §3.4): recently accepted header
//! keys, held in memory and bounded, so a repeat is answered without a database round trip
//! and a reused key with another request gets 422 before anything is enqueued.
//!
//! This cache is per process. Behind it the API reads the database (never writes), and the
//! worker is the backstop: an event whose key is stored with another fingerprint is
//! dead-lettered. What remains is a window across processes (see README, Idempotency).

use std::collections::HashMap;
use std::sync::Mutex;

use uuid::Uuid;

use crate::domain::IdempotencyKey;

/// What a request with a header key finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not accepted recently by this process; now reserved for this request.
    New,
    /// The same request was accepted as this event: answer with it again.
    Repeat(Uuid),
    /// The same request holds the key and has not been answered yet (its event may still
    /// fail to be enqueued).
    InProgress,
    /// Another request holds the key.
    Conflict,
}

#[derive(Debug, Clone)]
struct Entry {
    fingerprint: String,
    event_id: Uuid,
    /// Its event is in the queue (see [`RecentKeys::confirm`]).
    enqueued: bool,
}

/// Two generations of at most `capacity / 2` keys each: when the young one fills, it
/// becomes the old one and the old one is dropped. Bounded memory, O(1) work, and a key
/// stays known for at least `capacity / 2` later acceptances.
pub struct RecentKeys {
    half: usize,
    generations: Mutex<[HashMap<IdempotencyKey, Entry>; 2]>,
}

impl RecentKeys {
    pub fn new(capacity: usize) -> Self {
        RecentKeys {
            half: (capacity / 2).max(1),
            generations: Mutex::new([HashMap::new(), HashMap::new()]),
        }
    }

    /// Looks the key up and, when it is unknown, reserves it for `event_id` (so two
    /// concurrent requests with one key cannot both pass). Release a reservation whose
    /// event was not enqueued.
    pub fn check_and_reserve(
        &self,
        key: &IdempotencyKey,
        fingerprint: &str,
        event_id: Uuid,
    ) -> Seen {
        let mut generations = self.lock();
        let known = generations[0]
            .get(key)
            .or_else(|| generations[1].get(key))
            .cloned();
        if let Some(entry) = known {
            return match (entry.fingerprint == fingerprint, entry.enqueued) {
                (true, true) => Seen::Repeat(entry.event_id),
                (true, false) => Seen::InProgress,
                (false, _) => Seen::Conflict,
            };
        }
        if generations[0].len() >= self.half {
            generations.swap(0, 1);
            generations[0].clear();
        }
        generations[0].insert(
            key.clone(),
            Entry {
                fingerprint: fingerprint.to_string(),
                event_id,
                enqueued: false,
            },
        );
        Seen::New
    }

    /// Marks the reservation made for `event_id` enqueued: repeats get its answer from now.
    pub fn confirm(&self, key: &IdempotencyKey, event_id: Uuid) {
        let mut generations = self.lock();
        for generation in generations.iter_mut() {
            if let Some(entry) = generation.get_mut(key).filter(|e| e.event_id == event_id) {
                entry.enqueued = true;
            }
        }
    }

    /// Forgets a reservation made for `event_id` (its enqueue failed).
    pub fn release(&self, key: &IdempotencyKey, event_id: Uuid) {
        let mut generations = self.lock();
        for generation in generations.iter_mut() {
            if generation.get(key).is_some_and(|e| e.event_id == event_id) {
                generation.remove(key);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [HashMap<IdempotencyKey, Entry>; 2]> {
        // The maps stay consistent whatever panicked while holding the lock.
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> IdempotencyKey {
        IdempotencyKey::for_inbound("sms", uuid::Uuid::nil(), &n.to_string())
    }

    #[test]
    fn repeat_conflict_and_release() {
        let keys = RecentKeys::new(10);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(keys.check_and_reserve(&key(1), "fp", a), Seen::New);
        assert_eq!(
            keys.check_and_reserve(&key(1), "fp", b),
            Seen::InProgress,
            "not enqueued yet: no 202 that nothing backs"
        );
        keys.confirm(&key(1), a);
        assert_eq!(keys.check_and_reserve(&key(1), "fp", b), Seen::Repeat(a));
        assert_eq!(keys.check_and_reserve(&key(1), "other", b), Seen::Conflict);
        // Only the reservation's own event releases it.
        keys.release(&key(1), b);
        assert_eq!(keys.check_and_reserve(&key(1), "fp", b), Seen::Repeat(a));
        keys.release(&key(1), a);
        assert_eq!(keys.check_and_reserve(&key(1), "other", b), Seen::New);
    }

    #[test]
    fn bounded_and_keeps_at_least_half_the_capacity() {
        let keys = RecentKeys::new(100);
        for n in 0..1000 {
            keys.check_and_reserve(&key(n), "fp", Uuid::from_u128(n as u128));
            keys.confirm(&key(n), Uuid::from_u128(n as u128));
        }
        let held: usize = keys.lock().iter().map(HashMap::len).sum();
        assert!(held <= 100, "{held}");
        for n in 950..1000 {
            assert_eq!(
                keys.check_and_reserve(&key(n), "fp", Uuid::nil()),
                Seen::Repeat(Uuid::from_u128(n as u128)),
                "the last 50 keys are still known"
            );
        }
    }
}
