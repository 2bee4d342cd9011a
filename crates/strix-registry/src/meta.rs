//! Version metadata in SQL: SQLite (embedded default) or PostgreSQL, one schema, one code path
//! (sqlx's `Any` driver; every statement is portable SQL with `$n` parameters).

use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Row};

use crate::error::Cause;
use crate::record::{ArtifactRecord, Lineage, ModelSummary, VersionRecord};
use crate::{RegistryError, Selector};
pub use strix_core::redact;

/// Schema migrations, oldest first. Applied under a lock, each recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "models, versions, artifacts, aliases", include_str!("../migrations/0001_init.sql"))];

/// How long to wait for the database before saying it cannot be reached.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

/// The metadata database.
#[derive(Debug)]
pub struct Meta {
    pool: AnyPool,
    /// The URL without credentials, for messages.
    pub url: String,
}

/// A version about to be recorded.
pub struct NewRow<'a> {
    /// Register only if the name's latest version is this one (0: the name has none).
    pub after: Option<u64>,
    pub name: &'a str,
    pub task: &'a str,
    pub created_at: i64,
    pub created_by: &'a str,
    pub strix_version: &'a str,
    pub lineage: &'a Lineage,
    pub artifacts: &'a [ArtifactRecord],
}

impl Meta {
    /// Connect, creating an SQLite file if needed, and bring the schema up to date.
    pub async fn open(url: &str) -> Result<Meta, RegistryError> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(RegistryError::Db {
                url: shown,
                source: Cause::msg("unsupported URL: use sqlite://PATH or postgres://USER@HOST/DB"),
            });
        };
        let db_err = |e: sqlx::Error| RegistryError::Db { url: shown.clone(), source: Cause::new(e) };
        let options: AnyConnectOptions = url.parse().map_err(db_err)?;
        let options = options.disable_statement_logging();
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect_with(&options))
            .await
            .map_err(|_| RegistryError::Db {
                url: shown.clone(),
                source: Cause::msg(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
            })?
            .map_err(db_err)?;
        migrate(&mut conn, dialect, &shown).await?;
        conn.close().await.map_err(db_err)?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(db_err)?;
        Ok(Meta { pool, url: shown })
    }

    fn err(&self, e: sqlx::Error) -> RegistryError {
        RegistryError::Db { url: self.url.clone(), source: Cause::new(e) }
    }

    /// Record a version in one transaction: the next number for the name, the version row and
    /// its artifacts become visible together or not at all.
    pub async fn insert(&self, row: NewRow<'_>) -> Result<u64, RegistryError> {
        let lineage = serde_json::to_string(row.lineage)
            .map_err(|source| RegistryError::Record { what: "cannot write the lineage record".into(), source })?;
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        // The upsert takes the write lock (SQLite) or the row lock (PostgreSQL) first, so two
        // registrations of one name serialise here and get distinct numbers.
        let version: i64 = sqlx::query(
            "INSERT INTO models (name, last_version, created_at) VALUES ($1, 1, $2) \
             ON CONFLICT (name) DO UPDATE SET last_version = models.last_version + 1 RETURNING last_version",
        )
        .bind(row.name.to_string())
        .bind(row.created_at)
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| self.err(e))?;
        if let Some(expected) = row.after {
            // The upsert above holds the name's lock, so nothing registers between this read
            // and the commit.
            let found: Option<i64> = sqlx::query("SELECT MAX(version) FROM versions WHERE name = $1")
                .bind(row.name.to_string())
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get(0))
                .map_err(|e| self.err(e))?;
            let found = found.unwrap_or(0) as u64;
            if found != expected {
                tx.rollback().await.map_err(|e| self.err(e))?;
                return Err(RegistryError::Conflict { name: row.name.to_string(), expected, found });
            }
        }
        sqlx::query(
            "INSERT INTO versions (name, version, task, created_at, created_by, strix_version, lineage) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(row.name.to_string())
        .bind(version)
        .bind(row.task.to_string())
        .bind(row.created_at)
        .bind(row.created_by.to_string())
        .bind(row.strix_version.to_string())
        .bind(lineage)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        for a in row.artifacts {
            sqlx::query("INSERT INTO artifacts (name, version, file, sha256, size) VALUES ($1, $2, $3, $4, $5)")
                .bind(row.name.to_string())
                .bind(version)
                .bind(a.file.clone())
                .bind(a.sha256.clone())
                .bind(a.size as i64)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(version as u64)
    }

    /// Every model name with its version count, newest version and aliases.
    pub async fn models(&self) -> Result<Vec<ModelSummary>, RegistryError> {
        let rows = sqlx::query(
            "SELECT v.name, COUNT(*), MAX(v.version), MAX(v.created_at) FROM versions v GROUP BY v.name ORDER BY v.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get(0).map_err(|e| self.err(e))?;
            let count: i64 = r.try_get(1).map_err(|e| self.err(e))?;
            let latest: i64 = r.try_get(2).map_err(|e| self.err(e))?;
            let updated_at: i64 = r.try_get(3).map_err(|e| self.err(e))?;
            let aliases = self.aliases(&name).await?;
            let task = self.task(&name, latest).await?;
            out.push(ModelSummary { name, versions: count as u64, latest: latest as u64, updated_at, task, aliases });
        }
        Ok(out)
    }

    async fn task(&self, name: &str, version: i64) -> Result<String, RegistryError> {
        sqlx::query("SELECT task FROM versions WHERE name = $1 AND version = $2")
            .bind(name.to_string())
            .bind(version)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.err(e))
    }

    /// `(alias, version)` pairs of a model, by alias.
    pub async fn aliases(&self, name: &str) -> Result<Vec<(String, u64)>, RegistryError> {
        let rows = sqlx::query("SELECT alias, version FROM aliases WHERE name = $1 ORDER BY alias")
            .bind(name.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)? as u64)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// Version numbers of a model, oldest first.
    pub async fn version_numbers(&self, name: &str) -> Result<Vec<u64>, RegistryError> {
        let rows = sqlx::query("SELECT version FROM versions WHERE name = $1 ORDER BY version")
            .bind(name.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(|r| r.try_get::<i64, _>(0).map(|v| v as u64)).collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The version a selector means, with a message listing what exists when there is none.
    pub async fn resolve(&self, name: &str, selector: &Selector) -> Result<u64, RegistryError> {
        let versions = self.version_numbers(name).await?;
        let known = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        if versions.is_empty() {
            let names: Vec<String> = self.models().await?.into_iter().map(|m| m.name).collect();
            let known = if names.is_empty() { String::new() } else { format!(" (registered: {})", names.join(", ")) };
            return Err(RegistryError::UnknownModel { name: name.to_string(), known });
        }
        match selector {
            Selector::Latest => Ok(*versions.last().unwrap_or(&0)),
            Selector::Version(v) if versions.contains(v) => Ok(*v),
            Selector::Version(v) => {
                Err(RegistryError::UnknownVersion { name: name.to_string(), version: *v, known: known(&versions) })
            }
            Selector::Alias(alias) => {
                let aliases = self.aliases(name).await?;
                match aliases.iter().find(|(a, _)| a == alias) {
                    Some((_, v)) => Ok(*v),
                    None => {
                        let known = aliases.iter().map(|(a, v)| format!("{a} -> {v}")).collect::<Vec<_>>().join(", ");
                        let known = if known.is_empty() { "none".into() } else { known };
                        Err(RegistryError::UnknownAlias { name: name.to_string(), alias: alias.clone(), known })
                    }
                }
            }
        }
    }

    /// One version with its artifacts and aliases.
    pub async fn get(&self, name: &str, version: u64) -> Result<VersionRecord, RegistryError> {
        let r = sqlx::query(
            "SELECT task, created_at, created_by, strix_version, lineage FROM versions WHERE name = $1 AND version = $2",
        )
        .bind(name.to_string())
        .bind(version as i64)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        let lineage_text: String = r.try_get(4).map_err(|e| self.err(e))?;
        let lineage: Lineage = serde_json::from_str(&lineage_text).map_err(|source| RegistryError::Record {
            what: format!("{name}:{version}: unreadable lineage record"),
            source,
        })?;
        let arts =
            sqlx::query("SELECT file, sha256, size FROM artifacts WHERE name = $1 AND version = $2 ORDER BY file")
                .bind(name.to_string())
                .bind(version as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.err(e))?;
        let mut artifacts = Vec::with_capacity(arts.len());
        for a in &arts {
            let size: i64 = a.try_get(2).map_err(|e| self.err(e))?;
            let record = ArtifactRecord {
                file: a.try_get(0).map_err(|e| self.err(e))?,
                sha256: a.try_get(1).map_err(|e| self.err(e))?,
                size: u64::try_from(size).unwrap_or(u64::MAX),
            };
            // Names and digests become paths: a shared database is not trusted with them.
            record
                .check()
                .map_err(|e| RegistryError::Invalid(format!("{name}:{version}: refusing a bad record: {e}")))?;
            if size < 0 {
                return Err(RegistryError::Invalid(format!("{name}:{version}: refusing a bad record: size {size}")));
            }
            artifacts.push(record);
        }
        let aliases =
            self.aliases(name).await?.into_iter().filter(|(_, v)| *v == version).map(|(a, _)| a).collect::<Vec<_>>();
        Ok(VersionRecord {
            name: name.to_string(),
            version,
            task: r.try_get(0).map_err(|e| self.err(e))?,
            created_at: r.try_get(1).map_err(|e| self.err(e))?,
            created_by: r.try_get(2).map_err(|e| self.err(e))?,
            strix_version: r.try_get(3).map_err(|e| self.err(e))?,
            aliases,
            artifacts,
            lineage,
        })
    }

    /// Point `alias` at a version (moving it if it pointed elsewhere).
    pub async fn set_alias(&self, name: &str, alias: &str, version: u64, now: i64) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO aliases (name, alias, version, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
        )
        .bind(name.to_string())
        .bind(alias.to_string())
        .bind(version as i64)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Remove an alias; whether it existed.
    pub async fn remove_alias(&self, name: &str, alias: &str) -> Result<bool, RegistryError> {
        let done = sqlx::query("DELETE FROM aliases WHERE name = $1 AND alias = $2")
            .bind(name.to_string())
            .bind(alias.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Delete versions (and aliases pointing at them) in one transaction. Blobs stay for `gc`.
    pub async fn delete(&self, name: &str, versions: &[u64]) -> Result<(), RegistryError> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        // The name's row lock, as a registration takes it: a conditional registration's check
        // of the latest version and its commit cannot straddle a delete.
        sqlx::query("UPDATE models SET last_version = last_version WHERE name = $1")
            .bind(name.to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        for &v in versions {
            for sql in [
                "DELETE FROM aliases WHERE name = $1 AND version = $2",
                "DELETE FROM artifacts WHERE name = $1 AND version = $2",
                "DELETE FROM versions WHERE name = $1 AND version = $2",
            ] {
                sqlx::query(sql)
                    .bind(name.to_string())
                    .bind(v as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Whether any version refers to a blob.
    pub async fn is_referenced(&self, sha256: &str) -> Result<bool, RegistryError> {
        let row = sqlx::query("SELECT COUNT(*) FROM artifacts WHERE sha256 = $1")
            .bind(sha256.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.try_get::<i64, _>(0).map_err(|e| self.err(e))? > 0)
    }

    /// Every blob digest some version refers to.
    pub async fn referenced(&self) -> Result<std::collections::HashSet<String>, RegistryError> {
        let rows = sqlx::query("SELECT DISTINCT sha256 FROM artifacts")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Apply the migrations this database lacks. Two processes opening a new registry at once must
/// not both create the tables, so the whole check-and-apply runs under a lock: SQLite's write
/// lock (`BEGIN IMMEDIATE`) or a PostgreSQL advisory lock, inside one transaction (DDL is
/// transactional in both).
async fn migrate(conn: &mut AnyConnection, dialect: Dialect, url: &str) -> Result<(), RegistryError> {
    let err = |e: sqlx::Error| RegistryError::Db { url: url.to_string(), source: Cause::during("migration", e) };
    let begin = match dialect {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    };
    sqlx::raw_sql(begin).execute(&mut *conn).await.map_err(err)?;
    let result = async {
        if dialect == Dialect::Postgres {
            // Any constant shared by all strix processes; "strix-rg" in ASCII.
            sqlx::raw_sql("SELECT pg_advisory_xact_lock(8319395793566459495)").execute(&mut *conn).await?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations \
             (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&mut *conn)
            .await
            .and_then(|r| r.try_get(0))?;
        if current > latest_schema() {
            return Ok(Some(current));
        }
        for &(version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            for statement in statements(sql) {
                // From the migration files compiled into this binary, never from input.
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *conn).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)")
                .bind(version)
                .bind(description.to_string())
                .bind(crate::unix_now())
                .execute(&mut *conn)
                .await?;
            tracing::info!("registry database {url}: applied migration {version} ({description})");
        }
        Ok(None)
    }
    .await;
    match result {
        Ok(None) => sqlx::raw_sql("COMMIT").execute(&mut *conn).await.map(|_| ()).map_err(err),
        Ok(Some(found)) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Err(RegistryError::SchemaTooNew { url: url.to_string(), found, known: latest_schema() })
        }
        Err(e) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Err(err(e))
        }
    }
}

fn latest_schema() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The statements of a migration file: `--` comment lines dropped, split at `;`.
fn statements(sql: &'static str) -> Vec<String> {
    let text: String = sql.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// sqlx errors can span lines (PostgreSQL details); the CLI prints one.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_statements_split_without_comments() {
        let s = statements(MIGRATIONS[0].2);
        assert_eq!(s.len(), 5);
        assert!(s.iter().all(|s| s.starts_with("CREATE")));
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://bob:secret@db:5432/reg"), "postgres://bob:***@db:5432/reg");
        // URLs that no URL parser takes, and passwords as parameters, are caught too.
        assert_eq!(redact("postgres://db/reg?password=secret"), "postgres://db/reg?password=***");
        assert_eq!(redact("postgres://bob:p#ss@db/x"), "postgres://bob:***@db/x");
        assert_eq!(redact("sqlite:///tmp/r.db"), "sqlite:///tmp/r.db");
    }
}
