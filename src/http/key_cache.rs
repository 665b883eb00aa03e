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
//! look-up (moka's `try_get_with` coalesces them: a cold cache under load asks once).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::api_keys;
use moka::future::Cache;
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
const MAX_UNKNOWN: u64 = 10_000;

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

/// The keys with one prefix (usually one).
type Candidates = Arc<[Arc<CachedKey>]>;

/// Why a look-up put nothing in `known`; shared by everyone who waited for it.
#[derive(Debug)]
enum Miss {
    Unknown,
    Store(StoreError),
}

pub struct KeyCache {
    db: DatabaseConnection,
    /// Keys by prefix. They never expire: [`KeyCache::refresh`] re-reads them, and while the
    /// database cannot be read they keep their last known state.
    known: Cache<String, Candidates>,
    /// Prefixes that no key had, as of less than `cache_ttl` ago.
    unknown: Cache<String, ()>,
}

impl KeyCache {
    pub fn new(db: DatabaseConnection, ttl: Duration) -> Self {
        KeyCache {
            db,
            known: Cache::builder().build(),
            unknown: Cache::builder()
                .max_capacity(MAX_UNKNOWN)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// What the key is: from memory when known, else from the database once `may_look_up`
    /// allowed it (its error is returned as is).
    pub async fn resolve(
        &self,
        key: &PresentedKey,
        may_look_up: impl FnOnce() -> Result<(), ApiError>,
    ) -> Result<Verdict, ApiError> {
        let prefix = key.prefix();
        if let Some(candidates) = self.known.get(prefix).await {
            return Ok(judge(&candidates, key));
        }
        if self.unknown.contains_key(prefix) {
            return Ok(Verdict::Unknown);
        }
        may_look_up()?;
        let loaded = self
            .known
            .try_get_with_by_ref(prefix, self.load(prefix))
            .await;
        match loaded {
            Ok(candidates) => Ok(judge(&candidates, key)),
            Err(miss) => match &*miss {
                Miss::Unknown => Ok(Verdict::Unknown),
                Miss::Store(err) => Err(err.clone().into()),
            },
        }
    }

    /// Asks the database about a prefix; one without keys is remembered in `unknown`.
    async fn load(&self, prefix: &str) -> Result<Candidates, Miss> {
        let rows = keys::by_prefixes(&self.db, &[prefix.to_string()])
            .await
            .map_err(Miss::Store)?;
        if rows.is_empty() {
            self.unknown.insert(prefix.to_string(), ()).await;
            return Err(Miss::Unknown);
        }
        Ok(candidates(rows, None))
    }

    /// Re-reads every cached key (revocations, scope changes). On a database error the
    /// cache keeps what it has.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let prefixes: Vec<String> = self.known.iter().map(|(p, _)| (*p).clone()).collect();
        if prefixes.is_empty() {
            return Ok(());
        }
        let rows = keys::by_prefixes(&self.db, &prefixes).await?;
        let mut by_prefix: HashMap<String, Vec<api_keys::Model>> = HashMap::new();
        for row in rows {
            by_prefix.entry(row.prefix.clone()).or_default().push(row);
        }
        for prefix in prefixes {
            match by_prefix.remove(&prefix) {
                Some(rows) => {
                    let old = self.known.get(&prefix).await;
                    let fresh = candidates(rows, old.as_ref());
                    self.known.insert(prefix, fresh).await;
                }
                // Keys are never deleted, but if one were, it would simply be unknown.
                None => self.known.invalidate(&prefix).await,
            }
        }
        Ok(())
    }

    /// Writes `last_used_at` for keys used since their last write, at most every
    /// [`USAGE_WRITE_INTERVAL`] per key.
    pub async fn write_usage(&self) -> Result<(), StoreError> {
        let now = Utc::now().timestamp();
        let due: Vec<(i64, i64, Arc<Usage>)> = self
            .known
            .iter()
            .flat_map(|(_, keys)| keys.iter().cloned().collect::<Vec<_>>())
            .filter_map(|key| {
                let used = key.usage.used.load(Ordering::Relaxed);
                let written = key.usage.written.load(Ordering::Relaxed);
                let due = used > written && now - written >= USAGE_WRITE_INTERVAL.as_secs() as i64;
                due.then(|| (key.id, used, key.usage.clone()))
            })
            .collect();
        for (id, used, usage) in due {
            let at: DateTime<Utc> = DateTime::from_timestamp(used, 0).unwrap_or_else(Utc::now);
            keys::touch(&self.db, id, at).await?;
            usage.written.store(used, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Builds cache entries from rows, keeping the usage counters of keys already known.
fn candidates(rows: Vec<api_keys::Model>, old: Option<&Candidates>) -> Candidates {
    rows.into_iter()
        .map(|row| {
            let usage = old
                .and_then(|old| old.iter().find(|k| k.id == row.id))
                .map(|k| k.usage.clone())
                .unwrap_or_default();
            Arc::new(CachedKey::from_row(row, usage))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::ConnectionTrait;

    async fn database() -> (DatabaseConnection, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("ms-keys-{}.db", Uuid::new_v4()));
        let db = sea_orm::Database::connect(format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
        crate::store::migrate(&db).await.unwrap();
        (db, path)
    }

    fn presented(key: &str) -> PresentedKey {
        PresentedKey::parse(key).unwrap()
    }

    /// A `may_look_up` that refuses: whatever it is asked, the database is not.
    fn no_look_up() -> Result<(), ApiError> {
        Err(ApiError::Unavailable("asked the database".into()))
    }

    #[tokio::test]
    async fn answers_from_memory_keeps_keys_through_an_outage_and_sees_revocations() {
        let (db, path) = database().await;
        let (row, key) = keys::create_operator(&db, "k").await.unwrap();
        let made_up = format!("{}{}", &key[..keys::PREFIX_LEN], "0".repeat(64 - 8));
        let cache = KeyCache::new(db.clone(), Duration::from_secs(60));

        // Many waiting on a cold cache all get the answer.
        let waiting: Vec<PresentedKey> = (0..16).map(|_| presented(&key)).collect();
        let answers =
            futures_util::future::join_all(waiting.iter().map(|k| cache.resolve(k, || Ok(()))))
                .await;
        for answer in answers {
            assert!(matches!(answer, Ok(Verdict::Valid(k)) if k.id == row.id));
        }
        // Known now: no look-up is asked for.
        let again = cache.resolve(&presented(&key), no_look_up).await.unwrap();
        assert!(matches!(again, Verdict::Valid(_)));
        // The same prefix with another secret is no key, without a look-up either.
        let wrong = cache
            .resolve(&presented(&made_up), no_look_up)
            .await
            .unwrap();
        assert!(matches!(wrong, Verdict::Unknown));
        // A refused look-up is the caller's answer.
        let other = format!("msk_ffffffff{}", "0".repeat(56));
        let refused = cache.resolve(&presented(&other), no_look_up).await;
        assert!(matches!(refused, Err(ApiError::Unavailable(_))));

        // The table is gone: a refresh fails and the key stays known.
        db.execute_unprepared("ALTER TABLE api_keys RENAME TO api_keys_away")
            .await
            .unwrap();
        assert!(cache.refresh().await.is_err());
        let during = cache.resolve(&presented(&key), no_look_up).await.unwrap();
        assert!(matches!(during, Verdict::Valid(_)));
        db.execute_unprepared("ALTER TABLE api_keys_away RENAME TO api_keys")
            .await
            .unwrap();

        keys::revoke(&db, &key).await.unwrap();
        cache.refresh().await.unwrap();
        let revoked = cache.resolve(&presented(&key), no_look_up).await.unwrap();
        assert!(matches!(revoked, Verdict::Revoked));
        drop(db);
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn an_unknown_prefix_is_remembered_for_the_ttl_then_asked_again() {
        let (db, path) = database().await;
        let ttl = Duration::from_millis(200);
        let cache = KeyCache::new(db.clone(), ttl);
        let unknown = presented(&format!("msk_{}", "a".repeat(64)));
        let first = cache.resolve(&unknown, || Ok(())).await.unwrap();
        assert!(matches!(first, Verdict::Unknown));
        let remembered = cache.resolve(&unknown, no_look_up).await.unwrap();
        assert!(matches!(remembered, Verdict::Unknown));

        // Once the ttl is over, the database is asked again.
        let deadline = std::time::Instant::now() + ttl + Duration::from_secs(10);
        let asked = std::sync::atomic::AtomicBool::new(false);
        while !asked.load(Ordering::Relaxed) {
            assert!(std::time::Instant::now() < deadline, "never asked again");
            tokio::time::sleep(Duration::from_millis(20)).await;
            let verdict = cache
                .resolve(&unknown, || {
                    asked.store(true, Ordering::Relaxed);
                    Ok(())
                })
                .await
                .unwrap();
            assert!(matches!(verdict, Verdict::Unknown));
        }
        drop(db);
        let _ = std::fs::remove_file(path);
    }
}
