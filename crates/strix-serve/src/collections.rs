//! Face collections as Rekognition keeps them (CreateCollection, IndexFaces,
//! SearchFacesByImage, ...), each a Strix index of face descriptors in the registry, and
//! `POST /v1/indexes/{name}/search` for the indexes `--index` names. Similarity is
//! Rekognition's 0-100, mapped from cosine by the face model's calibration (`[describe]`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use strix_core::{Answer, Face};
use strix_index::{EmbeddingModel, Entry, Index};
use strix_pipeline::Prediction;
use strix_pipeline::rekognition::BoundingBox;
use strix_vision::face::FaceDescriber;

use crate::ApiError;
use crate::inference::{JsonImage, base64_image, checked_body, image_bytes, infer};
use crate::state::{DecodeSlot, ServeState, ServedModel, index_error};

/// The collection actions `POST /` answers.
pub(crate) const ACTIONS: &[&str] = &[
    "RekognitionService.CreateCollection",
    "RekognitionService.ListCollections",
    "RekognitionService.DeleteCollection",
    "RekognitionService.DescribeCollection",
    "RekognitionService.IndexFaces",
    "RekognitionService.ListFaces",
    "RekognitionService.DeleteFaces",
    "RekognitionService.SearchFacesByImage",
    "RekognitionService.SearchFaces",
    "RekognitionService.CompareFaces",
];

/// Rekognition's limits: faces per IndexFaces and matches per search.
const MAX_INDEXED: usize = 100;
const MAX_MATCHES: usize = 4096;

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Request {
    collection_id: Option<String>,
    image: Option<JsonImage>,
    source_image: Option<JsonImage>,
    target_image: Option<JsonImage>,
    external_image_id: Option<String>,
    max_faces: Option<usize>,
    max_results: Option<usize>,
    next_token: Option<String>,
    quality_filter: Option<String>,
    face_match_threshold: Option<f32>,
    similarity_threshold: Option<f32>,
    face_id: Option<String>,
    face_ids: Option<Vec<String>>,
}

/// The served faces model that describes faces, its describer and its vectors' identity.
struct FaceModel<'a> {
    served: &'a ServedModel,
    describer: FaceDescriber,
    identity: EmbeddingModel,
}

fn face_model(state: &ServeState) -> Result<FaceModel<'_>, ApiError> {
    let indexes = state.indexes()?;
    for served in &state.models {
        let pipeline = served.pipeline();
        let Some(describer) = pipeline.model().spec.describe.clone() else { continue };
        if let Some((_, identity)) = indexes.models.iter().find(|(n, _)| *n == served.name) {
            return Ok(FaceModel { served, describer, identity: identity.clone() });
        }
    }
    Err(ApiError::bad_request(
        "face collections need a faces model that describes faces: serve faceres (--model faceres)",
    ))
}

fn field<T>(value: Option<T>, name: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::bad_request(format!("{name} is required")))
}

fn collection_id(request: &Request) -> Result<String, ApiError> {
    let id = field(request.collection_id.clone(), "CollectionId")?;
    strix_core::check_name(&id).map_err(|e| ApiError::bad_request(format!("CollectionId: {e}")))?;
    Ok(id)
}

/// The request's collection, latest version: an index of the served face model's descriptors
/// (the collection actions touch nothing else in the registry, not `--index` image indexes).
async fn collection(
    state: &ServeState,
    model: &FaceModel<'_>,
    request: &Request,
) -> Result<(String, Arc<Index>), ApiError> {
    let id = collection_id(request)?;
    let index = state.indexes()?.latest(&id).await?;
    if index.manifest.model.task != strix_core::Task::Faces.to_string() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            format!("{id} is an index of {}, not a face collection", index.manifest.model.describe()),
        ));
    }
    check_model(&index, model)?;
    Ok((id, index))
}

/// The largest described face of an answer, and its descriptor.
fn largest_face(prediction: &Prediction) -> Option<(&Face, &[f32])> {
    faces(prediction).into_iter().max_by(|a, b| area(a).total_cmp(&area(b))).map(|f| (f, descriptor(f)))
}

fn descriptor(f: &Face) -> &[f32] {
    f.description.as_ref().map_or(&[], |d| d.embedding.as_slice())
}

/// FaceIds are UUID-shaped; the last group is the index entry id.
fn face_id(id: u64) -> String {
    format!("00000000-0000-4000-8000-{id:012x}")
}

fn parse_face_id(text: &str) -> Option<u64> {
    let last = text.strip_prefix("00000000-0000-4000-8000-")?;
    let plain = last.len() == 12 && last.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    plain.then(|| u64::from_str_radix(last, 16).ok()).flatten()
}

/// A collection action's answer (JSON) and the model that answered, if one did.
pub(crate) async fn handle(
    state: &ServeState,
    action: &str,
    body: Result<Bytes, BytesRejection>,
    slot: DecodeSlot,
) -> Result<(Value, Option<String>), ApiError> {
    let body = checked_body(state, body)?;
    let request: Request =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("malformed request: {e}")))?;
    let model = face_model(state)?;
    let answered = Some(model.served.name.clone());
    let action = action.trim_start_matches("RekognitionService.");
    let out = match action {
        "CreateCollection" => create(state, &model, &request).await?,
        "ListCollections" => list(state, &request).await?,
        "DeleteCollection" => delete(state, &model, &request).await?,
        "DescribeCollection" => describe(state, &model, &request).await?,
        "IndexFaces" => index_faces(state, &model, &request, slot).await?,
        "ListFaces" => list_faces(state, &model, &request).await?,
        "DeleteFaces" => delete_faces(state, &model, &request).await?,
        "SearchFacesByImage" => search_by_image(state, &model, &request, slot).await?,
        "SearchFaces" => search_faces(state, &model, &request).await?,
        "CompareFaces" => compare(state, &model, &request, slot).await?,
        other => return Err(ApiError::bad_request(format!("unknown action {other}"))),
    };
    Ok((out, answered))
}

fn version(model: &FaceModel<'_>) -> String {
    model.identity.reference.clone()
}

async fn create(state: &ServeState, model: &FaceModel<'_>, request: &Request) -> Result<Value, ApiError> {
    let id = collection_id(request)?;
    let registry = state.indexes()?.registry().await?;
    strix_index::create(registry, &id, model.identity.clone(), "a Rekognition face collection", "strix serve")
        .await
        .map_err(|e| match e {
            strix_index::IndexError::NotAnIndex { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "ResourceAlreadyExistsException",
                format!("{id} is taken by a model in the registry"),
            ),
            e => index_error(e),
        })?;
    Ok(
        json!({"StatusCode": 200, "CollectionArn": format!("aws:rekognition:strix:collection/{id}"), "FaceModelVersion": version(model)}),
    )
}

/// Indexes of face descriptors in the registry.
async fn list(state: &ServeState, request: &Request) -> Result<Value, ApiError> {
    let indexes = state.indexes()?;
    let registry = indexes.registry().await?;
    let mut collections = Vec::new();
    for summary in strix_index::list(registry).await.map_err(index_error)? {
        let reference =
            strix_registry::ModelRef::parse(&summary.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let (_, manifest) = strix_index::manifest(registry, &reference).await.map_err(index_error)?;
        if manifest.model.task == strix_core::Task::Faces.to_string() {
            collections.push((summary.name, manifest.model.reference));
        }
    }
    let (page, next) = page(collections, request)?;
    let (ids, versions): (Vec<String>, Vec<String>) = page.into_iter().unzip();
    Ok(json!({"CollectionIds": ids, "FaceModelVersions": versions, "NextToken": next}))
}

/// One page of `items` from `NextToken` (an offset), at most `MaxResults`.
fn page<T>(items: Vec<T>, request: &Request) -> Result<(Vec<T>, Option<String>), ApiError> {
    let start: usize = match &request.next_token {
        Some(t) => t.parse().map_err(|_| ApiError::bad_request("NextToken is not one this server gave"))?,
        None => 0,
    };
    let max = request.max_results.unwrap_or(1000).clamp(1, 4096);
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + page.len() < total).then(|| (start + page.len()).to_string());
    Ok((page, next))
}

async fn delete(state: &ServeState, model: &FaceModel<'_>, request: &Request) -> Result<Value, ApiError> {
    let (id, _) = collection(state, model, request).await?;
    let indexes = state.indexes()?;
    let reference = strix_registry::ModelRef::parse(&id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let registry = indexes.registry().await?;
    let deleted = registry.delete(&reference, true).await;
    indexes.forget(&id).await;
    deleted.map_err(|e| index_error(strix_index::IndexError::Registry { name: id, source: e }))?;
    Ok(json!({"StatusCode": 200}))
}

async fn describe(state: &ServeState, model: &FaceModel<'_>, request: &Request) -> Result<Value, ApiError> {
    let (id, index) = collection(state, model, request).await?;
    Ok(json!({
        "FaceCount": index.len(),
        "FaceModelVersion": index.manifest.model.reference,
        "CollectionARN": format!("aws:rekognition:strix:collection/{id}"),
        "CreationTimestamp": 0,
    }))
}

/// Faces of the image the request carries, described by the faces model.
async fn faces_of(
    state: &ServeState,
    model: &FaceModel<'_>,
    image: Option<&JsonImage>,
    name: &str,
    slot: DecodeSlot,
) -> Result<Prediction, ApiError> {
    let bytes = base64_image(&field(image, name)?.bytes)?;
    let (prediction, _) = infer(state, model.served, bytes, slot).await?;
    Ok(prediction)
}

fn faces(prediction: &Prediction) -> Vec<&Face> {
    match &prediction.answer {
        Answer::Faces { faces } => faces.iter().filter(|f| f.description.is_some()).collect(),
        _ => Vec::new(),
    }
}

fn area(f: &Face) -> f32 {
    f.bbox.width() * f.bbox.height()
}

fn face_json(prediction: &Prediction, f: &Face) -> Value {
    json!({"BoundingBox": BoundingBox::of(&f.bbox, prediction.width, prediction.height), "Confidence": f.score * 100.0})
}

/// The least face side (pixels) and detector score each QualityFilter keeps.
fn quality(filter: &str) -> Option<(f32, f32)> {
    match filter {
        "NONE" => Some((0.0, 0.0)),
        "LOW" => Some((16.0, 0.5)),
        "AUTO" | "MEDIUM" => Some((24.0, 0.6)),
        "HIGH" => Some((40.0, 0.75)),
        _ => None,
    }
}

fn check_filter(filter: &str) -> Result<(), ApiError> {
    match quality(filter) {
        Some(_) => Ok(()),
        None => Err(ApiError::bad_request(format!("QualityFilter {filter:?}: NONE, AUTO, LOW, MEDIUM or HIGH"))),
    }
}

/// Why a face is not good enough to index under `filter` (Rekognition's reasons), if it is not.
fn quality_reason(f: &Face, filter: &str) -> Option<&'static str> {
    let (min_side, min_score) = quality(filter)?;
    if f.bbox.width().min(f.bbox.height()) < min_side {
        Some("SMALL_BOUNDING_BOX")
    } else if f.score < min_score {
        Some("LOW_CONFIDENCE")
    } else {
        None
    }
}

/// A fresh UUID-shaped ImageId from the time in nanoseconds and a process-wide counter.
fn image_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let t = format!("{t:032x}");
    format!("{}-{}-4{}-8{:03x}-{}", &t[8..16], &t[16..20], &t[21..24], n % 4096, &t[20..32])
}

async fn index_faces(
    state: &ServeState,
    model: &FaceModel<'_>,
    request: &Request,
    slot: DecodeSlot,
) -> Result<Value, ApiError> {
    let max = request.max_faces.unwrap_or(MAX_INDEXED);
    if !(1..=MAX_INDEXED).contains(&max) {
        return Err(ApiError::bad_request(format!("MaxFaces must be 1 to {MAX_INDEXED}, got {max}")));
    }
    let filter = request.quality_filter.as_deref().unwrap_or("AUTO");
    check_filter(filter)?;
    let (id, _) = collection(state, model, request).await?;
    let indexes = state.indexes()?;
    let prediction = faces_of(state, model, request.image.as_ref(), "Image", slot).await?;
    let mut found = faces(&prediction);
    found.sort_by(|a, b| area(b).total_cmp(&area(a)));
    let (mut kept, mut unindexed) = (Vec::new(), Vec::new());
    for f in found {
        let reason = if kept.len() >= max { Some("EXCEEDS_MAX_FACES") } else { quality_reason(f, filter) };
        match reason {
            Some(r) => unindexed.push(json!({"Reasons": [r], "FaceDetail": face_json(&prediction, f)})),
            None => kept.push(f),
        }
    }
    let image_id = image_id();
    let items: Vec<(Entry, Vec<f32>)> = kept
        .iter()
        .map(|f| {
            let mut metadata = serde_json::Map::new();
            metadata.insert("confidence".into(), json!(f.score * 100.0));
            metadata.insert("image_size".into(), json!([prediction.width, prediction.height]));
            let entry = Entry {
                id: 0,
                image: image_id.clone(),
                external_id: request.external_image_id.clone(),
                bbox: Some([f.bbox.x1, f.bbox.y1, f.bbox.x2, f.bbox.y2]),
                metadata,
            };
            (entry, descriptor(f).to_vec())
        })
        .collect();
    let mut records = Vec::new();
    if !items.is_empty() {
        let registry = indexes.registry().await?;
        let change =
            strix_index::add(registry, &id, &model.identity, items, "strix serve").await.map_err(index_error)?;
        for (f, entry_id) in kept.iter().zip(change.ids) {
            let mut face = face_json(&prediction, f);
            face["FaceId"] = json!(face_id(entry_id));
            face["ImageId"] = json!(image_id);
            if let Some(e) = &request.external_image_id {
                face["ExternalImageId"] = json!(e);
            }
            records.push(json!({"Face": face, "FaceDetail": face_json(&prediction, f)}));
        }
    }
    Ok(json!({"FaceRecords": records, "UnindexedFaces": unindexed, "FaceModelVersion": version(model)}))
}

fn check_model(index: &Index, model: &FaceModel<'_>) -> Result<(), ApiError> {
    if index.manifest.model.sha256 != model.identity.sha256 {
        return Err(ApiError::bad_request(format!(
            "collection {} holds faces of {}, not of the served {}",
            index.name,
            index.manifest.model.describe(),
            model.identity.describe()
        )));
    }
    Ok(())
}

/// A stored face as Rekognition lists it.
fn stored_face(e: &Entry) -> Value {
    let size = e.metadata.get("image_size").and_then(|s| Some((s[0].as_u64()? as u32, s[1].as_u64()? as u32)));
    let bbox = match (e.bbox, size) {
        (Some([x1, y1, x2, y2]), Some((w, h))) => json!(BoundingBox::of(&strix_core::BBox::new(x1, y1, x2, y2), w, h)),
        _ => Value::Null,
    };
    let mut face = json!({
        "FaceId": face_id(e.id),
        "ImageId": e.image,
        "BoundingBox": bbox,
        "Confidence": e.metadata.get("confidence").cloned().unwrap_or(json!(100.0)),
    });
    if let Some(x) = &e.external_id {
        face["ExternalImageId"] = json!(x);
    }
    face
}

/// Faces in id order; `NextToken` is the last id given, so faces added or deleted between
/// pages neither repeat nor get skipped.
async fn list_faces(state: &ServeState, model: &FaceModel<'_>, request: &Request) -> Result<Value, ApiError> {
    let (_, index) = collection(state, model, request).await?;
    let after: u64 = match &request.next_token {
        Some(t) => t.parse().map_err(|_| ApiError::bad_request("NextToken is not one this server gave"))?,
        None => 0,
    };
    let max = request.max_results.unwrap_or(1000).clamp(1, 4096);
    let rest: Vec<&Entry> = index.entries().iter().filter(|e| e.id > after).collect();
    let page: Vec<Value> = rest.iter().take(max).map(|e| stored_face(e)).collect();
    let next = (rest.len() > max).then(|| rest[max - 1].id.to_string());
    Ok(json!({"Faces": page, "NextToken": next, "FaceModelVersion": index.manifest.model.reference}))
}

async fn delete_faces(state: &ServeState, model: &FaceModel<'_>, request: &Request) -> Result<Value, ApiError> {
    let wanted = field(request.face_ids.clone(), "FaceIds")?;
    if wanted.is_empty() || wanted.len() > 4096 {
        return Err(ApiError::bad_request("FaceIds must hold 1 to 4096 ids"));
    }
    let indexes = state.indexes()?;
    // A face another request deletes meanwhile is reported as not found, not as an error.
    for _ in 0..3 {
        let (id, index) = collection(state, model, request).await?;
        let (mut gone, mut ids, mut failed) = (Vec::new(), Vec::new(), Vec::new());
        for text in &wanted {
            match parse_face_id(text).filter(|i| index.entry(*i).is_some()) {
                Some(i) if !ids.contains(&i) => {
                    ids.push(i);
                    gone.push(text.clone());
                }
                _ => failed.push(json!({"FaceId": text, "Reasons": ["FACE_NOT_FOUND"]})),
            }
        }
        if !ids.is_empty() {
            let registry = indexes.registry().await?;
            match strix_index::remove(registry, &id, &ids, "strix serve").await {
                Err(strix_index::IndexError::UnknownEntry { .. }) => continue,
                other => {
                    other.map_err(index_error)?;
                }
            }
        }
        return Ok(json!({"DeletedFaces": gone, "UnsuccessfulFaceDeletions": failed}));
    }
    Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ThrottlingException", "faces kept changing; retry"))
}

/// `FaceMatchThreshold` (0-100, default 80) and `MaxFaces`.
fn match_settings(request: &Request) -> Result<(f32, usize), ApiError> {
    let threshold = request.face_match_threshold.unwrap_or(80.0);
    if !(0.0..=100.0).contains(&threshold) {
        return Err(ApiError::bad_request(format!("FaceMatchThreshold must be 0 to 100, got {threshold}")));
    }
    let max = request.max_faces.unwrap_or(MAX_MATCHES);
    if !(1..=MAX_MATCHES).contains(&max) {
        return Err(ApiError::bad_request(format!("MaxFaces must be 1 to {MAX_MATCHES}, got {max}")));
    }
    Ok((threshold, max))
}

/// Faces like `query` with Similarity at least `threshold` (0-100), best first, `skip` left out.
fn matches_json(
    model: &FaceModel<'_>,
    index: &Index,
    query: &[f32],
    threshold: f32,
    max: usize,
    skip: Option<u64>,
) -> Result<Vec<Value>, ApiError> {
    // Similarity 0 covers every cosine at or below the calibration's zero: no cut then.
    let min = if threshold <= 0.0 { -1.0 } else { model.describer.cosine_of_similarity(threshold) - 1e-4 };
    let hits = index.search(query, max + usize::from(skip.is_some()), min).map_err(index_error)?;
    Ok(hits
        .iter()
        .filter(|m| Some(m.entry.id) != skip)
        .map(|m| (model.describer.similarity_of_cosine(m.similarity), m))
        .filter(|(similarity, _)| *similarity >= threshold)
        .take(max)
        .map(|(similarity, m)| json!({"Similarity": similarity, "Face": stored_face(&m.entry)}))
        .collect())
}

async fn search_by_image(
    state: &ServeState,
    model: &FaceModel<'_>,
    request: &Request,
    slot: DecodeSlot,
) -> Result<Value, ApiError> {
    let (threshold, max) = match_settings(request)?;
    let (_, index) = collection(state, model, request).await?;
    let prediction = faces_of(state, model, request.image.as_ref(), "Image", slot).await?;
    let Some((face, query)) = largest_face(&prediction) else {
        return Err(ApiError::bad_request("There are no faces in the image. Should be at least 1."));
    };
    Ok(json!({
        "SearchedFaceBoundingBox": BoundingBox::of(&face.bbox, prediction.width, prediction.height),
        "SearchedFaceConfidence": face.score * 100.0,
        "FaceMatches": matches_json(model, &index, query, threshold, max, None)?,
        "FaceModelVersion": version(model),
    }))
}

async fn search_faces(state: &ServeState, model: &FaceModel<'_>, request: &Request) -> Result<Value, ApiError> {
    let (threshold, max) = match_settings(request)?;
    let text = field(request.face_id.clone(), "FaceId")?;
    let (id, index) = collection(state, model, request).await?;
    let entry = parse_face_id(&text)
        .filter(|i| index.entry(*i).is_some())
        .ok_or_else(|| ApiError::bad_request(format!("collection {id} has no face {text}")))?;
    let query = index.vector(entry).map(<[f32]>::to_vec).unwrap_or_default();
    let matches = matches_json(model, &index, &query, threshold, max, Some(entry))?;
    Ok(json!({"SearchedFaceId": text, "FaceMatches": matches, "FaceModelVersion": version(model)}))
}

async fn compare(
    state: &ServeState,
    model: &FaceModel<'_>,
    request: &Request,
    slot: DecodeSlot,
) -> Result<Value, ApiError> {
    let threshold = request.similarity_threshold.unwrap_or(80.0);
    if !(0.0..=100.0).contains(&threshold) {
        return Err(ApiError::bad_request(format!("SimilarityThreshold must be 0 to 100, got {threshold}")));
    }
    let source = faces_of(state, model, request.source_image.as_ref(), "SourceImage", slot.clone()).await?;
    let target = faces_of(state, model, request.target_image.as_ref(), "TargetImage", slot).await?;
    let Some((face, query)) = largest_face(&source) else {
        return Err(ApiError::bad_request("There are no faces in the source image. Should be at least 1."));
    };
    let (mut matched, mut unmatched) = (Vec::new(), Vec::new());
    for f in faces(&target) {
        let similarity = model.describer.similarity(query, descriptor(f));
        if similarity >= threshold {
            matched.push(json!({"Similarity": similarity, "Face": face_json(&target, f)}));
        } else {
            unmatched.push(face_json(&target, f));
        }
    }
    Ok(json!({"SourceImageFace": face_json(&source, face), "FaceMatches": matched, "UnmatchedFaces": unmatched}))
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    threshold: Option<f32>,
}

/// `POST /v1/indexes/{name}/search?k=10&threshold=0.5`: an image in (raw, or
/// `{"Image": {"Bytes"}}`), its nearest entries out with their cosine similarity.
pub(crate) async fn search_route(
    State(state): State<Arc<ServeState>>,
    Extension(slot): Extension<DecodeSlot>,
    Path(name): Path<String>,
    Query(query): Query<SearchQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let mut served = String::new();
    let result = async {
        let indexes = state.indexes()?;
        if !indexes.served.contains(&name) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                format!("index {name:?} is not served (indexes: {})", indexes.served.join(", ")),
            ));
        }
        let k = query.k.unwrap_or(10);
        if !(1..=MAX_MATCHES).contains(&k) {
            return Err(ApiError::bad_request(format!("k must be 1 to {MAX_MATCHES}, got {k}")));
        }
        let threshold = query.threshold.unwrap_or(-1.0);
        if !(-1.0..=1.0).contains(&threshold) {
            return Err(ApiError::bad_request(format!("threshold is a cosine similarity, -1 to 1, got {threshold}")));
        }
        let index = indexes.latest(&name).await?;
        let sha = &index.manifest.model.sha256;
        let (route, _) = indexes.models.iter().find(|(_, m)| m.sha256 == *sha).ok_or_else(|| {
            ApiError::bad_request(format!("index {name}'s model {} is not served", index.manifest.model.describe()))
        })?;
        let model = state.model(route)?;
        served = model.name.clone();
        let bytes = image_bytes(&headers, checked_body(&state, body)?)?;
        let (prediction, version) = infer(&state, model, bytes, slot).await?;
        let Some((bbox, vector)) = strix_index::query_vector(&prediction) else {
            return Err(ApiError::bad_request("There are no faces in the image. Should be at least 1."));
        };
        let matches = index.search(&vector, k, threshold).map_err(index_error)?;
        let matches: Vec<Value> = matches.iter().map(strix_index::Match::to_json).collect();
        let body = json!({"index": name, "version": index.version, "model": version,
                          "query_bbox": bbox.map(|b| [b.x1, b.y1, b.x2, b.y2]), "matches": matches});
        Ok(axum::Json(body).into_response())
    }
    .await;
    state.finish(&served, started, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_ids_round_trip_and_strangers_are_refused() {
        assert_eq!(parse_face_id(&face_id(42)), Some(42));
        assert_eq!(face_id(42).len(), 36);
        for bad in ["", "42", "00000000-0000-4000-8000-00000000002", "11111111-0000-4000-8000-00000000002a"] {
            assert_eq!(parse_face_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_follow_their_tokens() {
        let request = Request { max_results: Some(2), ..Default::default() };
        let (first, next) = page(vec![1, 2, 3], &request).unwrap();
        assert_eq!((first, next.as_deref()), (vec![1, 2], Some("2")));
        let request = Request { max_results: Some(2), next_token: next, ..Default::default() };
        assert_eq!(page(vec![1, 2, 3], &request).unwrap(), (vec![3], None));
        let request = Request { next_token: Some("x".into()), ..Default::default() };
        assert!(page(vec![1], &request).is_err());
    }
}
