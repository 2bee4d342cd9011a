//! Registry rows as a shared database may hold them (another writer, an older or newer
//! Strix, a hand edit): every read of the registry meets them.
#![no_main]
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use strix_registry::{ModelRef, Registry, RegistryConfig};

struct Fixture {
    rt: tokio::runtime::Runtime,
    registry: Registry,
    raw: sqlx::SqlitePool,
    _home: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let home = tempfile::tempdir().expect("a temporary folder");
    let rt = strix_fuzz::runtime();
    let config = RegistryConfig::local(home.path());
    let registry = rt.block_on(Registry::open(&config)).expect("a registry");
    let url = strix_registry::sqlite_url(&config.sqlite_path().expect("a SQLite registry"));
    let raw = rt.block_on(sqlx::SqlitePool::connect(&url)).expect("a second connection");
    Fixture { rt, registry, raw, _home: home }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    // Fields split at 0xff (never in UTF-8): what each column of one version holds.
    let fields: Vec<String> = data.split(|&b| b == 0xff).map(|s| String::from_utf8_lossy(s).into_owned()).collect();
    let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
    let number = |i: usize| field(i).trim().parse::<i64>().unwrap_or(1);
    f.rt.block_on(async {
        // One transaction for the rows, so each input costs one commit.
        let mut tx = f.raw.begin().await.unwrap();
        for clear in ["DELETE FROM models", "DELETE FROM versions", "DELETE FROM artifacts", "DELETE FROM aliases"] {
            sqlx::query(clear).execute(&mut *tx).await.unwrap();
        }
        let version = number(0);
        sqlx::query("INSERT INTO models (name, last_version, created_at) VALUES ('m', $1, 0)")
            .bind(number(9))
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO versions (name, version, task, created_at, created_by, strix_version, lineage) \
             VALUES ('m', $1, $2, $3, $4, $5, $6)",
        )
        .bind(version)
        .bind(field(1))
        .bind(number(2))
        .bind(field(3))
        .bind(field(4))
        .bind(field(5))
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("INSERT INTO artifacts (name, version, file, sha256, size) VALUES ('m', $1, $2, $3, $4)")
            .bind(version)
            .bind(field(6))
            .bind(field(7))
            .bind(number(8))
            .execute(&mut *tx)
            .await
            .unwrap();
        let _ = sqlx::query("INSERT INTO aliases (name, alias, version, updated_at) VALUES ('m', $1, $2, 0)")
            .bind(field(10))
            .bind(version)
            .execute(&mut *tx)
            .await;
        tx.commit().await.unwrap();
        let _ = f.registry.list().await;
        let _ = f.registry.versions("m").await;
        if let Ok(reference) = ModelRef::parse(&format!("m:{version}")) {
            if let Ok(record) = f.registry.get(&reference).await {
                for artifact in &record.artifacts {
                    assert!(artifact.check().is_ok(), "a bad artifact row was read: {artifact:?}");
                }
            }
        }
        if let Ok(reference) = ModelRef::parse(&format!("m@{}", field(10))) {
            let _ = f.registry.get(&reference).await;
        }
    });
});
