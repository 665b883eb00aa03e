//! API keys and customers: creating, listing, revoking, and the bootstrap operator key.
//!
//! A customer's key has `send`, `webhook` and/or `read` and acts for its customer only;
//! an operator's key has `admin`, belongs to no customer and acts for all (SPEC §16).
//!
//! A key is `msk_` followed by 64 hex digits (32 random bytes from the operating system).
//! Only its SHA-256 is stored, with its first [`PREFIX_LEN`] characters as a public handle:
//! keys are looked up by prefix and then compared by hash in constant time (see
//! `http::key_cache`), so an index look-up never depends on the secret part.

use std::fmt;

use chrono::{DateTime, Utc};
use entity::{api_keys, customers};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DbBackend, EntityTrait, QueryFilter, QueryOrder, Set,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::begin_write;
use super::StoreError;

/// What every key starts with, so a leaked key is recognisable (secret scanners, logs).
pub const KEY_MARKER: &str = "msk_";
/// Hex digits after the marker.
const SECRET_HEX_LEN: usize = 64;
pub const KEY_LEN: usize = KEY_MARKER.len() + SECRET_HEX_LEN;
/// `msk_` and 8 hex digits: shown by `keys list`, stored to find a key without its hash.
pub const PREFIX_LEN: usize = KEY_MARKER.len() + 8;
/// Longest customer or key name.
pub const MAX_NAME_CHARS: usize = 200;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Send messages, manage its customer's webhook endpoints and addresses, and read.
    Send,
    /// Post inbound provider webhooks.
    Webhook,
    /// Read its customer's conversations and message statuses.
    Read,
    /// An operator's: everything, for every customer, dead letters included. Never on a
    /// customer's key.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Send, Scope::Webhook, Scope::Read, Scope::Admin];
    /// What a customer's key may have.
    pub const CUSTOMER: [Scope; 3] = [Scope::Send, Scope::Webhook, Scope::Read];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Send => "send",
            Scope::Webhook => "webhook",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Send => 1,
            Scope::Webhook => 2,
            Scope::Admin => 4,
            Scope::Read => 8,
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| format!("unknown scope {s:?} (send, webhook or read)"))
    }
}

/// A set of scopes, stored as a comma-separated list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// These scopes on a customer's key (`true`): without `admin`, which only an
    /// operator's key has.
    pub fn for_customer(self, customer: bool) -> Self {
        if customer {
            Scopes(self.0 & !Scope::Admin.bit())
        } else {
            self
        }
    }

    /// Reads the stored form; unknown names are refused, not ignored.
    pub fn parse(stored: &str) -> Result<Self, String> {
        stored
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse::<Scope>)
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// A key as a client presented it, checked for shape (no look-up yet). Holds the hash,
/// not the key, so the key itself goes no further than the request header.
#[derive(Clone, PartialEq, Eq)]
pub struct PresentedKey {
    prefix: String,
    sha256: String,
}

impl PresentedKey {
    /// `None` unless `text` has the shape of a key this server issues.
    pub fn parse(text: &str) -> Option<Self> {
        let secret = text.strip_prefix(KEY_MARKER)?;
        let well_formed = secret.len() == SECRET_HEX_LEN
            && secret
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        well_formed.then(|| PresentedKey {
            prefix: text[..PREFIX_LEN].to_string(),
            sha256: key_sha256(text),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hex SHA-256 of the whole key, as stored.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresentedKey({}…)", self.prefix)
    }
}

/// Hex SHA-256 of a key: the only form of it that is stored.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random key.
pub fn generate() -> Result<String, StoreError> {
    let mut secret = [0u8; SECRET_HEX_LEN / 2];
    getrandom::fill(&mut secret)
        .map_err(|e| StoreError::Rejected(format!("no randomness from the OS: {e}")))?;
    Ok(format!("{KEY_MARKER}{}", hex::encode(secret)))
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("no customer {0}")]
    UnknownCustomer(Uuid),
    #[error("no API key matches {0:?}")]
    NotFound(String),
    #[error("{count} API keys match {given:?}; give more of the prefix or the id")]
    Ambiguous { given: String, count: usize },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for KeysError {
    fn from(err: sea_orm::DbErr) -> Self {
        KeysError::Store(err.into())
    }
}

fn check_name(what: &str, name: &str) -> Result<String, KeysError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(KeysError::Invalid(format!(
            "the {what} name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(KeysError::Invalid(format!(
            "the {what} name must not contain control characters"
        )));
    }
    Ok(name.to_string())
}

pub async fn create_customer(db: &DatabaseConnection, name: &str) -> Result<Uuid, KeysError> {
    let name = check_name("customer", name)?;
    let id = Uuid::new_v4();
    customers::ActiveModel {
        id: Set(id),
        name: Set(name),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await?;
    Ok(id)
}

pub async fn customers(db: &DatabaseConnection) -> Result<Vec<customers::Model>, StoreError> {
    Ok(customers::Entity::find()
        .order_by_asc(customers::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Creates a customer's key; returns its row and the key, which exists nowhere else from
/// now on. `admin` is refused: it belongs to operators' keys ([`create_operator`]).
pub async fn create(
    db: &DatabaseConnection,
    customer_id: Uuid,
    name: &str,
    scopes: Scopes,
) -> Result<(api_keys::Model, String), KeysError> {
    let name = check_name("key", name)?;
    if scopes.contains(Scope::Admin) {
        return Err(KeysError::Invalid(
            "admin is an operator's scope, never a customer's: create an operator key \
             (keys create --operator --name …)"
                .into(),
        ));
    }
    if scopes.is_empty() {
        return Err(KeysError::Invalid("a key needs at least one scope".into()));
    }
    if customers::Entity::find_by_id(customer_id)
        .one(db)
        .await?
        .is_none()
    {
        return Err(KeysError::UnknownCustomer(customer_id));
    }
    Ok(insert(db, Some(customer_id), &name, scopes).await?)
}

/// Creates an operator's key: `admin`, for every customer, of none.
pub async fn create_operator(
    db: &DatabaseConnection,
    name: &str,
) -> Result<(api_keys::Model, String), KeysError> {
    let name = check_name("key", name)?;
    Ok(insert(db, None, &name, operator_scopes()).await?)
}

fn operator_scopes() -> Scopes {
    [Scope::Admin].into_iter().collect()
}

async fn insert(
    db: &impl ConnectionTrait,
    customer_id: Option<Uuid>,
    name: &str,
    scopes: Scopes,
) -> Result<(api_keys::Model, String), StoreError> {
    let key = generate()?;
    let row = api_keys::ActiveModel {
        id: NotSet,
        customer_id: Set(customer_id),
        name: Set(name.to_string()),
        prefix: Set(key[..PREFIX_LEN].to_string()),
        key_sha256: Set(key_sha256(&key)),
        scopes: Set(scopes.to_string()),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok((row, key))
}

/// On a database without any API key, creates an operator key and returns it; otherwise
/// `None`. Two processes starting at once create one key between them: the check and the
/// insert run under a lock that only one transaction holds (SQLite's write lock taken by
/// `BEGIN IMMEDIATE`, a self-exclusive table lock on PostgreSQL).
pub async fn bootstrap_operator(db: &DatabaseConnection) -> Result<Option<String>, StoreError> {
    let txn = begin_write(db).await?;
    if db.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE")
            .await?;
    }
    if api_keys::Entity::find().one(&txn).await?.is_some() {
        txn.rollback().await?;
        return Ok(None);
    }
    let (_, key) = insert(&txn, None, "initial operator key", operator_scopes()).await?;
    txn.commit().await?;
    Ok(Some(key))
}

/// Every key, oldest first.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<api_keys::Model>, StoreError> {
    Ok(api_keys::Entity::find()
        .order_by_asc(api_keys::Column::Id)
        .all(db)
        .await?)
}

/// The keys whose prefix is one of `prefixes` (revoked ones included).
pub async fn by_prefixes(
    db: &DatabaseConnection,
    prefixes: &[String],
) -> Result<Vec<api_keys::Model>, StoreError> {
    let mut rows = Vec::new();
    // Bounded IN lists: well under every database's parameter limit.
    for chunk in prefixes.chunks(500) {
        rows.extend(
            api_keys::Entity::find()
                .filter(api_keys::Column::Prefix.is_in(chunk.iter().cloned()))
                .all(db)
                .await?,
        );
    }
    Ok(rows)
}

/// Records when keys were last used (written in the background, never per request).
pub async fn touch(
    db: &DatabaseConnection,
    id: i64,
    used_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    api_keys::Entity::update_many()
        .col_expr(api_keys::Column::LastUsedAt, Expr::value(used_at))
        .filter(api_keys::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

pub enum Revoked {
    Now(api_keys::Model),
    Already(api_keys::Model),
}

/// Revokes one key named by its id, its prefix (or the start of it), or the whole key.
pub async fn revoke(db: &DatabaseConnection, given: &str) -> Result<Revoked, KeysError> {
    let given = given.trim();
    let row = find_one(db, given).await?;
    if row.revoked_at.is_some() {
        return Ok(Revoked::Already(row));
    }
    let now = Utc::now();
    api_keys::Entity::update_many()
        .col_expr(api_keys::Column::RevokedAt, Expr::value(now))
        .filter(api_keys::Column::Id.eq(row.id))
        .filter(api_keys::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(Revoked::Now(api_keys::Model {
        revoked_at: Some(now),
        ..row
    }))
}

async fn find_one(db: &DatabaseConnection, given: &str) -> Result<api_keys::Model, KeysError> {
    let not_found = || KeysError::NotFound(given.to_string());
    if let Ok(id) = given.parse::<i64>() {
        return api_keys::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(not_found);
    }
    if PresentedKey::parse(given).is_some() {
        return api_keys::Entity::find()
            .filter(api_keys::Column::KeySha256.eq(key_sha256(given)))
            .one(db)
            .await?
            .ok_or_else(not_found);
    }
    // A prefix, or its start: at least the marker and one digit, so "msk_" alone is refused.
    if !given.starts_with(KEY_MARKER) || given.len() <= KEY_MARKER.len() {
        return Err(KeysError::Invalid(format!(
            "{given:?} is neither a key id nor a key prefix like msk_1a2b3c4d"
        )));
    }
    let mut matches: Vec<api_keys::Model> = list(db)
        .await?
        .into_iter()
        .filter(|k| {
            if given.len() <= k.prefix.len() {
                k.prefix.starts_with(given)
            } else {
                given.starts_with(&k.prefix)
            }
        })
        .collect();
    match matches.len() {
        0 => Err(not_found()),
        1 => Ok(matches.remove(0)),
        count => Err(KeysError::Ambiguous {
            given: given.to_string(),
            count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_LEN);
        let presented = PresentedKey::parse(&a).expect("a generated key parses");
        assert_eq!(presented.prefix(), &a[..PREFIX_LEN]);
        assert_eq!(presented.sha256(), key_sha256(&a));
        assert!(!format!("{presented:?}").contains(&a[PREFIX_LEN..]));
    }

    #[test]
    fn only_well_formed_keys_parse() {
        let good = format!("msk_{}", "ab".repeat(32));
        assert!(PresentedKey::parse(&good).is_some());
        for bad in [
            String::new(),
            "msk_".into(),
            format!("msk_{}", "ab".repeat(31)),
            format!("msk_{}", "AB".repeat(32)),
            format!("msk_{}", "zz".repeat(32)),
            format!("sk_{}", "ab".repeat(32)),
            format!("{good}0"),
            format!("msk_{}é", "ab".repeat(31)),
        ] {
            assert!(PresentedKey::parse(&bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn scopes_round_trip_and_refuse_unknown_names() {
        let scopes: Scopes = [Scope::Webhook, Scope::Send].into_iter().collect();
        assert_eq!(scopes.to_string(), "send,webhook");
        assert_eq!(Scopes::parse("send,webhook").unwrap(), scopes);
        assert!(scopes.contains(Scope::Send) && !scopes.contains(Scope::Admin));
        assert_eq!(Scopes::all().to_string(), "send,webhook,read,admin");
        assert!(!Scopes::all().for_customer(true).contains(Scope::Admin));
        assert!(Scopes::all().for_customer(false).contains(Scope::Admin));
        assert!(Scopes::parse("send,root").is_err());
        assert!(Scopes::parse("").unwrap().is_empty());
    }
}
