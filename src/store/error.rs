use sea_orm::{sqlx, DbErr, RuntimeErr};

/// What the persistence layer reports. The split is what the RetryScheduler needs:
/// `Unavailable` is worth retrying, `Rejected` will fail the same way every time.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database rejected the write: {0}")]
    Rejected(String),
    #[error("{0}")]
    SchemaBehind(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// What the message's customer is told (the database's own words are not for them).
    pub fn code(&self) -> crate::domain::ErrorCode {
        if self.is_transient() {
            crate::domain::ErrorCode::StorageUnavailable
        } else {
            crate::domain::ErrorCode::InternalError
        }
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        let text = err.to_string();
        if is_transient(&err) {
            StoreError::Unavailable(text)
        } else {
            StoreError::Rejected(text)
        }
    }
}

fn is_transient(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            sqlx_is_transient(e)
        }
        _ => false,
    }
}

fn sqlx_is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL SQLSTATE classes that describe the data itself (22 data exception,
            // 23 integrity violation) will fail again; everything else — connection loss
            // (08), serialization/deadlock (40), resources (53), shutdown (57), and also
            // missing privileges (42501), which an operator fixes — is worth retrying.
            if code.len() == 5 && code.chars().all(|c| c.is_ascii_alphanumeric()) {
                return !(code.starts_with("22") || code.starts_with("23"));
            }
            // SQLite primary result codes (the low byte of the extended code): busy, locked,
            // read-only (a filesystem turned read-only, a file's permissions: an operator
            // fixes it), I/O, full disk, cannot open, protocol.
            match code.parse::<i32>() {
                Ok(n) => matches!(n & 0xff, 5 | 6 | 8 | 10 | 13 | 14 | 15),
                Err(_) => false,
            }
        }
        _ => false,
    }
}
