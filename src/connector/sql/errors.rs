//! Turns database failures into [`ErrorKind`]s the sync engine acts on.

use std::io;

use crate::connector::{ConnectorError, ErrorKind};

/// The kind of a database failure.
pub fn kind_of(e: &sqlx::Error) -> ErrorKind {
    match e {
        sqlx::Error::Io(io) => match io.kind() {
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Unavailable,
        },
        sqlx::Error::PoolTimedOut => ErrorKind::Timeout,
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => {
            ErrorKind::Unavailable
        }
        sqlx::Error::Tls(_) => ErrorKind::Unavailable,
        sqlx::Error::Configuration(_) | sqlx::Error::InvalidArgument(_) => ErrorKind::Config,
        sqlx::Error::Database(db) => database_kind(db.as_ref()),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::Encode(_) => {
            ErrorKind::InvalidData
        }
        sqlx::Error::ColumnNotFound(_) | sqlx::Error::TypeNotFound { .. } => ErrorKind::Config,
        _ => ErrorKind::InvalidData,
    }
}

fn database_kind(db: &dyn sqlx::error::DatabaseError) -> ErrorKind {
    use sqlx::error::ErrorKind as Db;
    match db.kind() {
        Db::UniqueViolation | Db::ExclusionViolation => return ErrorKind::Conflict,
        Db::ForeignKeyViolation | Db::NotNullViolation | Db::CheckViolation => {
            return ErrorKind::InvalidData;
        }
        _ => {}
    }
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return postgres_kind(pg.code());
    }
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return mysql_kind(my.number());
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let code: i64 = db.code().and_then(|c| c.parse().ok()).unwrap_or(1);
        return sqlite_kind(code, db.message());
    }
    ErrorKind::InvalidData
}

/// By SQLSTATE class.
fn postgres_kind(code: &str) -> ErrorKind {
    match code {
        "57014" => ErrorKind::Timeout, // query_canceled (statement_timeout)
        "55P03" => ErrorKind::Timeout, // lock_not_available
        "40001" | "40P01" => ErrorKind::Unavailable, // serialization failure, deadlock
        "42501" => ErrorKind::Auth,    // insufficient_privilege
        "3D000" | "3F000" => ErrorKind::Config, // unknown database or schema
        _ => match &code[..code.len().min(2)] {
            "28" => ErrorKind::Auth,                             // invalid authorization
            "08" | "53" | "57" | "58" => ErrorKind::Unavailable, // connection, resources, shutdown, system
            "42" => ErrorKind::Config,                           // unknown table/column, syntax
            "22" | "23" => ErrorKind::InvalidData,               // data exception, integrity
            "0A" => ErrorKind::Config,                           // feature not supported
            _ => ErrorKind::InvalidData,
        },
    }
}

/// By MySQL/MariaDB error number.
fn mysql_kind(number: u16) -> ErrorKind {
    match number {
        1045 | 1044 | 1142 | 1143 | 1227 | 1698 => ErrorKind::Auth,
        1049 | 1046 | 1146 | 1054 | 1064 | 1109 | 1166 => ErrorKind::Config,
        1040 | 1053 | 1077 | 1080 | 1152 | 1158..=1161 | 1184 | 2002 | 2003 | 2006 | 2013 => {
            ErrorKind::Unavailable
        }
        1213 => ErrorKind::Unavailable,           // deadlock: retry
        1205 | 3024 | 1969 => ErrorKind::Timeout, // lock wait, max execution time
        1062 | 1586 => ErrorKind::Conflict,
        1048 | 1364 | 1366 | 1292 | 1406 | 1264 | 1265 | 1451 | 1452 | 3819 | 4025 | 1411
        | 1367 => ErrorKind::InvalidData,
        _ => ErrorKind::Config,
    }
}

/// By SQLite's extended result code.
fn sqlite_kind(code: i64, message: &str) -> ErrorKind {
    match code & 0xff {
        5 | 6 => ErrorKind::Timeout, // busy, locked: busy_timeout ran out
        14 | 10 | 13 | 15 => ErrorKind::Unavailable, // cannot open, I/O, disk full, protocol
        19 => {
            if code == 2067 || code == 1555 {
                ErrorKind::Conflict // unique or primary key
            } else {
                ErrorKind::InvalidData
            }
        }
        20 | 25 | 18 => ErrorKind::InvalidData, // mismatch, range, too big
        23 => ErrorKind::Auth,
        8 | 11 | 26 => ErrorKind::Config, // read-only, corrupt, not a database
        1 if message.contains("no such") => ErrorKind::Config,
        _ => ErrorKind::Config,
    }
}

/// A connector error for a failed database call, naming what was tried and
/// where (the URL with its password masked).
pub fn classify(system: &str, target: &str, doing: &str, e: sqlx::Error) -> ConnectorError {
    let kind = kind_of(&e);
    let detail = match &e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        sqlx::Error::PoolTimedOut => {
            "no connection within `connect_timeout_secs` (the database does not answer or the pool is exhausted)".to_owned()
        }
        other => other.to_string(),
    };
    let hint = match kind {
        ErrorKind::Auth => " (check the user and password of the instance)",
        ErrorKind::Unavailable => " (is the database running and reachable?)",
        _ => "",
    };
    ConnectorError::new(kind, system, format!("{doing} on {target}: {detail}{hint}")).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes_map_to_kinds() {
        assert_eq!(postgres_kind("28P01"), ErrorKind::Auth);
        assert_eq!(postgres_kind("28000"), ErrorKind::Auth);
        assert_eq!(postgres_kind("42P01"), ErrorKind::Config);
        assert_eq!(postgres_kind("42703"), ErrorKind::Config);
        assert_eq!(postgres_kind("57P01"), ErrorKind::Unavailable);
        assert_eq!(postgres_kind("57014"), ErrorKind::Timeout);
        assert_eq!(postgres_kind("22P02"), ErrorKind::InvalidData);
        assert_eq!(postgres_kind("53300"), ErrorKind::Unavailable);
    }

    #[test]
    fn mysql_numbers_map_to_kinds() {
        assert_eq!(mysql_kind(1045), ErrorKind::Auth);
        assert_eq!(mysql_kind(1146), ErrorKind::Config);
        assert_eq!(mysql_kind(1054), ErrorKind::Config);
        assert_eq!(mysql_kind(1040), ErrorKind::Unavailable);
        assert_eq!(mysql_kind(1205), ErrorKind::Timeout);
        assert_eq!(mysql_kind(1062), ErrorKind::Conflict);
        assert_eq!(mysql_kind(1366), ErrorKind::InvalidData);
    }

    #[test]
    fn sqlite_codes_map_to_kinds() {
        assert_eq!(sqlite_kind(5, "database is locked"), ErrorKind::Timeout);
        assert_eq!(sqlite_kind(14, "unable to open"), ErrorKind::Unavailable);
        assert_eq!(
            sqlite_kind(2067, "UNIQUE constraint failed"),
            ErrorKind::Conflict
        );
        assert_eq!(
            sqlite_kind(1299, "NOT NULL constraint failed"),
            ErrorKind::InvalidData
        );
        assert_eq!(sqlite_kind(1, "no such table: x"), ErrorKind::Config);
    }

    #[test]
    fn refused_connections_are_unavailable_and_pool_waits_time_out() {
        let refused = sqlx::Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(kind_of(&refused), ErrorKind::Unavailable);
        assert_eq!(kind_of(&sqlx::Error::PoolTimedOut), ErrorKind::Timeout);
    }
}
