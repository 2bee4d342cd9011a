//! The project's SQLite database: images, the current labels of each (with a version number
//! that every save must name), every earlier version, model suggestions, and the files that
//! did not decode.
//!
//! Durability: WAL with `synchronous = FULL`, so a save is on disk when it is acknowledged and
//! a killed server loses none. Concurrency: a save names the version it was made on and is
//! refused ([`LabelError::Stale`]) when another save came first, so no save is lost unseen.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::LabelError;
use crate::labels::{Labels, Suggestion};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  root TEXT NOT NULL,
  rel TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  source TEXT NOT NULL,
  added_at INTEGER NOT NULL,
  UNIQUE (root, rel)
);
CREATE TABLE IF NOT EXISTS annotations (
  image_id INTEGER PRIMARY KEY REFERENCES images(id),
  version INTEGER NOT NULL,
  labels TEXT NOT NULL,
  reviewed INTEGER NOT NULL,
  saved_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
  image_id INTEGER NOT NULL REFERENCES images(id),
  version INTEGER NOT NULL,
  labels TEXT NOT NULL,
  reviewed INTEGER NOT NULL,
  saved_at INTEGER NOT NULL,
  origin TEXT NOT NULL,
  user TEXT,
  PRIMARY KEY (image_id, version)
);
CREATE TABLE IF NOT EXISTS suggestions (
  image_id INTEGER NOT NULL REFERENCES images(id),
  model TEXT NOT NULL,
  body TEXT NOT NULL,
  uncertainty REAL NOT NULL,
  entropy REAL,
  made_at INTEGER NOT NULL,
  PRIMARY KEY (image_id, model)
);
CREATE TABLE IF NOT EXISTS clusters (
  image_id INTEGER PRIMARY KEY REFERENCES images(id),
  cluster INTEGER NOT NULL,
  distance REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS clusters_by_cluster ON clusters (cluster, distance);
CREATE TABLE IF NOT EXISTS clustering (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  model TEXT NOT NULL,
  k INTEGER NOT NULL,
  made_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS problems (
  root TEXT NOT NULL,
  rel TEXT NOT NULL,
  reason TEXT NOT NULL,
  PRIMARY KEY (root, rel)
);
";

/// Where an image's file lives: the user's images folder, or a folder inside the project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Root {
    /// The folder the project was made from (`images` in project.toml).
    Images,
    /// `PROJECT/imported/`: images brought in by `strix label import` from elsewhere.
    Imported,
    /// `PROJECT/captured/`: inputs a served or streamed model saw.
    Captured,
}

impl Root {
    pub fn as_str(self) -> &'static str {
        match self {
            Root::Images => "images",
            Root::Imported => "imported",
            Root::Captured => "captured",
        }
    }

    fn parse(s: &str) -> Root {
        match s {
            "imported" => Root::Imported,
            "captured" => Root::Captured,
            _ => Root::Images,
        }
    }
}

/// Whether a relative path is safe to store and join onto its [`Root`]: plain parts only, so
/// nothing outside the root is named.
pub(crate) fn is_safe_relative(file: &str) -> bool {
    !file.is_empty() && Path::new(file).components().all(|c| matches!(c, Component::Normal(_)))
}

/// One image of the project.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImageRow {
    pub id: i64,
    pub root: Root,
    /// Path relative to its root, `/`-separated.
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub source: String,
    /// Unix milliseconds.
    pub added_at: i64,
}

/// An image's current labels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Annotation {
    pub version: i64,
    pub labels: Labels,
    pub reviewed: bool,
    /// Unix milliseconds.
    pub saved_at: i64,
}

/// One saved version of an image's labels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Saved {
    pub version: i64,
    pub labels: Labels,
    pub reviewed: bool,
    pub saved_at: i64,
    /// What saved it: `ui`, `api`, `import`.
    pub origin: String,
    /// Who saved it: the user the server's token names (`--http-token alice=TOKEN`).
    pub user: Option<String>,
}

/// One saved version as the history table holds it: the labels as their stored text.
pub(crate) struct HistoryRow<'a> {
    pub id: i64,
    pub version: i64,
    pub reviewed: bool,
    /// Unix milliseconds.
    pub at: i64,
    pub text: &'a str,
}

/// What makes a save, and who.
#[derive(Clone, Copy, Debug)]
pub struct Author<'a> {
    /// `ui`, `api`, `import`, ...
    pub origin: &'a str,
    pub user: Option<&'a str>,
}

/// Which images "next" walks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Not labelled yet (labelling).
    #[default]
    Unlabelled,
    /// Labelled (review).
    Labelled,
    /// Labelled but not marked reviewed (a verification pass).
    Unreviewed,
    All,
}

/// The order "next" takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// By id (the order images were added).
    #[default]
    Sequential,
    /// Lowest margin between the model's two best classes, or box scores nearest the threshold.
    Uncertain,
    /// Highest entropy of the model's classes (classification).
    Entropy,
    /// Cluster by cluster (`strix cluster PROJECT`), biggest first, each from the image nearest
    /// its centre out; images added since come last.
    Cluster,
    Random,
}

/// Counts for the progress line.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub images: u64,
    pub labelled: u64,
    pub reviewed: u64,
    pub suggested: u64,
    pub captured: u64,
    /// Images (classification) or boxes (detection) per class.
    pub per_class: BTreeMap<String, u64>,
}

/// The database of one project.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Projects made before history recorded users get the column; a second process doing the
/// same at once fails on the duplicate column, which is then there all the same.
async fn add_history_user(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    if history_has_user(pool).await? {
        return Ok(());
    }
    match sqlx::raw_sql("ALTER TABLE history ADD COLUMN user TEXT").execute(pool).await {
        Ok(_) => Ok(()),
        Err(_) if history_has_user(pool).await? => Ok(()),
        Err(e) => Err(e),
    }
}

async fn history_has_user(pool: &SqlitePool) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pragma_table_info('history') WHERE name = 'user'")
        .fetch_one(pool)
        .await?;
    Ok(n > 0)
}

/// An image file for the store: its folder and path in it, its size in pixels and bytes, and
/// where it came from.
#[derive(Clone, Copy, Debug)]
pub struct NewImage<'a> {
    pub root: Root,
    pub file: &'a str,
    pub size: (u32, u32),
    pub bytes: u64,
    pub source: &'a str,
}

impl Store {
    /// Open (creating) the database at `path` and its tables.
    pub async fn open(path: &Path) -> Result<Store, LabelError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(LabelError::db(path))?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.map_err(LabelError::db(path))?;
        add_history_user(&pool).await.map_err(LabelError::db(path))?;
        Ok(Store { pool, path: path.to_path_buf() })
    }

    pub(crate) fn err(&self) -> impl FnOnce(sqlx::Error) -> LabelError + '_ {
        LabelError::db(&self.path)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Add an image (or find it, when `root`/`file` is known already); its id.
    pub async fn add_image(
        &self,
        root: Root,
        file: &str,
        size: (u32, u32),
        bytes: u64,
        source: &str,
    ) -> Result<i64, LabelError> {
        let mut conn = self.pool.acquire().await.map_err(self.err())?;
        self.insert_image(&mut conn, NewImage { root, file, size, bytes, source }).await
    }

    /// A captured image with the served model's answer as its suggestion, in one transaction
    /// (one fsync, and never an image without its suggestion); its id.
    pub async fn add_captured(&self, image: NewImage<'_>, suggestion: &Suggestion) -> Result<i64, LabelError> {
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        let id = self.insert_image(&mut tx, image).await?;
        self.insert_suggestion(&mut tx, id, suggestion).await?;
        tx.commit().await.map_err(self.err())?;
        Ok(id)
    }

    async fn insert_image(&self, conn: &mut SqliteConnection, image: NewImage<'_>) -> Result<i64, LabelError> {
        let NewImage { root, file, size, bytes, source } = image;
        // Joined onto the root to serve the file: only plain relative paths get in.
        if !is_safe_relative(file) {
            return Err(LabelError::invalid(format!("{file:?} is not a plain path inside its folder")));
        }
        sqlx::query(
            "INSERT INTO images (root, rel, width, height, bytes, source, added_at) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (root, rel) DO NOTHING",
        )
        .bind(root.as_str())
        .bind(file)
        .bind(size.0 as i64)
        .bind(size.1 as i64)
        .bind(bytes as i64)
        .bind(source)
        .bind(now_ms())
        .execute(&mut *conn)
        .await
        .map_err(self.err())?;
        let row = sqlx::query("SELECT id FROM images WHERE root = ? AND rel = ?")
            .bind(root.as_str())
            .bind(file)
            .fetch_one(&mut *conn)
            .await
            .map_err(self.err())?;
        row.try_get(0).map_err(self.err())
    }

    /// Note a file that could not be added, and why.
    pub async fn add_problem(&self, root: Root, file: &str, reason: &str) -> Result<(), LabelError> {
        sqlx::query("INSERT OR REPLACE INTO problems (root, rel, reason) VALUES (?, ?, ?)")
            .bind(root.as_str())
            .bind(file)
            .bind(reason)
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(())
    }

    /// `(file, reason)` of every file left out.
    pub async fn problems(&self) -> Result<Vec<(String, String)>, LabelError> {
        let rows = sqlx::query("SELECT root, rel, reason FROM problems ORDER BY root, rel")
            .fetch_all(&self.pool)
            .await
            .map_err(self.err())?;
        rows.iter()
            .map(|r| Ok((format!("{}/{}", r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?), r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(self.err())
    }

    /// Files of `root` already added or already found wanting.
    pub async fn known_files(&self, root: Root) -> Result<std::collections::HashSet<String>, LabelError> {
        let rows = sqlx::query("SELECT rel FROM images WHERE root = ?1 UNION SELECT rel FROM problems WHERE root = ?1")
            .bind(root.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(self.err())?;
        rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>().map_err(self.err())
    }

    fn image_row(r: &sqlx::sqlite::SqliteRow) -> Result<ImageRow, sqlx::Error> {
        Ok(ImageRow {
            id: r.try_get("id")?,
            root: Root::parse(&r.try_get::<String, _>("root")?),
            file: r.try_get("rel")?,
            width: r.try_get::<i64, _>("width")? as u32,
            height: r.try_get::<i64, _>("height")? as u32,
            bytes: r.try_get::<i64, _>("bytes")? as u64,
            source: r.try_get("source")?,
            added_at: r.try_get("added_at")?,
        })
    }

    pub async fn image(&self, id: i64) -> Result<ImageRow, LabelError> {
        let row = sqlx::query("SELECT * FROM images WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?
            .ok_or(LabelError::NoImage(id))?;
        Self::image_row(&row).map_err(self.err())
    }

    /// Images by id, `offset` and `limit` paging through them.
    pub async fn images(&self, offset: i64, limit: i64) -> Result<Vec<(ImageRow, Option<Annotation>)>, LabelError> {
        let rows = sqlx::query(
            "SELECT i.*, a.version, a.labels, a.reviewed, a.saved_at FROM images i \
             LEFT JOIN annotations a ON a.image_id = i.id ORDER BY i.id LIMIT ? OFFSET ?",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter().map(|r| Ok((Self::image_row(r).map_err(self.err())?, self.annotation_of(r)?))).collect()
    }

    fn annotation_of(&self, r: &sqlx::sqlite::SqliteRow) -> Result<Option<Annotation>, LabelError> {
        let version: Option<i64> = r.try_get("version").map_err(self.err())?;
        let Some(version) = version else { return Ok(None) };
        let text: String = r.try_get("labels").map_err(self.err())?;
        Ok(Some(Annotation {
            version,
            labels: self.parse_labels(&text)?,
            reviewed: r.try_get::<i64, _>("reviewed").map_err(self.err())? != 0,
            saved_at: r.try_get("saved_at").map_err(self.err())?,
        }))
    }

    pub(crate) fn parse_labels(&self, text: &str) -> Result<Labels, LabelError> {
        serde_json::from_str(text)
            .map_err(|e| LabelError::Format { path: self.path.clone(), reason: format!("stored labels: {e}") })
    }

    /// The current labels of image `id`, if it has been saved.
    pub async fn annotation(&self, id: i64) -> Result<Option<Annotation>, LabelError> {
        let row = sqlx::query("SELECT version, labels, reviewed, saved_at FROM annotations WHERE image_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?;
        match row {
            Some(r) => self.annotation_of(&r),
            None => Ok(None),
        }
    }

    /// Save `labels` for image `id` as the version after `expected` (0: the image's first
    /// save). Refused with [`LabelError::Stale`] when the image is at another version: the
    /// saver has not seen a save made meanwhile. The new version and its history row are
    /// written in one transaction. The labels must be checked already.
    ///
    /// A save that changes nothing (the labels and the reviewed flag of version `expected`,
    /// which is current) writes nothing and returns `expected`: saving again is safe and costs
    /// no history. The version check comes first, so an unchanged save made on a stale version
    /// is still refused: its saver has not seen the versions in between, whatever they hold.
    pub async fn save(
        &self,
        id: i64,
        expected: i64,
        labels: &Labels,
        reviewed: bool,
        origin: &str,
    ) -> Result<i64, LabelError> {
        self.save_by(id, expected, labels, reviewed, Author { origin, user: None }).await
    }

    /// [`Store::save`], recording who saved in the history.
    pub async fn save_by(
        &self,
        id: i64,
        expected: i64,
        labels: &Labels,
        reviewed: bool,
        by: Author<'_>,
    ) -> Result<i64, LabelError> {
        self.image(id).await?;
        let text = serde_json::to_string(labels).map_err(|e| LabelError::invalid(e.to_string()))?;
        let at = now_ms();
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        // A write first, so the transaction takes SQLite's write lock before it reads anything
        // (a read first could see a snapshot another writer has moved past).
        // Labels are stored as this same serialisation, so equal text is equal labels.
        let updated = sqlx::query(
            "UPDATE annotations SET version = version + 1, labels = ?, reviewed = ?, saved_at = ? \
             WHERE image_id = ? AND version = ? AND NOT (labels = ? AND reviewed = ?)",
        )
        .bind(&text)
        .bind(i64::from(reviewed))
        .bind(at)
        .bind(id)
        .bind(expected)
        .bind(&text)
        .bind(i64::from(reviewed))
        .execute(&mut *tx)
        .await
        .map_err(self.err())?
        .rows_affected();
        let written = if updated == 1 {
            true
        } else if expected > 0 && self.version_in(&mut tx, id).await? == Some(expected) {
            // Not updated, yet at the expected version: the save changes nothing.
            tx.rollback().await.map_err(self.err())?;
            return Ok(expected);
        } else if expected == 0 {
            sqlx::query(
                "INSERT INTO annotations (image_id, version, labels, reviewed, saved_at) VALUES (?, 1, ?, ?, ?) \
                 ON CONFLICT (image_id) DO NOTHING",
            )
            .bind(id)
            .bind(&text)
            .bind(i64::from(reviewed))
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?
            .rows_affected()
                == 1
        } else {
            false
        };
        if !written {
            tx.rollback().await.map_err(self.err())?;
            let current = self.annotation(id).await?.map_or(0, |a| a.version);
            return Err(LabelError::Stale { image: id, expected, current });
        }
        let version = expected + 1;
        self.add_history(&mut tx, HistoryRow { id, version, reviewed, at, text: &text }, by).await?;
        tx.commit().await.map_err(self.err())?;
        Ok(version)
    }

    /// `row` in the history inside transaction `tx`, `by` as its author.
    pub(crate) async fn add_history(
        &self,
        tx: &mut sqlx::SqliteConnection,
        row: HistoryRow<'_>,
        by: Author<'_>,
    ) -> Result<(), LabelError> {
        sqlx::query(
            "INSERT INTO history (image_id, version, labels, reviewed, saved_at, origin, user) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(row.id)
        .bind(row.version)
        .bind(row.text)
        .bind(i64::from(row.reviewed))
        .bind(row.at)
        .bind(by.origin)
        .bind(by.user)
        .execute(tx)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    /// Image `id`'s current version inside transaction `tx`, if it was ever saved.
    async fn version_in(&self, tx: &mut sqlx::SqliteConnection, id: i64) -> Result<Option<i64>, LabelError> {
        sqlx::query_scalar("SELECT version FROM annotations WHERE image_id = ?")
            .bind(id)
            .fetch_optional(tx)
            .await
            .map_err(self.err())
    }

    /// Every saved version of image `id`, oldest first.
    pub async fn history(&self, id: i64) -> Result<Vec<Saved>, LabelError> {
        let rows = sqlx::query(
            "SELECT version, labels, reviewed, saved_at, origin, user FROM history WHERE image_id = ? ORDER BY version",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get(1).map_err(self.err())?;
                Ok(Saved {
                    version: r.try_get(0).map_err(self.err())?,
                    labels: self.parse_labels(&text)?,
                    reviewed: r.try_get::<i64, _>(2).map_err(self.err())? != 0,
                    saved_at: r.try_get(3).map_err(self.err())?,
                    origin: r.try_get(4).map_err(self.err())?,
                    user: r.try_get(5).map_err(self.err())?,
                })
            })
            .collect()
    }

    /// Keep `suggestion` for image `id` (replacing the same model's earlier one).
    pub async fn put_suggestion(&self, id: i64, s: &Suggestion) -> Result<(), LabelError> {
        let mut conn = self.pool.acquire().await.map_err(self.err())?;
        self.insert_suggestion(&mut conn, id, s).await
    }

    async fn insert_suggestion(&self, conn: &mut SqliteConnection, id: i64, s: &Suggestion) -> Result<(), LabelError> {
        let body = serde_json::to_string(s).map_err(|e| LabelError::invalid(e.to_string()))?;
        sqlx::query(
            "INSERT OR REPLACE INTO suggestions (image_id, model, body, uncertainty, entropy, made_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&s.model)
        .bind(body)
        .bind(f64::from(s.uncertainty))
        .bind(s.entropy.map(f64::from))
        .bind(now_ms())
        .execute(conn)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    /// Image `id`'s suggestion from `model`, or when there is none (or no model is named), the
    /// newest one from any model (a captured image comes with the served model's answer).
    pub async fn suggestion(&self, id: i64, model: Option<&str>) -> Result<Option<Suggestion>, LabelError> {
        let row = sqlx::query(
            "SELECT body FROM suggestions WHERE image_id = ? ORDER BY (model = ?) DESC, made_at DESC LIMIT 1",
        )
        .bind(id)
        .bind(model.unwrap_or(""))
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.try_get(0).map_err(self.err())?;
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| LabelError::Format { path: self.path.clone(), reason: format!("stored suggestion: {e}") })
    }

    /// Up to `limit` images without a suggestion from `model`, unlabelled ones first.
    pub async fn unsuggested(&self, model: &str, limit: i64) -> Result<Vec<i64>, LabelError> {
        let rows = sqlx::query(
            "SELECT i.id FROM images i WHERE NOT EXISTS \
             (SELECT 1 FROM suggestions s WHERE s.image_id = i.id AND s.model = ?) \
             ORDER BY EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = i.id), i.id LIMIT ?",
        )
        .bind(model)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>().map_err(self.err())
    }

    /// The image "next" goes to from `after` (none: from the start): in `order` among the
    /// images `filter` keeps, never one of `exclude` (those seen already this session).
    /// Sequential order wraps around; `backwards` walks it the other way.
    pub async fn next(&self, q: &NextQuery) -> Result<Option<i64>, LabelError> {
        let filter = match q.filter {
            Filter::Unlabelled => "NOT EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = i.id)",
            Filter::Labelled => "EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = i.id)",
            Filter::Unreviewed => "EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = i.id AND a.reviewed = 0)",
            Filter::All => "1",
        };
        let exclude = serde_json::to_string(&q.exclude).unwrap_or_else(|_| "[]".into());
        let base = format!(
            "SELECT i.id FROM images i WHERE {filter} AND i.id NOT IN (SELECT value FROM json_each(?1)) AND i.id != ?2"
        );
        let after = q.after.unwrap_or(0);
        let sql = match (q.order, q.backwards) {
            (Order::Sequential, false) => {
                format!("{base} ORDER BY i.id <= ?2, i.id LIMIT 1")
            }
            (Order::Sequential, true) => format!("{base} ORDER BY i.id >= ?2, i.id DESC LIMIT 1"),
            (Order::Uncertain, _) => format!(
                "{base} ORDER BY (SELECT MAX(uncertainty) FROM suggestions s WHERE s.image_id = i.id) IS NULL, \
                 (SELECT MAX(uncertainty) FROM suggestions s WHERE s.image_id = i.id) DESC, i.id LIMIT 1"
            ),
            (Order::Entropy, _) => format!(
                "{base} ORDER BY (SELECT MAX(entropy) FROM suggestions s WHERE s.image_id = i.id) IS NULL, \
                 (SELECT MAX(entropy) FROM suggestions s WHERE s.image_id = i.id) DESC, i.id LIMIT 1"
            ),
            (Order::Cluster, _) => format!(
                "{base} ORDER BY (SELECT cluster FROM clusters c WHERE c.image_id = i.id) IS NULL, \
                 (SELECT cluster FROM clusters c WHERE c.image_id = i.id), \
                 (SELECT distance FROM clusters c WHERE c.image_id = i.id), i.id LIMIT 1"
            ),
            (Order::Random, _) => format!("{base} ORDER BY random() LIMIT 1"),
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(exclude)
            .bind(after)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?;
        row.map(|r| r.try_get(0)).transpose().map_err(self.err())
    }

    /// Counts for the progress line.
    pub async fn stats(&self) -> Result<Stats, LabelError> {
        let counts = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM images), (SELECT COUNT(*) FROM annotations), \
             (SELECT COUNT(*) FROM annotations WHERE reviewed = 1), \
             (SELECT COUNT(DISTINCT image_id) FROM suggestions), \
             (SELECT COUNT(*) FROM images WHERE root = 'captured')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(self.err())?;
        let n = |i: usize| counts.try_get::<i64, _>(i).map(|v| v as u64).map_err(self.err());
        let mut stats = Stats {
            images: n(0)?,
            labelled: n(1)?,
            reviewed: n(2)?,
            suggested: n(3)?,
            captured: n(4)?,
            ..Stats::default()
        };
        for (_, a) in self.labelled().await? {
            for c in a.labels.classes() {
                *stats.per_class.entry(c.to_string()).or_default() += 1;
            }
        }
        Ok(stats)
    }

    /// Every labelled image with its current labels, by id.
    pub async fn labelled(&self) -> Result<Vec<(ImageRow, Annotation)>, LabelError> {
        let rows = sqlx::query(
            "SELECT i.*, a.version, a.labels, a.reviewed, a.saved_at FROM images i \
             JOIN annotations a ON a.image_id = i.id ORDER BY i.id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter()
            .filter_map(|r| match (Self::image_row(r), self.annotation_of(r)) {
                (Ok(img), Ok(Some(a))) => Some(Ok((img, a))),
                (Err(e), _) => Some(Err(LabelError::db(&self.path)(e))),
                (_, Err(e)) => Some(Err(e)),
                (_, Ok(None)) => None,
            })
            .collect()
    }

    /// `(files, bytes)` captured so far.
    pub async fn captured(&self) -> Result<(u64, u64), LabelError> {
        let r = sqlx::query("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM images WHERE root = 'captured'")
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())?;
        let files: i64 = r.try_get(0).map_err(self.err())?;
        let bytes: i64 = r.try_get(1).map_err(self.err())?;
        Ok((files as u64, bytes as u64))
    }
}

/// What [`Store::next`] is asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct NextQuery {
    pub after: Option<i64>,
    pub order: Order,
    pub filter: Filter,
    pub exclude: Vec<i64>,
    pub backwards: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{LabelBox, Scored};

    #[test]
    fn only_plain_relative_paths_are_safe() {
        assert!(is_safe_relative("a/b.jpg"));
        assert!(!is_safe_relative("../b.jpg"));
        assert!(!is_safe_relative("/etc/passwd"));
        assert!(!is_safe_relative(""));
    }

    async fn store_with(n: usize) -> (tempfile::TempDir, Store, Vec<i64>) {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("labels.db")).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(store.add_image(Root::Images, &format!("{i}.png"), (10, 10), 100, "folder").await.unwrap());
        }
        (d, store, ids)
    }

    fn suggestion(model: &str, uncertainty: f32, entropy: f32) -> Suggestion {
        let classes = vec![Scored { class: "a".into(), score: 0.5 }];
        Suggestion { model: model.into(), classes, boxes: vec![], uncertainty, entropy: Some(entropy) }
    }

    /// Issue 36 item 6: a captured image and its suggestion are one transaction, so a
    /// suggestion the database refuses leaves no image behind without one.
    #[tokio::test]
    async fn a_captured_image_and_its_suggestion_are_kept_together_or_not_at_all() {
        let (_d, store, _) = store_with(0).await;
        let image = |file| NewImage { root: Root::Captured, file, size: (8, 6), bytes: 10, source: "capture:m" };
        let id = store.add_captured(image("a.jpg"), &suggestion("m", 0.4, 0.7)).await.unwrap();
        assert_eq!(store.suggestion(id, Some("m")).await.unwrap().map(|s| s.uncertainty), Some(0.4));
        // SQLite stores NaN as NULL, which the NOT NULL column refuses after the image row went in.
        let refused = store.add_captured(image("b.jpg"), &suggestion("m", f32::NAN, 0.7)).await;
        assert!(refused.is_err());
        let files: Vec<String> = store.images(0, 10).await.unwrap().into_iter().map(|(row, _)| row.file).collect();
        assert_eq!(files, ["a.jpg"]);
    }

    #[tokio::test]
    async fn next_walks_by_order_and_filter() {
        let (_d, store, ids) = store_with(4).await;
        let next = |after: Option<i64>, order: Order, filter: Filter, exclude: Vec<i64>| {
            let store = store.clone();
            async move { store.next(&NextQuery { after, order, filter, exclude, backwards: false }).await.unwrap() }
        };
        // Sequential goes on from `after` and wraps around.
        assert_eq!(next(None, Order::Sequential, Filter::All, vec![]).await, Some(ids[0]));
        assert_eq!(next(Some(ids[1]), Order::Sequential, Filter::All, vec![]).await, Some(ids[2]));
        assert_eq!(next(Some(ids[3]), Order::Sequential, Filter::All, vec![]).await, Some(ids[0]));
        let back =
            store.next(&NextQuery { after: Some(ids[0]), backwards: true, ..NextQuery::default() }).await.unwrap();
        assert_eq!(back, Some(ids[3]));
        // Uncertainty and entropy: the most unsure first, never one already seen.
        for (id, u, e) in [(ids[0], 0.1, 2.0), (ids[1], 0.9, 0.5), (ids[2], 0.5, 1.0)] {
            store.put_suggestion(id, &suggestion("m", u, e)).await.unwrap();
        }
        assert_eq!(next(None, Order::Uncertain, Filter::Unlabelled, vec![]).await, Some(ids[1]));
        assert_eq!(next(None, Order::Uncertain, Filter::Unlabelled, vec![ids[1]]).await, Some(ids[2]));
        assert_eq!(next(None, Order::Entropy, Filter::Unlabelled, vec![]).await, Some(ids[0]));
        // Images without a suggestion come last.
        assert_eq!(next(None, Order::Uncertain, Filter::Unlabelled, vec![ids[0], ids[1], ids[2]]).await, Some(ids[3]));
        // Filters: labelled, unreviewed, unlabelled.
        let labels = Labels { class: Some("a".into()), boxes: vec![] };
        store.save(ids[1], 0, &labels, false, "test").await.unwrap();
        store.save(ids[2], 0, &labels, true, "test").await.unwrap();
        assert_eq!(next(None, Order::Uncertain, Filter::Unlabelled, vec![]).await, Some(ids[0]));
        assert_eq!(next(None, Order::Sequential, Filter::Labelled, vec![]).await, Some(ids[1]));
        assert_eq!(next(None, Order::Sequential, Filter::Unreviewed, vec![]).await, Some(ids[1]));
        assert_eq!(next(Some(ids[1]), Order::Sequential, Filter::Unreviewed, vec![]).await, None);
        let random = next(None, Order::Random, Filter::Unlabelled, vec![]).await.unwrap();
        assert!([ids[0], ids[3]].contains(&random));
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.images, stats.labelled, stats.reviewed, stats.suggested), (4, 2, 1, 3));
        assert_eq!(stats.per_class.get("a"), Some(&2));
    }

    #[tokio::test]
    async fn saves_are_versioned_and_a_stale_one_is_refused() {
        let (_d, store, ids) = store_with(1).await;
        let id = ids[0];
        let a = Labels { class: Some("a".into()), boxes: vec![] };
        let b = Labels { class: Some("b".into()), boxes: vec![] };
        assert_eq!(store.save(id, 0, &a, false, "ui").await.unwrap(), 1);
        let stale = store.save(id, 0, &b, false, "ui").await.unwrap_err();
        assert!(matches!(stale, LabelError::Stale { expected: 0, current: 1, .. }), "{stale}");
        assert_eq!(store.save(id, 1, &b, true, "api").await.unwrap(), 2);
        let history = store.history(id).await.unwrap();
        assert_eq!(
            history.iter().map(|h| (h.version, h.labels.class.clone(), h.origin.as_str())).collect::<Vec<_>>(),
            [(1, Some("a".into()), "ui"), (2, Some("b".into()), "api")]
        );
        assert!(matches!(store.save(9999, 0, &a, false, "ui").await, Err(LabelError::NoImage(9999))));
        assert!(store.add_image(Root::Images, "../x.png", (1, 1), 1, "x").await.is_err());
    }

    /// Issue 31 item 3: a project made before history recorded users gets the column on open
    /// (two processes at once too), keeps its old rows, and records who saves from then on.
    #[tokio::test]
    async fn a_project_from_before_users_records_them_after_it_is_opened() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("labels.db");
        let old = Store::open(&path).await.unwrap();
        let id = old.add_image(Root::Images, "a.png", (10, 10), 100, "folder").await.unwrap();
        let cat = Labels { class: Some("cat".into()), boxes: vec![] };
        old.save(id, 0, &cat, false, "ui").await.unwrap();
        sqlx::raw_sql("ALTER TABLE history DROP COLUMN user").execute(&old.pool).await.unwrap();
        old.close().await;
        let (a, b) = tokio::join!(Store::open(&path), Store::open(&path));
        let (a, _b) = (a.unwrap(), b.unwrap());
        let dog = Labels { class: Some("dog".into()), boxes: vec![] };
        a.save_by(id, 1, &dog, false, Author { origin: "ui", user: Some("alice") }).await.unwrap();
        let who: Vec<_> = a.history(id).await.unwrap().into_iter().map(|h| (h.version, h.user)).collect();
        assert_eq!(who, [(1, None), (2, Some("alice".to_string()))]);
    }

    /// Issue 31 item 8: identical saves were stored again without limit (100 saves of 2000
    /// boxes: +15 MB of history). An unchanged save is stored once.
    #[tokio::test]
    async fn an_unchanged_save_is_stored_once() {
        let (_d, store, ids) = store_with(1).await;
        let id = ids[0];
        let boxes = (0..2000)
            .map(|i| LabelBox { class: "a".into(), x: (i % 100) as f32, y: 1.5, w: 2.0, h: 3.25 })
            .collect::<Vec<_>>();
        let a = Labels { class: None, boxes };
        assert_eq!(store.save(id, 0, &a, false, "ui").await.unwrap(), 1);
        for _ in 0..100 {
            assert_eq!(store.save(id, 1, &a, false, "ui").await.unwrap(), 1);
        }
        assert_eq!(store.history(id).await.unwrap().len(), 1);
        // An unchanged save on a stale version is still refused: its saver missed version 2.
        let b = Labels { class: None, boxes: vec![] };
        assert_eq!(store.save(id, 1, &b, false, "ui").await.unwrap(), 2);
        assert_eq!(store.save(id, 2, &a, false, "ui").await.unwrap(), 3);
        let stale = store.save(id, 1, &a, false, "ui").await.unwrap_err();
        assert!(matches!(stale, LabelError::Stale { expected: 1, current: 3, .. }), "{stale}");
        let stale = store.save(id, 0, &a, false, "ui").await.unwrap_err();
        assert!(matches!(stale, LabelError::Stale { expected: 0, current: 3, .. }), "{stale}");
        // Marking the same labels reviewed is a change.
        assert_eq!(store.save(id, 3, &a, true, "ui").await.unwrap(), 4);
        assert_eq!(store.save(id, 4, &a, true, "ui").await.unwrap(), 4);
        let history = store.history(id).await.unwrap();
        assert_eq!(
            history.iter().map(|h| (h.version, h.reviewed)).collect::<Vec<_>>(),
            [(1, false), (2, false), (3, false), (4, true)]
        );
        assert_eq!(store.annotation(id).await.unwrap().map(|a| (a.version, a.reviewed)), Some((4, true)));
    }
}
