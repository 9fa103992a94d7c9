//! The two migration sets describe one schema: the same tables, columns, keys and indexes.
//! Queries are written once for both engines, so a column or index one set forgot is a bug
//! that only shows on the other engine, in production.

use std::collections::BTreeSet;

use pipepay::store::{DatabaseUrl, Db};

use crate::support::{Engine, TestDb};

/// One fact about the schema, comparable across engines.
type Facts = BTreeSet<String>;

/// An index: name, unique, primary, the constraint kind it backs, its columns in key order.
type PgIndex = (String, bool, bool, Option<String>, Vec<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(pg_tests), ignore = "set PIPEPAY_TEST_DATABASE_URL to run on PostgreSQL")]
async fn both_migration_sets_build_the_same_schema() {
    let sqlite = facts(Engine::Sqlite).await;
    let postgres = facts(Engine::Postgres).await;
    assert!(
        sqlite.iter().any(|f| f.starts_with("column jobs.state")),
        "introspection sees the schema: {sqlite:?}"
    );
    let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the migration sets differ\n  only in migrations/sqlite: {only_sqlite:#?}\n  only in migrations/postgres: {only_postgres:#?}"
    );
}

/// The type families both engines' declared types fall into; anything else stays as written,
/// so a new type shows up as a difference until it is given a family here.
fn family(declared: &str) -> String {
    match declared.to_ascii_lowercase().as_str() {
        "integer" | "bigint" | "int" | "int4" | "int8" | "smallint" => "integer".into(),
        // Ids: 16 bytes in SQLite, uuid in PostgreSQL; both bind as uuid::Uuid.
        "blob" | "bytea" | "uuid" => "bytes".into(),
        "text" => "text".into(),
        other => other.into(),
    }
}

async fn facts(engine: Engine) -> Facts {
    let test_db = TestDb::new(engine).await;
    let url: DatabaseUrl = test_db.url.parse().unwrap();
    let db = Db::connect(&url, 1).await.unwrap();
    db.migrate().await.unwrap();
    let facts = match &db {
        Db::Sqlite(pool) => sqlite_facts(pool).await,
        Db::Postgres(pool) => postgres_facts(pool).await,
    };
    db.close().await;
    facts
}

async fn sqlite_facts(pool: &sqlx::SqlitePool) -> Facts {
    let mut facts = Facts::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for table in tables {
        facts.insert(format!("table {table}"));
        let columns: Vec<(String, String, bool, i64)> =
            sqlx::query_as("SELECT name, type, \"notnull\", pk FROM pragma_table_info($1)")
                .bind(&table)
                .fetch_all(pool)
                .await
                .unwrap();
        let mut primary: Vec<(i64, String)> = Vec::new();
        for (name, declared, not_null, pk) in columns {
            // SQLite lets a non-integer primary key hold NULL unless told otherwise; pipepay
            // never stores one, and PostgreSQL's keys are NOT NULL by definition.
            let nullable = !not_null && pk == 0;
            facts.insert(format!("column {table}.{name} {} {}", family(&declared), null_word(nullable)));
            if pk > 0 {
                primary.push((pk, name));
            }
        }
        primary.sort();
        let primary: Vec<String> = primary.into_iter().map(|(_, n)| n).collect();
        if !primary.is_empty() {
            facts.insert(format!("primary key {table} ({})", primary.join(", ")));
        }
        let indexes: Vec<(String, bool, String)> =
            sqlx::query_as("SELECT name, \"unique\", origin FROM pragma_index_list($1)")
                .bind(&table)
                .fetch_all(pool)
                .await
                .unwrap();
        for (index, unique, origin) in indexes {
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT COALESCE(name, '<expression>') FROM pragma_index_info($1) ORDER BY seqno",
            )
            .bind(&index)
            .fetch_all(pool)
            .await
            .unwrap();
            match origin.as_str() {
                "pk" => {}
                // Constraints get generated names in SQLite; compare them by their columns.
                "u" => {
                    facts.insert(format!("unique {table} ({})", columns.join(", ")));
                }
                _ => {
                    facts.insert(index_fact(&table, &index, unique, &columns));
                }
            }
        }
    }
    facts
}

async fn postgres_facts(pool: &sqlx::PgPool) -> Facts {
    let mut facts = Facts::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() \
         AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for table in tables {
        facts.insert(format!("table {table}"));
        let columns: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT column_name::text, udt_name::text, is_nullable::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(&table)
        .fetch_all(pool)
        .await
        .unwrap();
        for (name, declared, nullable) in columns {
            facts.insert(format!(
                "column {table}.{name} {} {}",
                family(&declared),
                null_word(nullable == "YES")
            ));
        }
        // Every index on the table with its columns in key order; which ones back constraints.
        let indexes: Vec<PgIndex> = sqlx::query_as(
            "SELECT i.relname::text, x.indisunique, x.indisprimary, \
                    (SELECT c.contype::text FROM pg_constraint c WHERE c.conindid = x.indexrelid \
                       AND c.conrelid = x.indrelid LIMIT 1), \
                    ARRAY(SELECT COALESCE(a.attname::text, '<expression>') \
                          FROM unnest(x.indkey) WITH ORDINALITY k(attnum, n) \
                          LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum \
                          ORDER BY k.n) \
               FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
               JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace s ON s.oid = t.relnamespace \
              WHERE s.nspname = current_schema() AND t.relname = $1",
        )
        .bind(&table)
        .fetch_all(pool)
        .await
        .unwrap();
        for (index, unique, primary, constraint, columns) in indexes {
            if primary {
                facts.insert(format!("primary key {table} ({})", columns.join(", ")));
            } else if constraint.as_deref() == Some("u") {
                facts.insert(format!("unique {table} ({})", columns.join(", ")));
            } else {
                facts.insert(index_fact(&table, &index, unique, &columns));
            }
        }
    }
    facts
}

fn index_fact(table: &str, index: &str, unique: bool, columns: &[String]) -> String {
    let kind = if unique { "unique index" } else { "index" };
    format!("{kind} {index} on {table} ({})", columns.join(", "))
}

fn null_word(nullable: bool) -> &'static str {
    if nullable { "null" } else { "not null" }
}
