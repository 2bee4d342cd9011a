//! A project's images in clusters (written by `strix cluster PROJECT`): the order "next by
//! cluster" walks, and a whole cluster labelled at once as unverified labels to review.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use crate::LabelError;
use crate::labels::Labels;
use crate::store::{Author, HistoryRow, Store, now_ms};

/// Where one image fell: its cluster (numbered from 1, biggest first) and its cosine distance
/// to the cluster's centre (the most typical image first).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    pub image: i64,
    pub cluster: u32,
    pub distance: f32,
}

/// How the clusters were made.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Clustering {
    /// The embedding model.
    pub model: String,
    pub k: u32,
    /// Unix milliseconds.
    pub made_at: i64,
}

/// One cluster and how far its labelling has gone.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterSummary {
    pub cluster: u32,
    pub size: u64,
    pub unlabelled: u64,
    /// Labelled, not yet verified (a bulk label, until someone looks).
    pub unreviewed: u64,
    pub reviewed: u64,
    /// Labelled images per class (classification).
    pub classes: BTreeMap<String, u64>,
}

/// One image of a cluster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterMember {
    pub id: i64,
    pub distance: f32,
    pub labelled: bool,
    /// Its class, when it is labelled in a classification project.
    pub class: Option<String>,
    pub reviewed: bool,
}

/// What labelling a whole cluster did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterLabelled {
    pub cluster: u32,
    /// Images that had no labels and now have them, unverified.
    pub labelled: u64,
    /// Images left as they were: someone had labelled them.
    pub already_labelled: u64,
}

impl Store {
    /// Replace the project's clusters with `placements`, all at once: a reader sees the old
    /// clusters or the new ones, never a mix.
    pub async fn put_clusters(&self, model: &str, placements: &[Placement]) -> Result<(), LabelError> {
        if let Some(p) = placements.iter().find(|p| p.cluster == 0 || !p.distance.is_finite()) {
            return Err(LabelError::invalid(format!(
                "image {}: cluster {} at distance {} (clusters count from 1, distances are finite)",
                p.image, p.cluster, p.distance
            )));
        }
        let k = placements.iter().map(|p| p.cluster).max().unwrap_or(0);
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        sqlx::query("DELETE FROM clusters").execute(&mut *tx).await.map_err(self.err())?;
        for p in placements {
            sqlx::query("INSERT INTO clusters (image_id, cluster, distance) VALUES (?, ?, ?)")
                .bind(p.image)
                .bind(i64::from(p.cluster))
                .bind(f64::from(p.distance))
                .execute(&mut *tx)
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(d) if d.is_foreign_key_violation() => LabelError::NoImage(p.image),
                    other => self.err()(other),
                })?;
        }
        sqlx::query("INSERT OR REPLACE INTO clustering (id, model, k, made_at) VALUES (1, ?, ?, ?)")
            .bind(model)
            .bind(i64::from(k))
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        tx.commit().await.map_err(self.err())
    }

    /// How the current clusters were made, if there are any.
    pub async fn clustering(&self) -> Result<Option<Clustering>, LabelError> {
        let row = sqlx::query("SELECT model, k, made_at FROM clustering WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?;
        row.map(|r| Ok(Clustering { model: r.try_get(0)?, k: r.try_get::<i64, _>(1)? as u32, made_at: r.try_get(2)? }))
            .transpose()
            .map_err(self.err())
    }

    /// Every cluster, by number, with its counts.
    pub async fn clusters(&self) -> Result<Vec<ClusterSummary>, LabelError> {
        let mut out: Vec<ClusterSummary> = Vec::new();
        for (cluster, member) in self.members(None).await? {
            if out.last().is_none_or(|s| s.cluster != cluster) {
                out.push(ClusterSummary { cluster, ..ClusterSummary::default() });
            }
            let Some(s) = out.last_mut() else { continue };
            s.size += 1;
            match (member.labelled, member.reviewed) {
                (false, _) => s.unlabelled += 1,
                (true, false) => s.unreviewed += 1,
                (true, true) => s.reviewed += 1,
            }
            if let Some(c) = member.class {
                *s.classes.entry(c).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// Cluster `cluster`'s images, the most typical first; empty when there is no such cluster.
    pub async fn cluster_members(&self, cluster: u32) -> Result<Vec<ClusterMember>, LabelError> {
        Ok(self.members(Some(cluster)).await?.into_iter().map(|(_, m)| m).collect())
    }

    /// The cluster image `id` is in, if it is in one.
    pub async fn cluster_of(&self, id: i64) -> Result<Option<u32>, LabelError> {
        let c: Option<i64> = sqlx::query_scalar("SELECT cluster FROM clusters WHERE image_id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(c.map(|c| c as u32))
    }

    async fn members(&self, only: Option<u32>) -> Result<Vec<(u32, ClusterMember)>, LabelError> {
        let rows = sqlx::query(
            "SELECT c.cluster, c.image_id, c.distance, a.labels, a.reviewed FROM clusters c \
             LEFT JOIN annotations a ON a.image_id = c.image_id \
             WHERE ?1 IS NULL OR c.cluster = ?1 ORDER BY c.cluster, c.distance, c.image_id",
        )
        .bind(only.map(i64::from))
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.iter()
            .map(|r| {
                let labels: Option<String> = r.try_get(3).map_err(self.err())?;
                let labels = labels.map(|t| self.parse_labels(&t)).transpose()?;
                let member = ClusterMember {
                    id: r.try_get(1).map_err(self.err())?,
                    distance: r.try_get::<f64, _>(2).map_err(self.err())? as f32,
                    labelled: labels.is_some(),
                    class: labels.and_then(|l| l.class),
                    reviewed: r.try_get::<Option<i64>, _>(4).map_err(self.err())? == Some(1),
                };
                Ok((r.try_get::<i64, _>(0).map_err(self.err())? as u32, member))
            })
            .collect()
    }

    /// Give every unlabelled image of `cluster` `labels`, unverified, in one transaction; images
    /// someone labelled are left as they are. Each new label is version 1 in the history, with
    /// `by` as its author.
    pub async fn label_cluster(
        &self,
        cluster: u32,
        labels: &Labels,
        by: Author<'_>,
    ) -> Result<ClusterLabelled, LabelError> {
        let text = serde_json::to_string(labels).map_err(|e| LabelError::invalid(e.to_string()))?;
        let at = now_ms();
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        // The write comes first, taking SQLite's write lock before anything is read.
        let ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO annotations (image_id, version, labels, reviewed, saved_at) \
             SELECT c.image_id, 1, ?, 0, ? FROM clusters c WHERE c.cluster = ? \
             AND NOT EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = c.image_id) RETURNING image_id",
        )
        .bind(&text)
        .bind(at)
        .bind(i64::from(cluster))
        .fetch_all(&mut *tx)
        .await
        .map_err(self.err())?;
        for &id in &ids {
            self.add_history(&mut tx, HistoryRow { id, version: 1, reviewed: false, at, text: &text }, by).await?;
        }
        let size: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM clusters WHERE cluster = ?")
            .bind(i64::from(cluster))
            .fetch_one(&mut *tx)
            .await
            .map_err(self.err())?;
        if size == 0 {
            tx.rollback().await.map_err(self.err())?;
            return Err(LabelError::NoCluster(cluster));
        }
        tx.commit().await.map_err(self.err())?;
        let labelled = ids.len() as u64;
        Ok(ClusterLabelled { cluster, labelled, already_labelled: size as u64 - labelled })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Filter, NextQuery, Order, Root};

    async fn clustered() -> (tempfile::TempDir, Store, Vec<i64>) {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("labels.db")).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(store.add_image(Root::Images, &format!("{i}.png"), (10, 10), 100, "folder").await.unwrap());
        }
        // Cluster 1: images 4 (nearest), 1, 2; cluster 2: images 5, 0; image 3 in none.
        let at = |i: usize, cluster, distance| Placement { image: ids[i], cluster, distance };
        let placements = [at(1, 1, 0.2), at(2, 1, 0.3), at(4, 1, 0.1), at(0, 2, 0.4), at(5, 2, 0.05)];
        store.put_clusters("embed", &placements).await.unwrap();
        (d, store, ids)
    }

    fn class(c: &str) -> Labels {
        Labels { class: Some(c.into()), boxes: vec![] }
    }

    #[tokio::test]
    async fn next_by_cluster_walks_each_cluster_from_its_centre() {
        let (_d, store, ids) = clustered().await;
        let mut seen = Vec::new();
        let mut q = NextQuery { order: Order::Cluster, filter: Filter::All, ..NextQuery::default() };
        while let Some(id) = store.next(&q).await.unwrap() {
            seen.push(id);
            q.exclude.push(id);
            q.after = Some(id);
        }
        assert_eq!(seen, [ids[4], ids[1], ids[2], ids[5], ids[0], ids[3]]);
        assert_eq!(store.cluster_of(ids[5]).await.unwrap(), Some(2));
        assert_eq!(store.cluster_of(ids[3]).await.unwrap(), None);
        assert_eq!(store.clustering().await.unwrap().map(|c| (c.model, c.k)), Some(("embed".into(), 2)));
    }

    #[tokio::test]
    async fn a_cluster_is_labelled_unverified_around_what_people_labelled() {
        let (_d, store, ids) = clustered().await;
        let ui = Author { origin: "ui", user: None };
        store.save_by(ids[1], 0, &class("b"), true, ui).await.unwrap();
        let by = Author { origin: "cluster", user: Some("ann") };
        let done = store.label_cluster(1, &class("a"), by).await.unwrap();
        assert_eq!(done, ClusterLabelled { cluster: 1, labelled: 2, already_labelled: 1 });
        // The person's label stands; the others are labelled, not reviewed, with their author.
        assert_eq!(store.annotation(ids[1]).await.unwrap().unwrap().labels, class("b"));
        for i in [2, 4] {
            let a = store.annotation(ids[i]).await.unwrap().unwrap();
            assert_eq!((a.labels, a.reviewed, a.version), (class("a"), false, 1));
            let h = store.history(ids[i]).await.unwrap();
            assert_eq!((h[0].origin.as_str(), h[0].user.as_deref()), ("cluster", Some("ann")));
        }
        assert!(store.annotation(ids[0]).await.unwrap().is_none(), "another cluster was touched");
        let summary = store.clusters().await.unwrap();
        assert_eq!(summary.len(), 2);
        let one = &summary[0];
        assert_eq!((one.size, one.unlabelled, one.unreviewed, one.reviewed), (3, 0, 2, 1));
        assert_eq!(one.classes, BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)]));
        // A second pass labels nothing; a bulk label then a person's save is an ordinary save.
        assert_eq!(store.label_cluster(1, &class("a"), by).await.unwrap().labelled, 0);
        assert_eq!(store.save_by(ids[2], 1, &class("c"), true, ui).await.unwrap(), 2);
        let members = store.cluster_members(1).await.unwrap();
        assert_eq!(members.iter().map(|m| m.id).collect::<Vec<_>>(), [ids[4], ids[1], ids[2]]);
        assert!(matches!(store.label_cluster(9, &class("a"), by).await, Err(LabelError::NoCluster(9))));
    }

    #[tokio::test]
    async fn new_clusters_replace_the_old_and_bad_ones_change_nothing() {
        let (_d, store, ids) = clustered().await;
        let bad = [
            Placement { image: ids[0], cluster: 1, distance: 0.1 },
            Placement { image: 999, cluster: 1, distance: 0.1 },
        ];
        assert!(matches!(store.put_clusters("embed", &bad).await, Err(LabelError::NoImage(999))));
        let zero = [Placement { image: ids[0], cluster: 0, distance: 0.1 }];
        assert!(store.put_clusters("embed", &zero).await.is_err());
        assert_eq!(store.clusters().await.unwrap().len(), 2, "a refused write changed the clusters");
        let one = [Placement { image: ids[3], cluster: 1, distance: 0.0 }];
        store.put_clusters("other", &one).await.unwrap();
        let summary = store.clusters().await.unwrap();
        assert_eq!((summary.len(), summary[0].size), (1, 1));
        assert_eq!(store.cluster_of(ids[4]).await.unwrap(), None);
    }
}
