//! Whether the service can use its database, for `/readyz`: not only that it answers
//! (`SELECT 1` passes with every privilege revoked), but that the service can read and
//! write its tables.
//!
//! - PostgreSQL: the privileges the service needs on each table (`has_table_privilege`,
//!   one privilege at a time: with several it answers whether *any* is held), and that the
//!   session may write at all (not a read-only server or transaction).
//! - SQLite: a read of every table.
//!
//! Whether writes succeed is not probed here: a probe would queue behind the writer (and
//! a write that changes nothing succeeds on a full disk). The writer's own outcomes say
//! it ([`super::outage`]): readiness fails from the first failed write until one commits.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use super::writer::MessageWriter;
use super::StoreError;

/// The tables the service reads, and what it writes to each.
const NEEDED: &[(&str, &[&str])] = &[
    ("customers", &["SELECT"]),
    ("conversations", &["SELECT", "INSERT", "UPDATE"]),
    ("message_bodies", &["SELECT", "INSERT"]),
    ("messages", &["SELECT", "INSERT", "UPDATE"]),
    ("dead_letters", &["SELECT", "INSERT", "UPDATE", "DELETE"]),
    ("pending_events", &["SELECT", "INSERT", "DELETE"]),
    ("api_keys", &["SELECT", "INSERT", "UPDATE"]),
];

/// What is wrong, in words fit for a readiness answer; the raw error is for the log.
#[derive(Debug)]
pub struct Unhealthy {
    pub what: &'static str,
    pub error: String,
}

/// `db` is the caller's pool; `writer` is the one whose writes tell whether the database
/// takes them.
pub async fn check(db: &DatabaseConnection, writer: &MessageWriter) -> Result<(), Unhealthy> {
    if let Some(outage) = writer.health().failing() {
        return Err(Unhealthy {
            what: "not taking writes",
            error: outage.error,
        });
    }
    db.execute_unprepared("SELECT 1")
        .await
        .map_err(|e| Unhealthy {
            what: "unreachable",
            error: StoreError::from(e).to_string(),
        })?;
    let cannot_use = |error: String| Unhealthy {
        what: "cannot read or write its tables",
        error,
    };
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let row = db
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    privileges_sql(),
                ))
                .await
                .map_err(|e| cannot_use(e.to_string()))?
                .ok_or_else(|| cannot_use("no answer to the privilege check".into()))?;
            let missing: Option<String> = row
                .try_get("", "missing")
                .map_err(|e| cannot_use(e.to_string()))?;
            let read_only: bool = row
                .try_get("", "read_only")
                .map_err(|e| cannot_use(e.to_string()))?;
            if let Some(missing) = missing {
                return Err(cannot_use(format!("missing privileges: {missing}")));
            }
            if read_only {
                return Err(cannot_use("the session is read-only".into()));
            }
            Ok(())
        }
        _ => db
            .execute_unprepared(&tables_read_sql())
            .await
            .map(|_| ())
            .map_err(|e| cannot_use(e.to_string())),
    }
}

/// One row: `missing` (the privileges not held, or NULL) and `read_only`.
fn privileges_sql() -> String {
    let checks: Vec<String> = NEEDED
        .iter()
        .flat_map(|(table, privileges)| {
            privileges.iter().map(move |privilege| {
                format!(
                    "CASE WHEN has_table_privilege('{table}', '{privilege}') THEN NULL \
                     ELSE '{privilege} on {table}' END"
                )
            })
        })
        .collect();
    format!(
        "SELECT NULLIF(concat_ws(', ', {}), '') AS missing, \
         current_setting('transaction_read_only') = 'on' AS read_only",
        checks.join(", ")
    )
}

/// Reads one row of every table (each must exist and be readable).
fn tables_read_sql() -> String {
    let reads: Vec<String> = NEEDED
        .iter()
        .map(|(table, _)| format!("(SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT 1))"))
        .collect();
    format!("SELECT {}", reads.join(" + "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_privilege_check_names_each_privilege_alone() {
        let sql = privileges_sql();
        assert!(
            sql.starts_with("SELECT NULLIF(concat_ws(', ', CASE WHEN"),
            "{sql}"
        );
        assert!(sql.contains("has_table_privilege('messages', 'INSERT')"));
        assert!(sql.ends_with(
            "), '') AS missing, current_setting('transaction_read_only') = 'on' AS read_only"
        ));
    }
}
