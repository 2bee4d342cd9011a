//! The flags of every command but `predict` (cargo feature `full`): training, labelling,
//! serving, streaming, the registry, jobs, indexes, monitoring and pipelines.

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand, ValueEnum};

use super::{RuntimeArgs, parse_backend, task_parser};

// The fixed sets of `strix train`'s choices, by the names its config file uses (a unit test
// checks each against strix-train's own types).
/// What `--model` takes: a network, or `knn` (no network trained: a vote of labelled embeddings).
const TRAIN_MODELS: [&str; 6] = ["small-cnn", "resnet18", "resnet34", "resnet50", "efficientnet-lite0", "knn"];
const MODES: [&str; 3] = ["linear-probe", "fine-tune", "scratch"];
const OPTIMIZERS: [&str; 2] = ["sgd", "adamw"];
const SCHEDULES: [&str; 3] = ["constant", "cosine", "step"];
const MONITORS: [&str; 2] = ["val-accuracy", "val-loss"];
const DEVICES: [&str; 3] = ["cpu", "cuda", "wgpu"];
const TRAIN_TASKS: [&str; 2] = ["classify", "detect"];
const RESIZE_MODES: [&str; 2] = ["letterbox", "stretch"];

#[derive(Debug, Subcommand)]
#[command(after_help = PIPELINE_HELP)]
pub enum PipelineCommand {
    /// Run a PIPELINE.toml's steps; those whose inputs and settings are unchanged are not run
    /// again, and an interrupted training run resumes from its checkpoint
    Run(Box<PipelineRunArgs>),
}

#[derive(Debug, Args)]
#[command(after_help = PIPELINE_HELP)]
pub struct PipelineRunArgs {
    /// The pipeline file (below: what it holds)
    #[arg(value_name = "PIPELINE.toml")]
    pub file: PathBuf,
    /// Train (or tune) on workers: the training step becomes a job on this NATS JetStream queue
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// The queue's other settings (TOML, as `strix worker --queue-config`)
    #[arg(long, value_name = "FILE")]
    pub queue_config: Option<PathBuf>,
    /// Print the outcome as one JSON object (each step: status, seconds, output)
    #[arg(long)]
    pub json: bool,
    /// The engine the evaluation scores with (the one that will serve the model)
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

const PIPELINE_HELP: &str = "\
PIPELINE.toml holds one table per step; they run in this order, and an absent table is a step
left out. Relative paths are the file's folder's.

  state = \"trash.pipeline\"        # records and runs [default: <file name>.pipeline beside it]
  [snapshot]
  project = \"labels/trash\"        # a labelling project: its labels as of now train the model
  [train]                          # strix train's config keys (or [tune] with strix tune's flags)
  model = \"small-cnn\"
  epochs = 10
  [evaluate]
  data = \"data/test\"              # a fixed test set: the new model and the alias's version
  [condition]
  when = \"test.accuracy >= 0.8 and >= production\"
  [register]
  model = \"trash\"
  alias = \"production\"            # moved to the new version

Figures: val.{accuracy,top5,loss,map,map50} from the run; test.{accuracy,macro_f1,map,map50}
from [evaluate]. A comparison with an alias reads the same figure of the version it points to
(on the same test set for test.*); an alias nobody holds yet is nothing to beat. A comparison
without a figure reuses the previous one.

Each step is recorded in STATE/steps/ under the sha256 of its inputs and settings (the labels,
the data's files, the weights, the settings, the model it scores): an unchanged rerun runs no
step, and a run killed while training resumes from the last checkpoint. A condition not met
registers nothing.

Exit status: 0 done, 4 the condition was not met, 1 an error.

Examples:
  strix pipeline run retrain.toml
  strix monitor run --baseline base/ --data trash-project/ --since 24h --on-violation retrain.toml";

#[derive(Debug, Subcommand)]
#[command(after_help = MONITOR_HELP)]
pub enum MonitorCommand {
    /// Record what a model sees and says on data it is known to do well on: statistics.json,
    /// constraints.json (editable thresholds) and embeddings.f32
    Baseline(Box<MonitorBaselineArgs>),
    /// Test images against a baseline: violations.json and report.html; exit 3 on violations
    Run(Box<MonitorRunArgs>),
    /// Score a registered classifier (accuracy, macro-F1) or detector (mAP) on the captured
    /// images people have labelled since, against its validation figures: quality.json; exit 3
    /// when a figure dropped too far
    Quality(Box<MonitorQualityArgs>),
}

#[derive(Debug, Args)]
pub struct MonitorQualityArgs {
    /// A registered version (NAME:VERSION or NAME@ALIAS): its validation figures are the yardstick
    #[arg(long)]
    pub model: String,
    /// The labelling project its captured images went to (`--capture`)
    #[arg(long)]
    pub project: PathBuf,
    /// Only labels saved since: a time (2026-12-01T00:00:00Z) or an age (7d)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Largest drop of accuracy or macro-F1 below the validation figure that is not a violation
    #[arg(long, default_value_t = 0.05)]
    pub max_drop: f64,
    /// Where quality.json goes
    #[arg(long, default_value = "monitor")]
    pub out: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MonitorBaselineArgs {
    /// The model watched (a zoo name, NAME:VERSION, NAME@ALIAS, a spec or ONNX file)
    #[arg(long)]
    pub model: String,
    /// Images: a folder (searched recursively), files, or a labelling project
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// The baseline's folder
    #[arg(long)]
    pub out: PathBuf,
    /// The model whose embeddings are compared (MMD); `none` to leave embeddings out
    #[arg(long, default_value = "efficientnet_lite0_embed")]
    pub embedding: String,
    /// Values (and vectors) kept per feature, drawn uniformly
    #[arg(long, default_value_t = 2000)]
    pub sample: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MonitorRunArgs {
    /// A folder `strix monitor baseline` wrote
    #[arg(long)]
    pub baseline: PathBuf,
    /// Images: a folder (searched recursively), files, or a labelling project
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Only images added (a project) or modified (files) since: a time (2026-12-01T00:00:00Z)
    /// or an age (24h)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Where violations.json and report.html go
    #[arg(long, default_value = "monitor")]
    pub out: PathBuf,
    /// The model to run [default: the one the baseline was made with]
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// On violations, run this pipeline (`strix pipeline run`): retrain on what was labelled
    #[arg(long, value_name = "PIPELINE.toml")]
    pub on_violation: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[arg(long)]
    pub json: bool,
}

const MONITOR_HELP: &str = "\
A baseline holds, for each feature, a summary and a uniform sample: image properties
(brightness, contrast, sharpness as the variance of the Laplacian, colourfulness, width,
height, aspect ratio, files that do not decode), answers (a classifier's top class and
confidence; a detector's boxes per image and box areas) and a reservoir of embeddings.

A run tests the images against it, feature by feature: Kolmogorov-Smirnov for numbers and
chi-squared (homogeneity) for the class mix while the window has at most `large_sample` (1000)
values; normalised Wasserstein (> 0.1) and Jensen-Shannon (> 0.1) beyond, Evidently's tests; MMD
with a permutation test on embeddings, as alibi-detect does. P-values share alpha (0.05) by
Bonferroni. Thresholds are in constraints.json; `skip` leaves features out.

Exit status: 0 no violation, 3 violations, 1 an error. With --on-violation PIPELINE.toml, a
run with violations runs the pipeline (`strix pipeline run`) and still exits 3, or 1 when the
pipeline fails; with --json its outcome follows on a line of its own.

Examples:
  strix monitor baseline --model trash:3 --data val/ --out baseline/
  strix monitor run --baseline baseline/ --data trash-project/ --since 24h --json";

#[derive(Debug, Args)]
#[command(after_help = CLUSTER_HELP)]
pub struct ClusterArgs {
    /// Image files and folders (searched recursively), or one labelling project
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many clusters; without it, each k from 2 to --max-k is tried and the one with the
    /// best silhouette kept
    #[arg(long)]
    pub k: Option<usize>,
    #[arg(long, default_value_t = 10)]
    pub max_k: usize,
    /// The embedding model (an embed model, or faceres to cluster faces)
    #[arg(long, default_value = "efficientnet_lite0_embed")]
    pub model: String,
    /// Where clusters.json, clusters.csv and the contact sheets go [default: clusters, or
    /// PROJECT/clusters for a labelling project]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Thumbnails per cluster on the overview sheet
    #[arg(long, default_value_t = 12)]
    pub per_cluster: usize,
    /// Seed of k-means++ (the same seed, the same clusters)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// k-means runs from as many seedings; the one with the lowest inertia is kept
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub restarts: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[arg(long)]
    pub json: bool,
}

const CLUSTER_HELP: &str = "\
Writes into --out: clusters.json (k, how it was chosen, each k's silhouette, every cluster's
members), clusters.csv (image,cluster), overview.png (a row of samples per cluster) and
cluster-NN.png (every member of cluster NN). k-means++ seeding, then Lloyd's iterations, on
unit embeddings (clusters by cosine similarity).

A labelling project's images are clustered into the project too (replacing earlier clusters):
`strix label serve PROJECT` then walks them cluster by cluster (next by: cluster), shows the
cluster's images beside the one being labelled, and in a classification project labels the
rest of a cluster like the image in view with one key (c). Those labels are unverified: the
review mode walks them for a person to confirm. Images added later join no cluster until the
next run.

Examples:
  strix cluster unlabelled/ --out clusters
  strix cluster trash-project/ --k 8
  strix cluster unlabelled/ --k 3 --json
  strix cluster visitors/ --model faceres --out people";

#[derive(Debug, Subcommand)]
#[command(after_help = INDEX_HELP)]
pub enum IndexCommand {
    /// Make an empty index for one model's vectors (an embed model, or a faces model that
    /// describes faces: faceres)
    Create {
        name: String,
        /// The embedding model: a zoo name, NAME:VERSION from the registry, a spec file
        #[arg(long, default_value = "efficientnet_lite0_embed")]
        model: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        runtime: RuntimeArgs,
        #[arg(long)]
        json: bool,
    },
    /// Embed images (files and folders) with the index's model and add them
    Add(Box<IndexAddArgs>),
    /// The indexed images (or faces) most like a query image
    Search(Box<IndexSearchArgs>),
    /// Every index: name, versions, latest
    List {
        #[arg(long)]
        json: bool,
    },
    /// An index's model, size and files; --entries lists what it holds (its versions are in
    /// `strix models show NAME`)
    Show {
        /// NAME, NAME:VERSION or NAME@ALIAS
        name: String,
        #[arg(long)]
        entries: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove entries (--id, --image) as a new version, or the whole index (--all)
    Remove {
        name: String,
        /// An entry id (repeatable)
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<u64>,
        /// Every entry of this image, as `show --entries` prints it (repeatable)
        #[arg(long = "image", value_name = "IMAGE")]
        images: Vec<String>,
        /// Remove the index itself, every version (the files go at the next `models gc`)
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args)]
pub struct IndexAddArgs {
    pub name: String,
    /// Image files, folders (searched recursively), labelling projects (every image, its
    /// class label as the external id, its project image id in the metadata) and bucket
    /// prefixes (s3://BUCKET/PREFIX: every image under it, named by its URL)
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// What each entry's external id is: none, the file's stem, or its folder's name (a class
    /// folder: what `strix train --model knn` reads)
    #[arg(long, value_enum, default_value_t = ExternalIdFrom::None)]
    pub external_id: ExternalIdFrom,
    /// Metadata stored with every entry added now (repeatable)
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Images per inference
    #[arg(long, default_value_t = 8)]
    pub batch: u32,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExternalIdFrom {
    None,
    Stem,
    Folder,
}

#[derive(Debug, Args)]
pub struct IndexSearchArgs {
    /// NAME, NAME:VERSION or NAME@ALIAS
    pub name: String,
    /// A query image, or a folder of them (repeatable); for a faces index, each image's
    /// largest face. Several queries print one line (or JSON line) each
    #[arg(long = "image", value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    /// How many matches
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Least cosine similarity of a match, -1 to 1
    #[arg(long)]
    pub threshold: Option<f32>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[arg(long)]
    pub json: bool,
}

const INDEX_HELP: &str = "\
An index holds vectors of one model, each with the image it came from (and for faces, the
face's box), an optional external id and metadata. Every change is a new version in the
registry (`strix models list` shows them, task `index`); concurrent writers never lose an
update. While a scan costs what a graph search does (vectors x dimensions under 4 million:
8000 vectors of 512), a search compares every vector (exact); beyond, an HNSW graph.

Examples:
  strix index create pantry --model efficientnet_lite0_embed
  strix index add pantry photos/ --external-id folder
  strix index search pantry --image query.jpg --k 5
  strix index create staff --model faceres
  strix index add staff badges/ --external-id stem
  strix index search staff --image door.jpg --threshold 0.75 --json
  strix index remove pantry --image /data/photos/old.jpg";

#[derive(Debug, Args)]
#[command(after_help = SERVE_HELP)]
pub struct ServeArgs {
    /// A model to serve (repeatable): a zoo name, a registered NAME:VERSION / NAME@ALIAS, a
    /// spec file; ROUTE=MODEL names its route (/v1/models/ROUTE/predict)
    #[arg(long = "model", value_name = "MODEL")]
    pub models: Vec<String>,
    /// Settings file (TOML): host, port, fast_decode, allowed_hosts, [[models]], [batching],
    /// [limits]; flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on [default: 8080]
    #[arg(short, long)]
    pub port: Option<u16>,
    /// Most images per inference [default: 8]
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// How long the first request of a batch waits for others, in ms; with several workers
    /// only while all the others are busy [default: 5]
    #[arg(long)]
    pub max_delay_ms: Option<u64>,
    /// Requests waiting per model before the server answers 503 [default: 64]
    #[arg(long)]
    pub queue: Option<usize>,
    /// Answer 504 when a request waits longer than this, in ms [default: 30000]
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Batches in flight per model, sharing --threads [default: one per thread, each
    /// inference on one thread; a cascade runs one at a time on all of them]
    #[arg(long)]
    pub workers: Option<usize>,
    /// Largest request body in bytes [default: 20971520]
    #[arg(long)]
    pub max_body_bytes: Option<usize>,
    /// Largest image in pixels, checked from its header [default: 100000000]
    #[arg(long)]
    pub max_pixels: Option<u64>,
    /// Decode JPEGs at 1/2, 1/4 or 1/8 of their size when the model's input is that much
    /// smaller (libjpeg-turbo's DCT scaling): less decoding per request, slightly different
    /// pixels (see the README for the measured effect on answers)
    #[arg(long)]
    pub fast_decode: bool,
    /// Classes per classification answer
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Require an API key from this file (one per line) on every route but /ping and /health
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Host names the server answers to besides loopback names and IP literals (repeatable;
    /// guards against DNS rebinding; others get 421), e.g. --http-allow-host models.example.org;
    /// `*` answers any name (behind a proxy that checks names itself)
    #[arg(long, value_name = "HOST")]
    pub http_allow_host: Vec<String>,
    /// How often models named by registry alias (NAME@ALIAS, or a bare registry NAME) check
    /// whether it moved, in seconds; a new version is loaded, tested and swapped in. 0: never
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub follow_interval: std::time::Duration,
    /// Search this index of the registry at POST /v1/indexes/NAME/search (repeatable); its
    /// model is served too when no --model gives the same vectors
    #[arg(long = "index", value_name = "NAME")]
    pub indexes: Vec<String>,
    /// Add a sample of the requests and the model's answers to this labelling project
    /// (`strix label serve` shows them with the answers as suggestions)
    #[arg(long, value_name = "PROJECT")]
    pub capture: Option<PathBuf>,
    /// Share of requests captured, 0..1
    #[arg(long, value_name = "R", default_value_t = 0.05, requires = "capture")]
    pub capture_rate: f64,
    #[command(flatten)]
    pub capture_limits: CaptureArgs,
    #[command(flatten)]
    pub monitor: MonitorLiveArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
#[command(after_help = STREAM_HELP)]
pub struct StreamArgs {
    /// Video files (anything FFmpeg reads), rtsp:// http(s):// rtmp:// udp:// URLs, V4L2
    /// cameras (/dev/video0) or folders of images; several share the model
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// A zoo name, registered model (NAME:VERSION, NAME@ALIAS), spec .toml or .onnx
    /// [default: the --task's default model, else nanodet_m_416]
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Task, to pick its default model
    #[arg(short, long, value_parser = task_parser())]
    pub task: Option<strix_core::Task>,
    /// Settings file (TOML): policy, queue, max_batch, classes, jpeg_quality, [tracker],
    /// [[lines]], [[zones]]; flags override it and add lines and zones
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// latest: drop stale frames, lowest lag (default for live sources and --realtime);
    /// all: every frame, however late (default for files and folders)
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<strix_stream::FramePolicy>,
    /// Frames waiting per source under policy `all` [default: 4]
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,
    /// Most frames per inference when sources share the model [default: 8]
    #[arg(long, value_name = "N")]
    pub max_batch: Option<usize>,
    /// Inferences in flight at once, sharing --threads [default: one per thread, each
    /// inference on one thread; a cascade runs one at a time on all of them]
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Track and count only these classes (comma-separated labels, e.g. person,car)
    #[arg(long, value_delimiter = ',', value_name = "LABELS")]
    pub classes: Vec<String>,
    /// A counting line NAME=X1,Y1,X2,Y2 in frame pixels (repeatable); crossing it from the
    /// left of X1,Y1->X2,Y2 to its right is `forward`
    #[arg(long = "line", value_name = "NAME=X1,Y1,X2,Y2")]
    pub lines: Vec<String>,
    /// A zone NAME=X1,Y1,X2,Y2,X3,Y3[,...] (a polygon in frame pixels; repeatable)
    #[arg(long = "zone", value_name = "NAME=X1,Y1,...")]
    pub zones: Vec<String>,
    /// Write events as JSON lines to FILE (`-`: stdout)
    #[arg(long, value_name = "FILE")]
    pub events: Option<String>,
    /// Also emit a `frame` event per frame with its detections and tracks
    #[arg(long)]
    pub frame_events: bool,
    /// POST each event as JSON to this URL
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// Publish each event to an MQTT topic with QoS 1: mqtt://[user:pass@]host[:port]/topic
    #[arg(long, value_name = "URL")]
    pub mqtt: Option<String>,
    /// Serve the live page and MJPEG streams on this address (e.g. 127.0.0.1:8090; port 0
    /// picks a free one)
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<String>,
    /// Require this token on the live page: open http://HOST:PORT/?token=TOKEN once (a cookie
    /// keeps it), or send `Authorization: Bearer TOKEN`. Set it whenever --http listens beyond
    /// loopback
    #[arg(long, env = "STRIX_HTTP_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub http_token: Option<String>,
    /// Host names the live page answers to besides loopback names and the address it listens
    /// on (repeatable; guards against DNS rebinding), e.g. --http-allow-host cam.example.org
    #[arg(long, value_name = "HOST")]
    pub http_allow_host: Vec<String>,
    /// Record the project stream (annotated frames) to a .mp4/.mkv/.mov/.avi file
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Overwrite an existing --record file
    #[arg(long)]
    pub force: bool,
    /// How often a model named by registry alias (NAME@ALIAS, or a bare registry NAME)
    /// checks whether it moved, in seconds; new frames go to the new version once it loads and
    /// answers a test image. 0: never
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub follow_interval: std::time::Duration,
    /// Stop each source after this many answered frames
    #[arg(long, value_name = "N")]
    pub max_frames: Option<u64>,
    /// Stop after this long (e.g. 30s, 10m)
    #[arg(long, value_name = "TIME", value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Play files at their own frame rate, as a camera delivers frames
    #[arg(long)]
    pub realtime: bool,
    /// Start files again at their end (demos, soak tests); stop with --duration or Ctrl-C
    #[arg(long = "loop")]
    pub loop_file: bool,
    /// Reconnect attempts when a network source drops (backoff 0.5 s doubling to 10 s)
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub reconnect: u32,
    /// Frame rate given to folders of images (their timestamps)
    #[arg(long, default_value_t = 10.0, value_name = "FPS")]
    pub folder_fps: f64,
    /// The ffmpeg program (ffprobe is looked for beside it)
    #[arg(long, env = "STRIX_FFMPEG", default_value = "ffmpeg", value_name = "PATH")]
    pub ffmpeg: PathBuf,
    /// Classes per classification answer
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Print the final summary as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Name tracks from this index of known faces or objects (`strix index`): each new
    /// track's box is embedded by the index's model and looked up; a match is an `identified`
    /// event and the name is drawn on the track
    #[arg(long, value_name = "NAME")]
    pub index: Option<String>,
    /// Cosine similarity a match needs [default: Similarity 80 of the face model for a face
    /// index, 0.8 for objects]
    #[arg(long, value_name = "COSINE", requires = "index")]
    pub index_threshold: Option<f32>,
    /// Frames between two looks at a track still unnamed
    #[arg(long, value_name = "N", default_value_t = 5, requires = "index")]
    pub index_every: u64,
    /// Looks at a track before it is left unnamed
    #[arg(long, value_name = "N", default_value_t = 5, requires = "index")]
    pub index_tries: u32,
    /// Add a sample of the frames and the model's answers to this labelling project
    #[arg(long, value_name = "PROJECT")]
    pub capture: Option<PathBuf>,
    /// Capture every Nth frame of each source
    #[arg(long, value_name = "N", default_value_t = 30, requires = "capture")]
    pub capture_every: u64,
    #[command(flatten)]
    pub capture_limits: CaptureArgs,
    #[command(flatten)]
    pub monitor: MonitorLiveArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Drift monitoring while serving (and streaming).
#[derive(Debug, Args)]
pub struct MonitorLiveArgs {
    /// Test the (first) model's answers for drift against its baseline: a rolling window of
    /// answers, tested every --monitor-every answers; GET /v1/models/NAME/monitor, gauges in
    /// /metrics, a section on the stream page, violations as events
    #[arg(long)]
    pub monitor: bool,
    /// A folder `strix monitor baseline` wrote for this model [default: the baseline of its
    /// validation images a registered version keeps]
    #[arg(long, value_name = "DIR", requires = "monitor")]
    pub baseline: Option<PathBuf>,
    /// Answers in the rolling window
    #[arg(long, value_name = "N", default_value_t = 500, requires = "monitor")]
    pub monitor_window: usize,
    /// Answers between two tests
    #[arg(long, value_name = "N", default_value_t = 100, requires = "monitor")]
    pub monitor_every: usize,
    /// Violations as JSON lines to this file (`-`: stdout)
    #[arg(long, value_name = "FILE", requires = "monitor")]
    pub monitor_events: Option<String>,
    /// Violations POSTed to this URL
    #[arg(long, value_name = "URL", requires = "monitor")]
    pub monitor_webhook: Option<String>,
    /// Violations published to mqtt://HOST[:PORT]/TOPIC (QoS 1)
    #[arg(long, value_name = "URL", requires = "monitor")]
    pub monitor_mqtt: Option<String>,
}

/// How a capture picks and how much it keeps (serve and stream).
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// random: keep what is sampled; uncertain: keep a sample with probability min(1, 2u),
    /// u the answer's uncertainty (1 - margin of the two best classes; boxes near 0.5)
    #[arg(long, value_name = "POLICY", default_value = "random", value_parser = ["random", "uncertain"])]
    pub capture_policy: String,
    /// Captured images the project may hold; later samples are dropped
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub capture_max_files: u64,
    /// Bytes of captured images the project may hold
    #[arg(long, value_name = "BYTES", default_value_t = 2 << 30)]
    pub capture_max_bytes: u64,
}

#[derive(Debug, Subcommand)]
pub enum LabelCommand {
    /// The labelling app in the browser: draw boxes or pick classes, accept a model's
    /// suggestions, walk images by the model's uncertainty, review
    Serve(LabelServeArgs),
    /// Write the labels in a layout `strix train` reads
    Export(LabelExportArgs),
    /// Bring labels in from a COCO, YOLO or class-folder dataset (creating the project if needed)
    Import(LabelImportArgs),
}

const LABEL_HELP: &str = "\
The first run creates the project (give --images, --task and --classes); later runs open it and
add images that appeared in the folder since. Labels live in PROJECT/labels.db (SQLite): every
save is atomic and versioned, and a save made on a version someone else has replaced is refused
(409) rather than lost.

Keys (detection): drag to draw, drag a box or its corner to move or resize, 1-9 the class of the
selected box and of new ones, Del deletes, click a dashed suggestion to accept it, a accepts all,
Ctrl+Z / Ctrl+Y undo / redo, wheel or + - 0 zoom, Alt+drag pans.
Keys (classification): 1-9 or a click sets the class, saves and goes on; a accepts the suggestion.
Both: s or Enter saves, -> / <- next / previous (saving first), v verifies (review mode).

JSON API (what the page uses): GET /api/project, GET /api/images, GET /api/images/ID,
GET /api/images/ID/file, PUT /api/images/ID/labels {\"version\":V,\"labels\":{...}},
GET /api/images/ID/history, GET /api/next?order=uncertain&filter=unlabelled.

Examples:
  strix label serve trash --images photos/ --task classify --classes compost,recycling,landfill
  strix label serve bins --images frames/ --task detect --classes bottle,can --model nanodet_m_416
  strix label serve trash --model trash@production      suggestions from a registered version
  strix label serve trash --http 0.0.0.0:8070 --http-token alice=$A --http-token bob=$B
                                                        for a team: the history says who saved
  strix label export bins --format coco --out bins-coco/
  strix train --data bins --task detect                 trains on the project's labels directly";

#[derive(Debug, Args)]
#[command(after_help = LABEL_HELP)]
pub struct LabelServeArgs {
    /// The project folder (created on the first run)
    #[arg(value_name = "PROJECT")]
    pub project: PathBuf,
    /// The folder of images to label (creating a project)
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// What to label (creating a project)
    #[arg(long, value_parser = ["classify", "detect"])]
    pub task: Option<String>,
    /// Class names, comma-separated, in key order 1-9 (creating a project)
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    pub classes: Vec<String>,
    /// A model whose answers are shown as suggestions: a zoo name, NAME@ALIAS / NAME:VERSION
    /// from the registry, a spec .toml or .onnx
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Address to listen on; beyond loopback (e.g. 0.0.0.0:8070) it needs --http-token
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8070")]
    pub http: String,
    /// Require this token on the page and every /api route: open http://HOST:PORT/?token=TOKEN
    /// once (a cookie keeps it), or send `Authorization: Bearer TOKEN`. NAME=TOKEN names who
    /// uses it, and the labels' history records NAME with each save (repeatable: one per person)
    #[arg(long, env = "STRIX_HTTP_TOKEN", value_name = "[NAME=]TOKEN", hide_env_values = true)]
    pub http_token: Vec<String>,
    /// Host names the app answers to besides loopback names and IP literals (repeatable;
    /// guards against DNS rebinding), e.g. --http-allow-host labels.example.org
    #[arg(long, value_name = "HOST")]
    pub http_allow_host: Vec<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct LabelExportArgs {
    #[arg(value_name = "PROJECT")]
    pub project: PathBuf,
    /// coco or yolo (detection), folder (classification), csv (both)
    #[arg(long, value_parser = ["coco", "yolo", "folder", "csv"])]
    pub format: String,
    /// A new (or empty) folder to write
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct LabelImportArgs {
    #[arg(value_name = "PROJECT")]
    pub project: PathBuf,
    /// coco or yolo (detection), folder (classification: DIR/<class>/<image>)
    #[arg(long, value_parser = ["coco", "yolo", "folder"])]
    pub format: String,
    /// The COCO JSON, or the YOLO labels folder (classes.txt in it or beside it)
    #[arg(long, value_name = "FILE_OR_DIR")]
    pub annotations: Option<PathBuf>,
    /// The images the annotations refer to (class folders for --format folder); a new
    /// project labels this folder. Only files inside it are read: a file name that is
    /// absolute, climbs out with `..`, or is a link leading outside is refused
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// YOLO: save every image of --images that has no label file as a negative (no objects),
    /// over any labels it has. Without it, such images are negatives only in a new project
    /// (YOLO's reading of a missing file) and are left as they are in an existing one, so an
    /// import of some images' labels never erases the others'
    #[arg(long)]
    pub replace: bool,
}

const STREAM_HELP: &str = "\
Pipeline: decode (FFmpeg) -> bounded queue -> preprocess -> inference -> tracking -> outputs.
Lag (arrival from the decoder to the answer) and dropped frames are counted and shown.

Events (one JSON object each; `source`, `frame`, `time_s` and `type`):
  appeared, left (with dwell_s), crossed (line, direction), entered / exited (zone),
  activity (moving / still), label (a classifier's top label changed), identified (with
  --index: a track's name in the index and its similarity), source_lost / source_reconnected,
  frame (with --frame-events: detections and tracks)

Live views with --http ADDR:
  /                  a page with every source's project stream, numbers and recent events
  /stream/project    MJPEG of the annotated frames (/stream/N/project for source N)
  /stream/device     MJPEG of the frames as they came (/stream/N/device)
  /stats             the numbers as JSON

Examples:
  strix stream street.mp4 --model nanodet_m_416 --classes person --events events.jsonl
  strix stream rtsp://cam.local/live --http 0.0.0.0:8090 --http-token $TOKEN --line door=0,400,1280,400
  strix stream /dev/video0 --task classify --model trash@production --mqtt mqtt://broker/bins
  strix stream walk.mp4 --record annotated.mp4 --backend ort --json
  strix stream rtsp://door.local/live --task faces --index staff --events door.jsonl";

const SERVE_HELP: &str = "\
Routes:
  GET  /ping, /health/live, /health/ready      liveness and readiness (SageMaker's /ping)
  GET  /v1/models                               models, backends, batching, queue depth, batch sizes
  POST /v1/models/NAME/predict                  an image -> the JSON `strix predict --json` prints
  POST /invocations                             SageMaker: the model in X-Amzn-SageMaker-Target-Model,
                                                else the first
  POST /  (X-Amz-Target: RekognitionService.DetectLabels | DetectText | DetectFaces)
                                                Rekognition's request and answer shapes
  POST /v1/models/NAME/reload                   check NAME's registry alias now; swap in a new version
  GET  /v1/models/NAME/monitor                  with --monitor: the drift window, the latest test of
                                                every feature, violations so far
  GET  /metrics                                 Prometheus: requests, latency, batch sizes, queue depth,
                                                reloads (swapped / refused / failed)
Open Inference Protocol (KServe v2; NVIDIA's tritonclient works unchanged):
  GET  /v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready
  POST /v2/models/NAME/infer                    raw tensors in and out (JSON or binary extension)
Every answer names the version that gave it: X-Strix-Model-Version and LabelModelVersion
(NAME:VERSION for registry models).
Bodies: raw bytes with Content-Type image/jpeg, image/png, image/webp..., or application/json
{\"Image\": {\"Bytes\": \"<base64>\"}}. Errors: {\"error\": {\"code\", \"message\"}} with a 4xx status
for bad input; 503 with Retry-After when a model's queue is full.

Examples:
  strix serve --model efficientnet_lite0 --model trash=trash@production --port 8080
  curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' localhost:8080/v1/models/trash/predict
  strix serve --config serve.toml --backend ort --api-key-file keys.txt
  strix models alias trash 4 production     (a serve following trash@production swaps within 10 s)";

#[derive(Debug, Args)]
#[command(after_help = EXPORT_HELP)]
pub struct ExportArgs {
    /// A run folder made by `strix train`
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Where to write model.onnx, model.toml and gate.json [default: RUN_DIR/export]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Model name written into the spec [default: the run folder's name]
    #[arg(long)]
    pub name: Option<String>,
    /// Validation images the gate runs through burn and each engine
    #[arg(long, default_value_t = 16)]
    pub gate_images: usize,
    /// Absolute part of the gate's tolerance: each logit may differ from burn's by
    /// TOLERANCE + RTOL x |burn's logit| (numpy's allclose rule)
    #[arg(long, default_value_t = strix_export::gate::ATOL)]
    pub tolerance: f32,
    /// Relative part of the gate's tolerance: f32 rounding grows with the size of the logits
    #[arg(long, default_value_t = strix_export::gate::RTOL)]
    pub rtol: f32,
    /// Engines the gate checks, comma-separated [default: every engine in this build]
    #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
    pub backends: Option<Vec<strix_runtime::Backend>>,
}

const EXPORT_HELP: &str = "\
The export gate: real validation images of the run go through the burn model and through the
exported file on tract and ONNX Runtime; the export is kept only if every engine's logits are
within 1e-4 + 1e-5 x |logit| of burn's (numpy's allclose rule: f32 rounding grows with the
logits) and no image's top-1 class changes. Both figures go into gate.json. `strix train`
runs this at the end of every run.

Examples:
  strix export runs/trash
  strix export runs/trash --out models/trash --name trash-sorter
  strix predict --model runs/trash/export/model.onnx photo.jpg";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    #[command(flatten)]
    pub run: RunEvalArgs,
}

#[derive(Debug, Args)]
pub struct RunEvalArgs {
    /// A run folder made by `strix train` (its best model is evaluated)
    #[arg(value_name = "RUN_DIR", required = true)]
    pub run_dir: Option<PathBuf>,
    /// Labelled images: class folders, a `path,label` CSV, or IDX files
    #[arg(long, value_name = "DIR", required = true)]
    pub data: Option<PathBuf>,
    /// For datasets that ship a train/test split (IDX, train/ + test/ folders): which part
    #[arg(long, value_enum, default_value_t = DataPart::Test)]
    pub part: DataPart,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Print the results as one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DataPart {
    Train,
    Test,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Class counts, image sizes, unreadable files, duplicates, near-empty classes, and a
    /// contact sheet of samples per class; for a detection dataset (COCO or YOLO) images and
    /// boxes per class, box sizes, negatives, label problems, and a sheet with the boxes drawn
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Class folders, a `path,label` CSV, a folder of IDX files, or a detection dataset
    /// (annotations/instances_train.json + images/train/, or data.yaml + images/ + labels/)
    pub data: PathBuf,
    #[arg(long, value_enum, default_value_t = DataPart::Train)]
    pub part: DataPart,
    /// Where to write the contact sheet
    #[arg(long, value_name = "PNG", default_value = "contact_sheet.png")]
    pub sheet: PathBuf,
    /// Samples per class on the contact sheet
    #[arg(long, default_value_t = 8)]
    pub per_class: usize,
    /// Also compare every image's embedding: near-duplicates (the same picture resized,
    /// recompressed, brightened, perhaps under two labels) and leaks, images of the data that
    /// are also in the validation (or test) images; pairs drawn in SHEET_near_duplicates.png
    #[arg(long)]
    pub near_duplicates: bool,
    /// The embedding model --near-duplicates compares with
    #[arg(long, value_name = "MODEL", default_value = strix_index::knn::DEFAULT_EMBEDDING)]
    pub embedding: String,
    /// Least cosine similarity of a near-duplicate pair. With efficientnet_lite0_embed on the
    /// fixture photos: brightness +-20%, mirror and JPEG q50 copies >= 0.89, half size and 80%
    /// crops 0.73-0.99 (median 0.94, 0.88), distinct photos <= 0.67
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub similarity: f32,
    /// Validation images to look for leaks in [default: the data's own test part, if any]
    #[arg(long, value_name = "DIR")]
    pub val_data: Option<PathBuf>,
    /// Print the findings as JSON
    #[arg(long)]
    pub json: bool,
}

const TRAIN_HELP: &str = "\
Every setting can come from CONFIG.toml (same names, snake_case) and from a flag; flags win.
The run folder (--run-dir, default runs/<model>-<time>) receives config.toml (resolved),
train.log, metrics.jsonl, last.ckpt (checkpoint, atomically replaced), best.bpk + model.json
(the best model), final.json (every figure), summary.json (the headline figures, typed: what
`models register` records and `models show` prints) and report.html with its plots.

Examples:
  strix train --data datasets/fashion-mnist --model small-cnn --epochs 3
  strix train trash.toml                       settings from a file
  strix train --data photos/ --model efficientnet-lite0 --pretrained efficientnet_lite0.safetensors \\
              --mode linear-probe --epochs 5 --lr 0.01
  strix train --resume runs/small-cnn-1763700000   continue a stopped run where it left off
  strix train --data photos/ --epochs 20 --register trash    train, export and register
  strix train --data photos/ --queue nats://10.0.0.5:4222 --register trash --wait
              on a worker (`strix worker`): the data goes to the registry's store, the run
              folder comes back, the export is registered
  strix train --task detect --data datasets/trash-boxes
              a detector (NanoDet-Plus style, 320x320, mAP every epoch) on COCO or YOLO boxes,
              its backbone from the zoo's ImageNet efficientnet_lite0 (fetched like any model)
  strix train --model knn --data photos/ --k 5 --register trash-knn
              a k-NN classifier in seconds: each image's efficientnet_lite0_embed vector, a
              vote of the 5 most similar labelled ones; knn.toml and neighbours.seg in the run
              folder, the export is one ONNX file (the vote inside) like any classifier's
  strix eval runs/small-cnn-1763700000 --data datasets/fashion-mnist";

/// `strix train` flags; each mirrors a field of the training config.
#[derive(Debug, Args, serde::Serialize)]
#[command(after_help = TRAIN_HELP)]
pub struct TrainArgs {
    /// A TOML file with the settings (flags override it)
    #[serde(skip)]
    #[arg(value_name = "CONFIG.toml", conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (other settings come from its config.toml)
    #[serde(skip)]
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Skip the ONNX export (and its gate) at the end of the run; `strix export RUN_DIR` does it later
    #[serde(skip)]
    #[arg(long)]
    pub no_export: bool,
    /// The run folder [default: runs/<model>-<unix time>]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    /// Register the run's export as the next version of NAME in the model registry
    #[serde(skip)]
    #[arg(long, value_name = "NAME", conflicts_with = "no_export")]
    pub register: Option<String>,
    /// Train on a worker: queue the run as a job on this NATS JetStream queue (the data is
    /// copied to the registry's store; `strix jobs logs ID --follow` shows its epochs)
    #[serde(skip)]
    #[arg(long, value_name = "URL", conflicts_with = "resume")]
    pub queue: Option<String>,
    /// The queue's other settings (TOML, as `strix worker --queue-config`); queues the run too
    #[serde(skip)]
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub queue_config: Option<PathBuf>,
    /// With --queue: follow the job's log until it ends, then fetch the run folder here
    #[serde(skip)]
    #[arg(long)]
    pub wait: bool,
    /// --model knn: how many of the most similar labelled images vote [default: 5]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// --model knn: the embedding model whose vectors are compared: a zoo name, a registered
    /// version, a spec file [default: efficientnet_lite0_embed]
    #[arg(long, value_name = "MODEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<String>,
    #[command(flatten)]
    #[serde(flatten)]
    pub settings: TrainSettings,
}

/// The training settings `strix train` and `strix tune` share; each mirrors a field of the
/// training config.
#[derive(Debug, Args, serde::Serialize)]
pub struct TrainSettings {
    /// What to train: classify (a label per image) or detect (boxes) [default: classify]
    #[arg(long, value_parser = PossibleValuesParser::new(TRAIN_TASKS))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Training images: class folders, a `path,label` CSV, or a folder of IDX files; for
    /// --task detect a COCO (annotations/instances_train.json, images/train/) or YOLO
    /// (data.yaml, images/, labels/) dataset folder
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    /// Validation images [default: hold out --val-fraction of --data, stratified]
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_data: Option<PathBuf>,
    /// Test images, evaluated once at the end [default: the data's own test part, if any]
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_data: Option<PathBuf>,
    /// The class list in order, comma-separated [default: from the data]
    #[arg(long, value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Share of --data held out for validation [default: 0.1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
    /// Train on a stratified sample of at most this many images
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_images: Option<usize>,
    /// The network to train, or knn: a k-NN classifier over an embedding model's vectors of the
    /// labelled images, built in seconds (--k, --embedding) [default: small-cnn]
    #[arg(long, value_parser = PossibleValuesParser::new(TRAIN_MODELS))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Pretrained weights: safetensors with PyTorch parameter names, or an inference ONNX of
    /// efficientnet-lite0 (batch norm folded; its statistics are measured on the training
    /// images) [default for --task detect: the zoo's efficientnet_lite0]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// What learns: linear-probe (the head), fine-tune (everything, from --pretrained) or
    /// scratch [default: fine-tune with --pretrained, else scratch]
    #[arg(long, value_parser = PossibleValuesParser::new(MODES))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Input side in pixels [default: 28 for small-cnn, 224 otherwise]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// 1 (greyscale) or 3 [default: 1 for small-cnn on IDX data, else 3]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// sgd (with momentum) or adamw [default: adamw]
    #[arg(long, value_parser = PossibleValuesParser::new(OPTIMIZERS))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<String>,
    /// Peak learning rate [default: 0.001]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// SGD momentum [default: 0.9]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// Weight decay (decoupled for AdamW, L2 for SGD) [default: 0.0001]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule after the warmup [default: cosine]
    #[arg(long, value_parser = PossibleValuesParser::new(SCHEDULES))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Linear warmup length in epochs (fractions allowed) [default: 0]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_epochs: Option<f64>,
    /// Step schedule: epochs between decays [default: 10]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_epochs: Option<usize>,
    /// Step schedule: factor per decay [default: 0.1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_gamma: Option<f64>,
    /// Label smoothing of the cross-entropy loss [default: 0]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f32>,
    /// [default: 10]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// [default: 64]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Stop after this many epochs without improvement of --monitor
    #[arg(long, value_name = "EPOCHS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<usize>,
    /// What "best" and early stopping look at [default: val-accuracy]
    #[arg(long, value_parser = PossibleValuesParser::new(MONITORS))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
    /// Seed of the initialisation, shuffling and augmentation [default: 42]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// CPU threads [default: all cores]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Where training runs (GPU backends need a build with that feature) [default: cpu]
    #[arg(long, value_parser = PossibleValuesParser::new(DEVICES))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Random resized crop down to this share of the image area; 1 turns it off [default: 0.35]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop_scale_min: Option<f32>,
    /// Random left-right flips (false for digits and text) [default: true]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hflip: Option<bool>,
    /// Brightness/contrast/saturation jitter [default: 0.2]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color_jitter: Option<f32>,
    /// Evaluation centre crop, share of the shorter side [default: 0.875]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_crop: Option<f32>,
    /// Batches decoded ahead [default: 4]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<usize>,
    /// Evaluate the test images at the end [default: true]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<bool>,
    /// Also checkpoint inside an epoch every this many minutes [default: 5]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_minutes: Option<f64>,
    /// Detection: highest distance bin of the box regression [default: 7]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reg_max: Option<usize>,
    /// Detection augmentation: random scale range relative to the letterboxed fit, as LOW,HIGH [default: 0.6,1.4]
    #[arg(long, value_delimiter = ',', value_name = "LOW,HIGH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub box_scale: Option<Vec<f32>>,
    /// Detection augmentation: largest shift, share of the input size [default: 0.1]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translate: Option<f32>,
    /// Detection: images meet the input by letterbox (aspect kept, grey padding) or stretch,
    /// in training, evaluation and the export alike [default: letterbox]
    #[arg(long, value_parser = PossibleValuesParser::new(RESIZE_MODES))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resize: Option<String>,
}

const TUNE_HELP: &str = "\
Each trial is a `strix train` run with the settings given here (flags or CONFIG.toml, as for
`strix train`) and the trial's parameters written over them. Trials run --parallel at a time in
this process, the threads shared among them. After every epoch a trial reports its objective;
--early-stopping asha (rungs at epochs 1, 3, 9, ...; the best third goes on) or median stops the
unpromising ones, so give the trials enough --epochs for the good ones to finish.

The space is a TOML table of training settings (the same names as `strix train`'s):
  [lr]
  type = \"float\"            # float | int | categorical
  low = 1e-4
  high = 1e-1
  log = true                # sampled log-uniformly
  [batch_size]
  type = \"categorical\"
  choices = [32, 64, 128]
Default space: lr and weight_decay (log-uniform), batch_size, the augmentation switches
(classify: hflip, color_jitter, crop_scale_min, label_smoothing; detect: hflip, translate).

The tuning folder (--out, default runs/tune-<time>) receives tuning.json (settings, every trial,
resumable: `strix tune --resume DIR`), report.html (objective per trial and best so far, each
parameter against the objective, stopped trials marked) and one run folder per trial. The best
trial's run is exported; --register NAME registers it with its parameters and the tuning job's
id in its lineage.

Examples:
  strix tune --data digits/ --trials 12 --parallel 2 --epochs 6
  strix tune --task detect --data boxes/ --trials 20 --objective map --space space.toml
  strix tune --data photos/ --trials 30 --strategy random --early-stopping off --register trash
  strix tune --data photos/ --trials 40 --parallel 8 --queue nats://10.0.0.5:4222
              each trial a training job for the workers (`strix worker`); stopped trials'
              jobs are cancelled
  strix tune --resume runs/tune-1765000000      continue a stopped tuning job";

/// `strix tune`: the training settings as for `strix train`, and how to search them.
#[derive(Debug, Args)]
#[command(after_help = TUNE_HELP)]
pub struct TuneArgs {
    /// A TOML file with the training settings every trial starts from (flags override it)
    #[arg(value_name = "CONFIG.toml", conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Continue the tuning job in this folder (its settings come from its tuning.json)
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Trials in all (stopped and failed ones count)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub trials: u64,
    /// Trials trained at the same time (the threads are split among them)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub parallel: u64,
    /// The epoch metric to optimise: val_accuracy, val_loss, val_top5 (classify); map, map50
    /// (detect) [default: val_accuracy, for detect map]
    #[arg(long, value_name = "METRIC")]
    pub objective: Option<String>,
    /// Whether the objective is maximised or minimised [default: minimise losses, else maximise]
    #[arg(long, value_parser = PossibleValuesParser::new(["maximize", "minimize"]))]
    pub direction: Option<String>,
    /// The search space (TOML) [default: per task, see below]
    #[arg(long, value_name = "SPACE.toml")]
    pub space: Option<PathBuf>,
    /// How trials are chosen: tpe (Optuna's TPESampler defaults), random, or grid (3 values per
    /// numeric parameter)
    #[arg(long, default_value = "tpe", value_parser = PossibleValuesParser::new(["tpe", "random", "grid"]))]
    pub strategy: String,
    /// Stopping unpromising trials after an epoch: asha (asynchronous successive halving),
    /// median, or off
    #[arg(long, default_value = "asha", value_parser = PossibleValuesParser::new(["asha", "median", "off"]))]
    pub early_stopping: String,
    /// Seed of the sampler (the trials keep the training --seed)
    #[arg(long, default_value_t = 0)]
    pub study_seed: u64,
    /// The tuning folder [default: runs/tune-<unix time>]
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Register the best trial's run as the next version of NAME in the model registry
    #[arg(long, value_name = "NAME")]
    pub register: Option<String>,
    /// Train the trials on workers: each a training job on this NATS JetStream queue (the data
    /// is copied once to the registry's store), --parallel of them queued at a time
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// The queue's other settings (TOML, as `strix worker --queue-config`); queues the trials too
    #[arg(long, value_name = "FILE")]
    pub queue_config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: TrainSettings,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// COCO box AP/AR of detections, the same numbers as pycocotools
    Detect(CocoEvalArgs),
    /// COCO keypoint AP/AR (object keypoint similarity), the same numbers as pycocotools
    Pose(CocoEvalArgs),
    /// Top-1/top-5 accuracy, per-class precision/recall/F1, confusion matrix
    Classify(ClassifyEvalArgs),
    /// Per-class IoU, mean IoU and pixel accuracy of label masks
    Segment(SegmentEvalArgs),
}

#[derive(Debug, Args)]
pub struct CocoEvalArgs {
    /// COCO ground truth (instances or person_keypoints JSON)
    #[arg(long, value_name = "GT.json")]
    pub gt: PathBuf,
    /// A COCO results file (`[{"image_id", "category_id", "bbox" | "keypoints", "score"}]`)
    #[arg(long, value_name = "RESULTS.json", conflicts_with = "model")]
    pub predictions: Option<PathBuf>,
    /// Or: run this model over the ground truth's images (classes matched by name)
    #[arg(long, requires = "images")]
    pub model: Option<String>,
    /// Folder holding the ground truth's images (by their file_name)
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// With --model: also write its answers as a COCO results file
    #[arg(long, value_name = "RESULTS.json", requires = "model")]
    pub save_predictions: Option<PathBuf>,
    /// With --model: keep detections scoring above this instead of the model's own threshold
    /// (COCO mAP counts the low-confidence tail: 0.05 is what `strix train` evaluates with)
    #[arg(long, value_name = "SCORE", requires = "model")]
    pub score_threshold: Option<f32>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ClassifyEvalArgs {
    /// Labelled images: one sub-folder per class, named as the model's labels (with --model)
    #[arg(long, value_name = "DIR", requires = "model")]
    pub data: Option<PathBuf>,
    /// The model to evaluate on --data
    #[arg(long)]
    pub model: Option<String>,
    /// Or: a CSV of `image,label` lines...
    #[arg(long, value_name = "LABELS.csv", requires = "predictions", conflicts_with_all = ["data", "model"])]
    pub gt: Option<PathBuf>,
    /// ...and the JSON lines of `strix predict --json` for the same images
    #[arg(long, value_name = "PREDICTIONS.jsonl")]
    pub predictions: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SegmentEvalArgs {
    /// Folder of ground-truth label PNGs (pixel value = class index)
    #[arg(long, value_name = "DIR")]
    pub gt: PathBuf,
    /// Folder of predicted masks with the same names (`strix predict --save-masks` writes them)
    #[arg(long, value_name = "DIR")]
    pub predictions: PathBuf,
    /// Number of classes (labels 0..N-1)
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub classes: u16,
    /// A ground-truth label to leave out (e.g. 255 for "void" borders)
    #[arg(long)]
    pub ignore: Option<u8>,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the models of the zoo and whether their files are here
    List {
        /// JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show a model's spec, where its files are, and (with --io) its ONNX inputs and outputs
    Show {
        /// A zoo name, a spec .toml, or an .onnx with its spec beside it
        model: String,
        /// Output format
        #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
        format: ShowFormat,
        /// Shorthand for --format toml
        #[arg(long, conflicts_with = "format")]
        toml: bool,
        /// Shorthand for --format json
        #[arg(long, conflicts_with_all = ["format", "toml"])]
        json: bool,
        /// Load the model and list its ONNX inputs and outputs
        #[arg(long)]
        io: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Download models into the cache (checked against their sha256)
    Fetch {
        /// Zoo names or spec files
        #[arg(required = true)]
        models: Vec<String>,
    },
    /// Check an ONNX file against a spec (load it, run one image) and add it to your models,
    /// so that `--model NAME` finds it
    #[command(after_help = "The spec describes task, input, preprocessing, labels and decoder; \
see docs/model-spec.md for one example per decoder, or start from \
`strix models show nanodet_m_416 --toml`. Use `strix models inspect FILE.onnx` to see the \
input and output names and shapes the spec must match. Models are stored under \
$STRIX_HOME/models (default: the user data folder + /strix).")]
    Import {
        /// The ONNX file (it becomes the spec's weights)
        onnx: PathBuf,
        /// The model spec (TOML)
        #[arg(long, value_name = "SPEC.toml")]
        spec: PathBuf,
        /// Import under this name instead of the spec's
        #[arg(long)]
        name: Option<String>,
        /// Replace an imported model of the same name
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Print an ONNX file's inputs, outputs, opset and operators, to help write its spec
    Inspect {
        onnx: PathBuf,
        /// JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Register a trained run (its checked ONNX export) or an ONNX file with its spec as the
    /// next version of NAME in the model registry, with its lineage
    #[command(after_help = REGISTER_HELP)]
    Register {
        /// A run folder made by `strix train` (after `strix export`), or an .onnx file
        #[arg(value_name = "RUN_DIR|FILE.onnx")]
        source: PathBuf,
        /// The registered model's name; versions are numbered 1, 2, 3... per name
        #[arg(long)]
        name: String,
        /// Spec of an .onnx file [default: FILE.toml beside it]
        #[arg(long, value_name = "SPEC.toml")]
        spec: Option<PathBuf>,
        /// Point this alias at the new version too (repeatable), e.g. --alias staging
        #[arg(long = "alias", value_name = "ALIAS")]
        aliases: Vec<String>,
        /// Print the new version's record as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Quantise a model to int8 (static, QDQ, per-channel weights) with calibration images,
    /// check it against the float model on held-out images, and register it as a new version
    #[command(after_help = OPTIMIZE_HELP)]
    Optimize(OptimizeArgs),
    /// Point an alias of a registered model at a version: `strix models alias trash 3 production`
    Alias { name: String, version: u64, alias: String },
    /// Remove an alias of a registered model
    Unalias { name: String, alias: String },
    /// Delete a registered version (NAME:VERSION or NAME@ALIAS), or every version with --all;
    /// version numbers are never reused, files are freed by `gc`
    Delete {
        #[arg(value_name = "NAME:VERSION|NAME@ALIAS|NAME")]
        model: String,
        /// Delete every version of NAME
        #[arg(long)]
        all: bool,
    },
    /// Download a registered version's files (checked by sha256) into a folder
    Download {
        #[arg(value_name = "NAME[:VERSION|@ALIAS]")]
        model: String,
        /// Target folder [default: ./NAME-vVERSION]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Check that every registered version's files are in the store with their recorded sizes
    Verify,
    /// Remove registry files no version refers to (left by deletes or interrupted registrations)
    Gc {
        /// Keep unreferenced files younger than this: a registration may still be uploading
        #[arg(long, default_value_t = 60.0, value_name = "MINUTES")]
        grace_minutes: f64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct OptimizeArgs {
    /// The float model: a zoo name, NAME@ALIAS, NAME:VERSION, a spec .toml or an .onnx with its spec
    pub model: String,
    /// Quantise to int8 (the optimisation there is today; required so scripts say what they ask for)
    #[arg(long, required = true)]
    pub int8: bool,
    /// Images the activation ranges are learned from: what the model will see in production
    #[arg(long, value_name = "DIR")]
    pub calibration: PathBuf,
    /// Images the int8 model is checked on against the float one: at least 20, none of them a
    /// calibration image (not the same folder, file or bytes) [default: every 4th image of
    /// --calibration, left out of the calibration, which then needs at least 80]
    #[arg(long, value_name = "DIR")]
    pub holdout: Option<PathBuf>,
    /// Register the int8 model as the next version of NAME
    #[arg(long)]
    pub name: String,
    /// How activation ranges are taken: percentile (rare outliers do not stretch the scale) or
    /// minmax
    #[arg(long, value_enum, default_value_t = CalibrationMethod::Percentile)]
    pub calibrate: CalibrationMethod,
    /// Share of values --calibrate percentile keeps, in percent
    #[arg(long, default_value_t = 99.999, value_name = "PERCENT")]
    pub percentile: f64,
    /// Refuse the int8 model when it agrees with the float one on fewer held-out images than
    /// this, in percent (classifiers: the same top-1 class; detectors: the same boxes)
    #[arg(long, default_value_t = 97.0, value_name = "PERCENT")]
    pub min_agreement: f64,
    /// Point this alias at the new version too (repeatable)
    #[arg(long = "alias", value_name = "ALIAS")]
    pub aliases: Vec<String>,
    /// Print the new version's record as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CalibrationMethod {
    Percentile,
    Minmax,
}

const OPTIMIZE_HELP: &str = "\
Static post-training quantisation, as SageMaker Neo or ONNX Runtime's quantiser do it: the float
model runs over the calibration images and every activation's range is recorded; the graph is
rewritten in QDQ form (uint8 activations, int8 convolution weights with one scale per output
channel, int32 biases), which ONNX Runtime runs with integer kernels and tract runs as written.

The gate: on the held-out images the int8 model must agree with the float one (classifiers: the
same top-1 class; detectors: the same boxes, same class and IoU >= 0.5) on at least
--min-agreement percent, or nothing is registered and the figures say why. Both models' speed
is measured on the same images and reported.

The new version's lineage holds the parent version and its sha256, the calibration and held-out
sets' digests, the settings and the gate's figures (also in quantization.json).

Example: strix models optimize efficientnet_lite0 --int8 --calibration camera-frames/ --name trash-int8";

const REGISTER_HELP: &str = "\
Each version records its files by sha256 (ONNX, spec, and for runs the config, metrics, dataset
manifest, export-gate report and HTML report) and its lineage: metrics, dataset digest, training
config, parent weights, strix version, who and when. Files are uploaded first, then one database
transaction makes the version visible: an interrupted registration leaves no half version.

Where: a folder and an SQLite file under STRIX_HOME by default; a team shares one with
  --registry-store s3://BUCKET/PREFIX --registry-db postgres://USER@HOST/DB
(or STRIX_REGISTRY_STORE / STRIX_REGISTRY_DB; S3 credentials from AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL).

Examples:
  strix models register runs/trash --name trash --alias staging
  strix models register detector.onnx --spec detector.toml --name detector
  strix models alias trash 3 production
  strix predict --model trash@production photo.jpg
  strix models show trash            every version with its metrics and lineage
  strix models download trash:3 --out deploy/";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Text,
    Toml,
    Json,
}

/// Where the job queue is.
#[derive(Debug, Args, Clone)]
pub struct QueueArgs {
    /// The queue: nats://HOST:4222 (several, comma-separated, for a cluster); also
    /// STRIX_QUEUE or `queue` in the settings file
    #[arg(long, env = "STRIX_QUEUE", value_name = "URL")]
    pub queue: Option<String>,
    /// The queue's other settings (TOML: stream, subject, state_bucket, log_stream, consumer,
    /// replicas, ack_wait_ms, max_deliver, max_message_bytes, connect_timeout_ms)
    #[arg(long, value_name = "FILE")]
    pub queue_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = WORKER_HELP)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub queue: QueueArgs,
    /// This worker's name in job states and logs [default: user@host]
    #[arg(long)]
    pub name: Option<String>,
    /// Tasks run at once, each on its share of --threads
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub jobs: u64,
    /// Stop after this many tasks (a one-shot worker)
    #[arg(long, value_name = "N")]
    pub max_tasks: Option<u64>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

const WORKER_HELP: &str = "\
A worker takes one task at a time per --jobs slot from the queue's durable consumer, keeps it
alive with progress acks while it runs, and acks it only once its output is written and
recorded. A worker killed mid-task never acks: the queue hands the task to another worker after
the ack wait (ack_wait_ms, 30 s by default). Ctrl-C / SIGTERM hands running tasks back at once
(a nak), so another worker takes them without waiting. A task that fails max_deliver times (3)
is given up, its error kept in `strix jobs show`.

Workers on any number of machines share one queue; each must reach the batch's input and
output (a shared folder or a bucket) and resolve its model (the zoo, or a shared registry).
A training run (`strix train --queue`, `strix tune --queue`) needs the submitter's registry:
its data and run folder go through the registry's store. A handed-back or killed run continues
from its last checkpoint there, on whichever worker takes it next.

Examples:
  nats-server -js &                              NATS with JetStream on 127.0.0.1:4222
  strix worker --queue nats://127.0.0.1:4222     one worker (Ctrl-C stops it)
  strix worker --jobs 2 --threads 2              two tasks at once, one thread each (STRIX_QUEUE)
  strix batch photos/ --model efficientnet_lite0 --out answers/ --queue nats://127.0.0.1:4222 --wait";

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job the queue knows, oldest first
    List {
        #[command(flatten)]
        queue: QueueArgs,
        #[arg(long)]
        json: bool,
    },
    /// A job and each of its tasks: status, attempts, worker, progress, errors
    Show {
        id: String,
        #[command(flatten)]
        queue: QueueArgs,
        #[arg(long)]
        json: bool,
    },
    /// A job's log lines; --follow until it ends
    Logs {
        id: String,
        #[command(flatten)]
        queue: QueueArgs,
        #[arg(short, long)]
        follow: bool,
    },
    /// Wait for a job to end, with a progress bar; exits non-zero unless it succeeded
    Wait {
        id: String,
        #[command(flatten)]
        queue: QueueArgs,
    },
    /// Stop a job: no task starts after this; running ones stop at their next check
    Cancel {
        id: String,
        #[command(flatten)]
        queue: QueueArgs,
    },
}

#[derive(Debug, Args)]
#[command(after_help = BATCH_HELP)]
pub struct BatchArgs {
    /// A folder, or s3:// gs:// az:// file:// prefix, of images
    pub input: String,
    /// The model: a zoo name, NAME:VERSION / NAME@ALIAS, or a spec file; pinned to the version
    /// and SHA-256 it resolves to now
    #[arg(long)]
    pub model: String,
    /// Where the shards (part-00000.jsonl, ...) and _manifest.json go
    #[arg(long, value_name = "FOLDER|URL")]
    pub out: String,
    /// Images per shard (one task on the queue, one output file)
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub shard_size: u64,
    /// Classes kept per image (classifiers)
    #[arg(short = 'k', long, default_value_t = 5, value_name = "K")]
    pub top_k: usize,
    /// Refuse images with more pixels than this (checked from the header, before decoding)
    #[arg(long, default_value_t = strix_vision::DecodeLimits::DEFAULT_MAX_PIXELS, value_name = "PIXELS")]
    pub max_pixels: u64,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Run here, whatever queue --queue, STRIX_QUEUE or the settings file names
    #[arg(long, conflicts_with = "wait")]
    pub here: bool,
    /// With a queue: wait for the job with a progress bar; exit non-zero if it failed
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

const BATCH_HELP: &str = "\
The images under INPUT (by extension, as `strix predict` picks them) are listed once, sorted,
and cut into shards of --shard-size. Shard N writes OUTPUT/part-0000N.jsonl: one line per image,
exactly what `strix predict --json` prints for it (its answer, or an Error naming the problem).
A shard file is written whole or not at all, so a shard run twice (a worker died) replaces its
own output: every image appears exactly once. Running the same command again skips the shards
already complete. OUTPUT/_manifest.json lists inputs, outputs, failures with their reasons, the
model (pinned at submission: NAME:VERSION and SHA-256) and timings.

Without a queue (--queue, STRIX_QUEUE or `queue` in the settings file; --here overrides them)
the shards run here. With one they become one job of tasks for `strix worker`s, the job id
printed on stdout; folders are made absolute, since every worker must reach them by the same
path. A rerun with another model or other options runs every shard again.
Exit status: 0 when every image was answered, 1 otherwise.

Examples:
  strix batch photos/ --model efficientnet_lite0 --out answers/
  strix batch photos/ --model trash@production --out answers/ --queue nats://127.0.0.1:4222 --wait
  strix batch s3://bucket/photos --model trash:3 --out s3://bucket/answers --queue nats://10.0.0.5:4222
  strix jobs wait JOB_ID                         follow a queued batch to its end";

/// A number of seconds, 0 or more (fractions allowed).
fn parse_seconds(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| std::time::Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| "must be a number of seconds >= 0".to_string())
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use strix_train::config::{DeviceChoice, Mode, Monitor, OptimizerKind, Schedule};

    fn all_parse<T: DeserializeOwned>(names: &[&str]) {
        for name in names {
            toml::Value::String(name.to_string())
                .try_into::<T>()
                .unwrap_or_else(|e| panic!("{name} is not a {}: {e}", std::any::type_name::<T>()));
        }
    }

    #[test]
    fn follow_intervals_are_seconds_zero_or_more() {
        assert_eq!(super::parse_seconds("2.5"), Ok(std::time::Duration::from_millis(2500)));
        assert_eq!(super::parse_seconds("0"), Ok(std::time::Duration::ZERO));
        for bad in ["-1", "NaN", "inf", "ten"] {
            assert!(super::parse_seconds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_choices_offered_are_the_ones_strix_train_takes() {
        // Every --model but the last is a network; knn is built without one.
        let (archs, knn) = super::TRAIN_MODELS.split_at(super::TRAIN_MODELS.len() - 1);
        all_parse::<strix_train::Arch>(archs);
        assert_eq!(knn, ["knn"]);
        all_parse::<Mode>(&super::MODES);
        all_parse::<OptimizerKind>(&super::OPTIMIZERS);
        all_parse::<Schedule>(&super::SCHEDULES);
        all_parse::<Monitor>(&super::MONITORS);
        all_parse::<DeviceChoice>(&super::DEVICES);
        all_parse::<strix_train::config::ResizeMode>(&super::RESIZE_MODES);
        all_parse::<strix_core::Task>(&super::TRAIN_TASKS);
        assert_eq!(archs.len(), strix_train::Arch::ALL.len());
    }
}
