//! The labelling app: one page (embedded, no build step) and the JSON API it uses, which is
//! the same one scripts use.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the labelling page |
//! | `GET /api/project` | task, classes, counts, files left out, the model |
//! | `GET /api/images?offset=&limit=` | images with their label versions |
//! | `GET /api/images/{id}` | one image: size, labels, version, suggestion |
//! | `GET /api/images/{id}/file` | its bytes (images are served by id, never by path) |
//! | `PUT /api/images/{id}/labels` | save `{"version": V, "labels": {...}, "reviewed": bool}`; 409 if V is stale |
//! | `GET /api/images/{id}/history` | every saved version, with `origin` and `user` (a named token) |
//! | `POST /api/images/{id}/suggest` | the model's suggestion, made again |
//! | `GET /api/next?after=&order=&filter=&exclude=&backwards=` | the next image to show |
//! | `GET /api/clusters` | the clusters `strix cluster PROJECT` made, with their counts |
//! | `GET /api/clusters/{c}` | cluster `c`'s images, the most typical first |
//! | `POST /api/clusters/{c}/label` | `{"class": C}`: its unlabelled images labelled C, unverified |
//!
//! Errors are JSON, `{"error": {"code": ..., "message": ...}}`, with a 4xx status for what the
//! client got wrong; nothing is written by a refused request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, MissingJsonContentType, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::labels::Labels;
use crate::project::Unservable;
use crate::store::{Author, Filter, NextQuery, Order};
use crate::suggest::suggest_one;
use crate::{LabelError, Project, Suggester};

/// Largest API request body: labels are small; a megabyte holds thousands of boxes.
pub const MAX_BODY: usize = 1 << 20;

const PAGE: &str = include_str!("page.html");

/// What the routes share.
pub struct LabelApp {
    pub project: Project,
    pub suggester: Option<Arc<dyn Suggester>>,
}

impl std::fmt::Debug for LabelApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelApp").field("project", &self.project.dir).finish()
    }
}

/// The app's routes over `app`.
pub fn router(app: Arc<LabelApp>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/project", get(project))
        .route("/api/images", get(images))
        .route("/api/images/{id}", get(image))
        .route("/api/images/{id}/file", get(file))
        .route("/api/images/{id}/labels", put(save))
        .route("/api/images/{id}/history", get(history))
        .route("/api/images/{id}/suggest", post(suggest))
        .route("/api/next", get(next))
        .route("/api/clusters", get(clusters))
        .route("/api/clusters/{c}", get(cluster))
        .route("/api/clusters/{c}/label", post(label_cluster))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(refuse_large))
        .with_state(app)
}

/// A body announced over [`MAX_BODY`] is refused from its headers, before any of it is read.
async fn refuse_large(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let announced = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body over {MAX_BODY} bytes"),
        )
        .into_response();
    }
    next.run(req).await
}

/// A refused or failed request, as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<serde_json::Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), extra: None }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<LabelError> for ApiError {
    fn from(e: LabelError) -> ApiError {
        match &e {
            LabelError::NoImage(_) => ApiError::new(StatusCode::NOT_FOUND, "no_image", e.to_string()),
            LabelError::NoCluster(_) => ApiError::new(StatusCode::NOT_FOUND, "no_cluster", e.to_string()),
            LabelError::Invalid(_) => ApiError::bad(e.to_string()),
            LabelError::Stale { current, .. } => ApiError {
                status: StatusCode::CONFLICT,
                code: "stale_version",
                message: e.to_string(),
                extra: Some(json!({ "current_version": current })),
            },
            _ => {
                tracing::error!(error = %e, "labelling request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_json", "send Content-Type: application/json")
            }
            JsonRejection::BytesRejection(b) if strix_http::is_body_timeout(&b) => {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", b.body_text())
            }
            JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("request body over {MAX_BODY} bytes"))
            }
            other => ApiError::bad(format!("malformed body: {}", other.body_text())),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::bad(format!("image id: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad(format!("query: {}", r.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": { "code": self.code, "message": self.message } });
        if let (Some(extra), Some(map)) = (self.extra, body.as_object_mut())
            && let Some(e) = extra.as_object()
        {
            map.extend(e.clone());
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

async fn project(State(app): State<Arc<LabelApp>>) -> ApiResult {
    let p = &app.project;
    let stats = p.store.stats().await?;
    let problems: Vec<_> =
        p.store.problems().await?.into_iter().map(|(file, reason)| json!({ "file": file, "reason": reason })).collect();
    Ok(Json(json!({
        "name": p.dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "task": p.config.task,
        "classes": p.config.classes,
        "images": p.config.images,
        "model": app.suggester.as_ref().map(|s| s.name().to_string()),
        "stats": stats,
        "problems": problems,
        "clustering": p.store.clustering().await?,
        "orders": ["sequential", "uncertain", "entropy", "cluster", "random"],
        "filters": ["unlabelled", "labelled", "unreviewed", "all"],
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    offset: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

async fn images(State(app): State<Arc<LabelApp>>, q: Result<Query<Page>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    if q.offset < 0 || !(1..=1000).contains(&q.limit) {
        return Err(ApiError::bad("offset must be 0 or more and limit 1..=1000"));
    }
    let rows = app.project.store.images(q.offset, q.limit).await?;
    let list: Vec<_> = rows
        .into_iter()
        .map(|(img, a)| json!({ "image": img, "version": a.as_ref().map_or(0, |a| a.version), "labels": a.map(|a| a.labels) }))
        .collect();
    Ok(Json(json!({ "images": list })).into_response())
}

async fn image(State(app): State<Arc<LabelApp>>, id: Result<Path<i64>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    let p = &app.project;
    let img = p.store.image(id).await?;
    let annotation = p.store.annotation(id).await?;
    let model = app.suggester.as_ref().map(|s| s.name().to_string());
    let mut suggestion = p.store.suggestion(id, model.as_deref()).await?;
    let mut suggestion_error = None;
    if let Some(s) = &app.suggester
        && suggestion.as_ref().is_none_or(|have| have.model != s.name())
    {
        match suggest_one(p, s, id).await {
            Ok(made) => suggestion = Some(made),
            Err(e) => suggestion_error = Some(e.to_string()),
        }
    }
    Ok(Json(json!({
        "image": img,
        "version": annotation.as_ref().map_or(0, |a| a.version),
        "labels": annotation.as_ref().map(|a| &a.labels),
        "reviewed": annotation.as_ref().is_some_and(|a| a.reviewed),
        "saved_at": annotation.as_ref().map(|a| a.saved_at),
        "suggestion": suggestion,
        "suggestion_error": suggestion_error,
        "cluster": p.store.cluster_of(id).await?,
    }))
    .into_response())
}

async fn file(State(app): State<Arc<LabelApp>>, id: Result<Path<i64>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    let img = app.project.store.image(id).await?;
    let bytes = app.project.read_image(&img).await.map_err(|refused| {
        let (status, code) = match refused {
            Unservable::Unreadable(_) => (StatusCode::GONE, "file_gone"),
            Unservable::Changed(_) => (StatusCode::FORBIDDEN, "file_refused"),
        };
        ApiError::new(status, code, format!("image {id}'s file {} {refused}", img.file))
    })?;
    let kind = content_type(&img.file);
    Ok(([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "private, max-age=60")], Bytes::from(bytes))
        .into_response())
}

/// The media type of an image file, by its extension (JPEG when unknown).
fn content_type(file: &str) -> &'static str {
    match std::path::Path::new(file).extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        Some("tif" | "tiff") => "image/tiff",
        _ => "image/jpeg",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveBody {
    /// The version the labels were made on (0: never saved).
    version: i64,
    labels: Labels,
    #[serde(default)]
    reviewed: bool,
    /// Who saves: `ui` from the page, `api` by default.
    #[serde(default)]
    origin: Option<String>,
}

async fn save(
    State(app): State<Arc<LabelApp>>,
    caller: Option<axum::Extension<strix_http::Caller>>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<SaveBody>, JsonRejection>,
) -> ApiResult {
    let Path(id) = id?;
    let Json(body) = body?;
    let origin = body.origin.unwrap_or_else(|| "api".into());
    if origin.is_empty() || origin.len() > 32 || !origin.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ApiError::bad("origin: 1-32 letters, digits or dashes"));
    }
    if body.version < 0 {
        return Err(ApiError::bad("version must be 0 or more"));
    }
    let p = app.project.clone();
    let img = p.store.image(id).await?;
    let labels = body.labels.checked(p.config.task, &p.config.classes, img.width, img.height)?;
    // On its own task: a client that hangs up mid-save must not cancel a save half-way.
    let user = caller.and_then(|axum::Extension(c)| c.user);
    let saved = tokio::spawn(async move {
        let by = Author { origin: &origin, user: user.as_deref() };
        p.store.save_by(id, body.version, &labels, body.reviewed, by).await
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(json!({ "id": id, "version": saved })).into_response())
}

async fn history(State(app): State<Arc<LabelApp>>, id: Result<Path<i64>, PathRejection>) -> ApiResult {
    let Path(id) = id?;
    app.project.store.image(id).await?;
    Ok(Json(json!({ "id": id, "versions": app.project.store.history(id).await? })).into_response())
}

async fn suggest(
    State(app): State<Arc<LabelApp>>,
    id: Result<Path<i64>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let Path(id) = id?;
    // A JSON content type cannot be sent cross-origin without a preflight, so a page elsewhere
    // cannot make the server spend a model run on a "simple" text/plain POST.
    if !is_json(&headers) {
        return Err(JsonRejection::from(MissingJsonContentType::default()).into());
    }
    let body = body.map_err(JsonRejection::from)?;
    // No fields are taken (yet): an empty body or `{}`, so a typo'd option is not ignored.
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(fields)) if fields.is_empty() => {}
            _ => return Err(ApiError::bad("suggest takes an empty body or {}")),
        }
    }
    let Some(s) = &app.suggester else {
        return Err(ApiError::new(StatusCode::CONFLICT, "no_model", "the server was started without --model"));
    };
    let made = suggest_one(&app.project, s, id).await?;
    Ok(Json(json!({ "suggestion": made })).into_response())
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`,
/// parameters allowed), as axum's `Json` requires.
fn is_json(headers: &HeaderMap) -> bool {
    strix_http::media_type(headers).is_some_and(|kind| {
        kind == "application/json" || kind.strip_prefix("application/").is_some_and(|sub| sub.ends_with("+json"))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextParams {
    after: Option<i64>,
    #[serde(default)]
    order: Order,
    #[serde(default)]
    filter: Filter,
    /// Ids seen already, comma-separated.
    #[serde(default)]
    exclude: String,
    #[serde(default)]
    backwards: bool,
}

async fn next(State(app): State<Arc<LabelApp>>, q: Result<Query<NextParams>, QueryRejection>) -> ApiResult {
    let Query(q) = q?;
    let exclude: Vec<i64> = q
        .exclude
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse::<i64>().map_err(|_| ApiError::bad(format!("exclude: {s:?} is not an image id"))))
        .collect::<Result<_, _>>()?;
    if exclude.len() > 10_000 {
        return Err(ApiError::bad("exclude: at most 10000 ids"));
    }
    let query = NextQuery { after: q.after, order: q.order, filter: q.filter, exclude, backwards: q.backwards };
    let id = app.project.store.next(&query).await?;
    Ok(Json(json!({ "id": id })).into_response())
}

async fn clusters(State(app): State<Arc<LabelApp>>) -> ApiResult {
    let store = &app.project.store;
    Ok(Json(json!({ "clustering": store.clustering().await?, "clusters": store.clusters().await? })).into_response())
}

fn cluster_number(c: Result<Path<u32>, PathRejection>) -> Result<u32, ApiError> {
    c.map(|Path(c)| c).map_err(|r| ApiError::bad(format!("cluster: {}", r.body_text())))
}

async fn cluster(State(app): State<Arc<LabelApp>>, c: Result<Path<u32>, PathRejection>) -> ApiResult {
    let c = cluster_number(c)?;
    let members = app.project.store.cluster_members(c).await?;
    if members.is_empty() {
        return Err(LabelError::NoCluster(c).into());
    }
    Ok(Json(json!({ "cluster": c, "members": members })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterLabelBody {
    class: String,
    /// The `made_at` of the clustering the client saw: refused (409) once `strix cluster` has
    /// made new clusters, whose numbers mean other images.
    #[serde(default)]
    clustering: Option<i64>,
}

/// A whole cluster's unlabelled images get one class, unverified: the "review" mode walks them
/// for a person to confirm or correct.
async fn label_cluster(
    State(app): State<Arc<LabelApp>>,
    caller: Option<axum::Extension<strix_http::Caller>>,
    c: Result<Path<u32>, PathRejection>,
    body: Result<Json<ClusterLabelBody>, JsonRejection>,
) -> ApiResult {
    let c = cluster_number(c)?;
    let Json(body) = body?;
    let p = app.project.clone();
    if p.config.task != crate::LabelTask::Classify {
        return Err(ApiError::bad(
            "a whole cluster takes one class in a classification project; boxes differ from image to image",
        ));
    }
    let labels =
        Labels { class: Some(body.class), boxes: Vec::new() }.checked(p.config.task, &p.config.classes, 0, 0)?;
    let made = p.store.clustering().await?.map(|c| c.made_at);
    if let Some(seen) = body.clustering
        && made != Some(seen)
    {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "clusters_changed",
            message: "the clusters were made again since this page loaded them; reload".into(),
            extra: Some(json!({ "clustering": made })),
        });
    }
    let user = caller.and_then(|axum::Extension(c)| c.user);
    // On its own task, like a save: a client that hangs up must not cut it short.
    let done = tokio::spawn(async move {
        p.store.label_cluster(c, &labels, Author { origin: "cluster", user: user.as_deref() }).await
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(Json(done).into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{LabelTask, ProjectConfig, Scored, Suggestion};

    /// A project on one 8x6 PNG, `images/sub/a.png`, and its image id.
    async fn one_image_project(dir: &std::path::Path) -> (Project, i64) {
        let images = dir.join("images");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        image::RgbImage::new(8, 6).save(images.join("sub/a.png")).unwrap();
        let config = ProjectConfig { task: LabelTask::Classify, classes: vec!["x".into()], images };
        let project = Project::create(&dir.join("p"), config).await.unwrap();
        assert_eq!(project.scan().await.unwrap().added, 1);
        let id = project.store.images(0, 1).await.unwrap()[0].0.id;
        (project, id)
    }

    fn app(project: Project, suggester: Option<Arc<dyn Suggester>>) -> Arc<LabelApp> {
        Arc::new(LabelApp { project, suggester })
    }

    async fn get_file(app: &Arc<LabelApp>, id: i64) -> ApiResult {
        file(State(app.clone()), Ok(Path(id))).await
    }

    fn refused(r: ApiResult) -> (StatusCode, &'static str, String) {
        let e = r.expect_err("the file was served");
        (e.status, e.code, e.message)
    }

    /// Issue 31 item 7: a file replaced after the scan (by a link out, a folder, a link on the
    /// way, a file over the size limit) was served as whatever it had become.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_file_replaced_after_the_scan_is_not_served() {
        let d = tempfile::tempdir().unwrap();
        let (project, id) = one_image_project(d.path()).await;
        let images = project.config.images.clone();
        let a = images.join("sub/a.png");
        let good = std::fs::read(&a).unwrap();
        let secret = d.path().join("secret.png");
        std::fs::write(&secret, b"root:x:0:0:root:/root:/bin/bash\n").unwrap();
        let served = get_file(&app(project.clone(), None), id).await.unwrap();
        assert_eq!(served.headers()[header::CONTENT_TYPE], "image/png");

        // The file itself a link to a file outside.
        std::fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink(&secret, &a).unwrap();
        let (status, code, message) = refused(get_file(&app(project.clone(), None), id).await);
        assert_eq!((status, code), (StatusCode::FORBIDDEN, "file_refused"), "{message}");
        assert!(message.contains("symbolic link"), "{message}");

        // A folder on the way a link to a folder outside holding a file of that name.
        std::fs::remove_file(&a).unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::copy(&secret, outside.join("a.png")).unwrap();
        std::fs::remove_dir(images.join("sub")).unwrap();
        std::os::unix::fs::symlink(&outside, images.join("sub")).unwrap();
        let (_, code, message) = refused(get_file(&app(project.clone(), None), id).await);
        assert_eq!(code, "file_refused");
        assert!(message.contains("outside"), "{message}");

        // A folder in the file's place.
        std::fs::remove_file(images.join("sub")).unwrap();
        std::fs::create_dir_all(&a).unwrap();
        let (_, code, message) = refused(get_file(&app(project.clone(), None), id).await);
        assert!(code == "file_refused" && message.contains("regular file"), "{message}");

        // Over the scan's size limit.
        std::fs::remove_dir(&a).unwrap();
        std::fs::write(&a, &good).unwrap();
        let mut small = project.clone();
        small.limits.max_bytes = good.len() as u64 - 1;
        let (_, code, message) = refused(get_file(&app(small, None), id).await);
        assert!(code == "file_refused" && message.contains("limit"), "{message}");

        // Back as it was: served again; gone: 410 as before.
        assert!(get_file(&app(project.clone(), None), id).await.is_ok());
        std::fs::remove_file(&a).unwrap();
        let (status, code, _) = refused(get_file(&app(project, None), id).await);
        assert_eq!((status, code), (StatusCode::GONE, "file_gone"));
    }

    /// Counts its runs; suggests class `x`.
    struct Counting(AtomicUsize);

    impl Suggester for Counting {
        fn name(&self) -> &str {
            "counting"
        }

        fn suggest(&self, _: &strix_vision::RgbImage) -> Result<Suggestion, String> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let classes = vec![Scored { class: "x".into(), score: 0.9 }];
            Ok(Suggestion { model: "counting".into(), classes, boxes: vec![], uncertainty: 0.1, entropy: None })
        }
    }

    /// Issue 31 item 8: a cross-origin `text/plain` POST (no preflight) made the server run its
    /// model; only a JSON content type does now.
    #[tokio::test]
    async fn suggest_runs_the_model_only_for_a_json_request() {
        let d = tempfile::tempdir().unwrap();
        let (project, id) = one_image_project(d.path()).await;
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let app = app(project, Some(counting.clone()));
        let post = |kind: Option<&'static str>, body: &'static str| {
            let app = app.clone();
            let mut headers = HeaderMap::new();
            if let Some(kind) = kind {
                headers.insert(header::CONTENT_TYPE, kind.parse().unwrap());
            }
            async move { suggest(State(app), Ok(Path(id)), headers, Ok(Bytes::from(body))).await }
        };
        for (kind, body) in [(Some("text/plain"), "{}"), (None, ""), (Some("application/x-www-form-urlencoded"), "a=b")]
        {
            let (status, code, message) = refused(post(kind, body).await);
            assert_eq!((status, code), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not_json"), "{kind:?}: {message}");
        }
        assert_eq!(counting.0.load(Ordering::SeqCst), 0, "a refused request ran the model");
        let (status, _, message) = refused(post(Some("application/json"), r#"{"model": "other"}"#).await);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        for (kind, body) in
            [("application/json", ""), ("application/json; charset=utf-8", " {} "), ("application/json", "{}")]
        {
            let r = post(Some(kind), body).await;
            assert_eq!(r.as_ref().map(Response::status).ok(), Some(StatusCode::OK), "{kind} {body:?}: {r:?}");
        }
        assert_eq!(counting.0.load(Ordering::SeqCst), 3);
    }
}
