//! Verified API keys, kept in memory so that authentication costs no database round trip
//! per request.
//!
//! Keys are cached by their public prefix; the presented key's hash is compared with the
//! stored one in constant time. A background task ([`KeyCache::refresh`]) re-reads every
//! cached key well within `auth.cache_ttl`, so a revocation takes effect within it, and
//! writes `last_used_at` at most every [`USAGE_WRITE_INTERVAL`] per key. While the database
//! cannot be read, known keys keep their last known state (requests go on being accepted
//! into the queue, as they do during any database outage).
//!
//! Prefixes that match no key are remembered for `cache_ttl` too (bounded), and a look-up
//! of an uncached prefix first asks whether the client may have one (see
//! `RateLimits::may_look_up`), so a flood of made-up keys costs at most the client's
//! per-IP budget of indexed queries. Concurrent misses on one prefix wait for a single
//! look-up (a cold cache under load asks once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use entity::api_keys;
use sea_orm::DatabaseConnection;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::ApiError;
use crate::store::keys::{self, PresentedKey, Scopes};
use crate::store::StoreError;

/// `last_used_at` is written at most this often per key.
pub const USAGE_WRITE_INTERVAL: Duration = Duration::from_secs(5);
/// Most unknown prefixes remembered; beyond it they are looked up each time (within the
/// client's per-IP budget of refused keys).
const MAX_UNKNOWN: usize = 10_000;

/// A key as the cache knows it.
#[derive(Debug)]
pub struct CachedKey {
    pub id: i64,
    pub prefix: String,
    /// `None` for an operator's key.
    pub customer_id: Option<Uuid>,
    pub scopes: Scopes,
    pub revoked: bool,
    sha256: String,
    usage: Arc<Usage>,
}

/// When a key was last used (Unix seconds), and what of it is already in the database.
#[derive(Debug, Default)]
struct Usage {
    used: AtomicI64,
    written: AtomicI64,
}

impl CachedKey {
    fn from_row(row: api_keys::Model, usage: Arc<Usage>) -> Self {
        CachedKey {
            id: row.id,
            prefix: row.prefix,
            customer_id: row.customer_id,
            // A row with a scope this version does not know grants nothing it does not know;
            // a customer's key never has an operator's scope, whatever its row says.
            scopes: Scopes::parse(&row.scopes)
                .unwrap_or_default()
                .for_customer(row.customer_id.is_some()),
            revoked: row.revoked_at.is_some(),
            sha256: row.key_sha256,
            usage,
        }
    }

    fn matches(&self, key: &PresentedKey) -> bool {
        self.sha256.as_bytes().ct_eq(key.sha256().as_bytes()).into()
    }

    /// Notes a use; one relaxed store per second at most.
    pub fn mark_used(&self) {
        let now = Utc::now().timestamp();
        if self.usage.used.load(Ordering::Relaxed) != now {
            self.usage.used.store(now, Ordering::Relaxed);
        }
    }
}

/// What the cache says about a presented key.
#[derive(Debug, Clone)]
pub enum Verdict {
    Valid(Arc<CachedKey>),
    Revoked,
    Unknown,
}

#[derive(Clone)]
enum Slot {
    /// The keys with this prefix (usually one).
    Known(Arc<[Arc<CachedKey>]>),
    /// No key has this prefix, as of then.
    Unknown(Instant),
}

pub struct KeyCache {
    db: DatabaseConnection,
    ttl: Duration,
    slots: RwLock<HashMap<String, Slot>>,
    /// One look-up at a time per prefix.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyCache {
    pub fn new(db: DatabaseConnection, ttl: Duration) -> Self {
        KeyCache {
            db,
            ttl,
            slots: RwLock::default(),
            gates: Mutex::default(),
        }
    }

    /// What the key is: from memory when known, else from the database once `may_look_up`
    /// allowed it (its error is returned as is).
    pub async fn resolve(
        &self,
        key: &PresentedKey,
        may_look_up: impl FnOnce() -> Result<(), ApiError>,
    ) -> Result<Verdict, ApiError> {
        if let Some(verdict) = self.cached(key) {
            return Ok(verdict);
        }
        let gate = self
            .gates
            .lock()
            .expect("not poisoned")
            .entry(key.prefix().to_string())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        // Whoever held the gate before may have loaded it.
        if let Some(verdict) = self.cached(key) {
            return Ok(verdict);
        }
        may_look_up()?;
        Ok(self.load(key).await?)
    }

    /// The answer from memory, or `None` when only the database can tell.
    fn cached(&self, key: &PresentedKey) -> Option<Verdict> {
        let slots = self.slots.read().expect("not poisoned");
        match slots.get(key.prefix())? {
            Slot::Known(candidates) => Some(judge(candidates, key)),
            Slot::Unknown(at) if at.elapsed() < self.ttl => Some(Verdict::Unknown),
            Slot::Unknown(_) => None,
        }
    }

    /// Asks the database about the key's prefix and remembers the answer.
    async fn load(&self, key: &PresentedKey) -> Result<Verdict, StoreError> {
        let rows = keys::by_prefixes(&self.db, &[key.prefix().to_string()]).await?;
        let mut slots = self.slots.write().expect("not poisoned");
        if rows.is_empty() {
            let unknown = slots
                .values()
                .filter(|s| matches!(s, Slot::Unknown(_)))
                .count();
            if unknown < MAX_UNKNOWN {
                slots.insert(key.prefix().to_string(), Slot::Unknown(Instant::now()));
            }
            return Ok(Verdict::Unknown);
        }
        let candidates = self.known(&slots, rows);
        let verdict = judge(&candidates, key);
        slots.insert(key.prefix().to_string(), Slot::Known(candidates));
        Ok(verdict)
    }

    /// Builds cache entries from rows, keeping the usage counters of keys already known.
    fn known(
        &self,
        slots: &HashMap<String, Slot>,
        rows: Vec<api_keys::Model>,
    ) -> Arc<[Arc<CachedKey>]> {
        rows.into_iter()
            .map(|row| {
                let usage = match slots.get(&row.prefix) {
                    Some(Slot::Known(old)) => {
                        old.iter().find(|k| k.id == row.id).map(|k| k.usage.clone())
                    }
                    _ => None,
                }
                .unwrap_or_default();
                Arc::new(CachedKey::from_row(row, usage))
            })
            .collect()
    }

    /// Re-reads every cached key (revocations, scope changes) and forgets expired unknown
    /// prefixes. On a database error the cache keeps what it has.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let prefixes: Vec<String> = {
            let mut slots = self.slots.write().expect("not poisoned");
            let ttl = self.ttl;
            slots.retain(|_, slot| !matches!(slot, Slot::Unknown(at) if at.elapsed() >= ttl));
            slots
                .iter()
                .filter(|(_, slot)| matches!(slot, Slot::Known(_)))
                .map(|(prefix, _)| prefix.clone())
                .collect()
        };
        // Gates nobody waits on: their look-ups are done.
        self.gates
            .lock()
            .expect("not poisoned")
            .retain(|_, gate| Arc::strong_count(gate) > 1);
        if prefixes.is_empty() {
            return Ok(());
        }
        let rows = keys::by_prefixes(&self.db, &prefixes).await?;
        let mut by_prefix: HashMap<String, Vec<api_keys::Model>> = HashMap::new();
        for row in rows {
            by_prefix.entry(row.prefix.clone()).or_default().push(row);
        }
        let mut slots = self.slots.write().expect("not poisoned");
        for prefix in prefixes {
            match by_prefix.remove(&prefix) {
                Some(rows) => {
                    let candidates = self.known(&slots, rows);
                    slots.insert(prefix, Slot::Known(candidates));
                }
                // Keys are never deleted, but if one were, it would simply be unknown.
                None => {
                    slots.remove(&prefix);
                }
            }
        }
        Ok(())
    }

    /// Writes `last_used_at` for keys used since their last write, at most every
    /// [`USAGE_WRITE_INTERVAL`] per key.
    pub async fn write_usage(&self) -> Result<(), StoreError> {
        let now = Utc::now().timestamp();
        let due: Vec<(i64, i64, Arc<Usage>)> = {
            let slots = self.slots.read().expect("not poisoned");
            slots
                .values()
                .filter_map(|slot| match slot {
                    Slot::Known(keys) => Some(keys.iter()),
                    Slot::Unknown(_) => None,
                })
                .flatten()
                .filter_map(|key| {
                    let used = key.usage.used.load(Ordering::Relaxed);
                    let written = key.usage.written.load(Ordering::Relaxed);
                    let due =
                        used > written && now - written >= USAGE_WRITE_INTERVAL.as_secs() as i64;
                    due.then(|| (key.id, used, key.usage.clone()))
                })
                .collect()
        };
        for (id, used, usage) in due {
            let at: DateTime<Utc> = DateTime::from_timestamp(used, 0).unwrap_or_else(Utc::now);
            keys::touch(&self.db, id, at).await?;
            usage.written.store(used, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Compares the key with every candidate (no early exit: timing says nothing about which).
fn judge(candidates: &[Arc<CachedKey>], key: &PresentedKey) -> Verdict {
    let mut found = None;
    for candidate in candidates {
        if candidate.matches(key) {
            found = Some(candidate);
        }
    }
    match found {
        Some(k) if k.revoked => Verdict::Revoked,
        Some(k) => Verdict::Valid(k.clone()),
        None => Verdict::Unknown,
    }
}
