//! Parsing and printing database URLs without ever printing their password.

use std::fmt;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

/// A validated `PIPEPAY_DATABASE_URL`.
#[derive(Clone)]
pub enum DatabaseUrl {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if let Some(rest) = value.strip_prefix("sqlite:") {
            let path = rest.trim_start_matches("//");
            if path.is_empty() || path.starts_with(":memory:") {
                return Err("a SQLite URL must name a file, e.g. sqlite://data/pipepay.db".into());
            }
            let options =
                SqliteConnectOptions::from_str(value).map_err(|e| format!("not a SQLite URL: {e}"))?;
            Ok(DatabaseUrl::Sqlite(options))
        } else if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            let parsed = ::url::Url::parse(value).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(
                    "a PostgreSQL URL must name a host, e.g. postgres://user@127.0.0.1:5432/pipepay".into()
                );
            }
            let options = PgConnectOptions::from_str(value)
                // sqlx's message can quote the URL, password included; keep only our own.
                .map_err(|_| {
                    "not a valid PostgreSQL URL (postgres://user:password@host:port/database)".to_string()
                })?;
            Ok(DatabaseUrl::Postgres(options))
        } else {
            Err("must start with sqlite:// or postgres://".into())
        }
    }
}

impl DatabaseUrl {
    /// A printable form: engine, host, port and database, never the password.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(o) => format!("sqlite://{}", o.get_filename().display()),
            DatabaseUrl::Postgres(o) => format!(
                "postgres://{}@{}:{}/{}",
                o.get_username(),
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or_default()
            ),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_default_and_postgres() {
        assert!(matches!("sqlite://data/pipepay.db".parse(), Ok(DatabaseUrl::Sqlite(_))));
        assert!(matches!("postgres://u:p@127.0.0.1:5432/db".parse(), Ok(DatabaseUrl::Postgres(_))));
    }

    #[test]
    fn refuses_other_schemes_and_memory() {
        for bad in ["mysql://x/y", "data/pipepay.db", "sqlite::memory:", "sqlite://", "postgres://"] {
            assert!(bad.parse::<DatabaseUrl>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn never_prints_the_password() {
        let url: DatabaseUrl = "postgres://alice:s3cr3t-pw@db.internal:6432/pay".parse().unwrap();
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        assert!(shown.contains("db.internal:6432/pay"));
    }
}
