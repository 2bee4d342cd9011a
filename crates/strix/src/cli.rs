//! Command-line flags. Logic lives in the library crates; this file only describes the CLI.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use strix_runtime::Backend;

#[cfg(feature = "full")]
mod commands;
#[cfg(feature = "full")]
pub use commands::*;

const ABOUT: &str = "Computer vision in one binary: pretrained models by name, your own ONNX models, \
                     predictions on images from the command line.";

/// The first lines of both builds' `--help`: predict's examples.
macro_rules! predict_examples {
    () => {
        "\
Examples:
  strix predict photo.jpg                       classify with the default model (efficientnet_lite0)
  strix predict photos/ --json > labels.jsonl   every image under a folder, one JSON line each
  strix predict --task detect street.jpg --save-annotated out/
                                                objects with boxes, drawn into out/street.jpg
  strix predict --task text scan.png            read the text lines of a page
  strix predict a.jpg --backend ort --top-k 3   ONNX Runtime backend (needs ORT_DYLIB_PATH)
  strix predict a.jpg --model my_model.toml     your own ONNX model, described by a spec file
"
    };
}

/// The last paragraph of both builds' `--help`.
macro_rules! model_files_help {
    () => {
        "Where model files come from, in order: the spec's own folder, the cache (STRIX_CACHE_DIR),
the model search path (STRIX_MODEL_PATH), then a download from the hub (STRIX_HUB_URL),
checked against the spec's sha256. --offline never downloads."
    };
}

#[cfg(feature = "full")]
const AFTER_HELP: &str = concat!(
    predict_examples!(),
    "  strix models list                             what the zoo and the registry have
  strix models register runs/trash --name trash a trained run as version 1, 2, ... of `trash`
  strix predict --model trash@production a.jpg  a registered version, by alias or as trash:3
  strix models show efficientnet_lite0 --toml   a full spec, to start your own from
  strix eval detect --gt instances.json --model nanodet_m_416 --images val2017/
                                                COCO AP/AR, the same numbers as pycocotools
  strix data inspect photos/                    class counts, broken files, duplicates, samples
  strix label serve trash --images photos/ --task classify --classes compost,recycling,landfill
                                                label them in the browser (see strix label serve --help)
  strix train --data photos/ --epochs 5         train a classifier (see strix train --help)
  strix eval runs/small-cnn-1763700000 --data test/
                                                a trained run on held-out images
  strix batch photos/ --model trash@production --out answers/
                                                every image of a folder or s3:// prefix into
                                                JSON Lines shards and a manifest
  strix worker --queue nats://127.0.0.1:4222    run batch shards from a NATS JetStream queue
                                                (strix batch ... --queue URL --wait submits them)

",
    model_files_help!()
);

/// The demo build (`./scripts/demo`: no cargo feature `full`) has `predict` alone.
#[cfg(not(feature = "full"))]
const AFTER_HELP: &str = concat!(
    predict_examples!(),
    "
This is the demo build: `strix predict` alone, built quickly by ./scripts/demo. Training,
labelling, the registry, serve, stream, batch and the rest come with the whole build:
  cargo build --release -p strix     (or: cargo install --path crates/strix)

",
    model_files_help!()
);

/// The whole build's commands besides predict, by name: the demo build says which of them it
/// lacks, rather than calling them unknown (a test of the whole build checks the list).
#[cfg(any(test, not(feature = "full")))]
pub const FULL_COMMANDS: [&str; 16] = [
    "models", "eval", "train", "tune", "data", "export", "serve", "stream", "label", "batch", "worker", "jobs",
    "index", "cluster", "monitor", "pipeline",
];

#[derive(Debug, Parser)]
#[command(name = "strix", version = version(), about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

fn version() -> &'static str {
    // The demo build says so, so nobody takes it for the whole binary.
    match (cfg!(feature = "ort"), cfg!(feature = "full")) {
        (true, true) => concat!(env!("CARGO_PKG_VERSION"), " (backends: tract, ort)"),
        (false, true) => concat!(env!("CARGO_PKG_VERSION"), " (backends: tract)"),
        (true, false) => concat!(env!("CARGO_PKG_VERSION"), " (backends: tract, ort; demo build: predict only)"),
        (false, false) => concat!(env!("CARGO_PKG_VERSION"), " (backends: tract; demo build: predict only)"),
    }
}

#[derive(Debug, Args)]
pub struct Global {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars and no summary, only results and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Never download model files; use the cache and the search path only
    #[arg(long, global = true, env = "STRIX_OFFLINE", value_parser = clap::builder::FalseyValueParser::new())]
    pub offline: bool,
    /// Base URL of the model hub that serves zoo files by their relative path
    #[arg(long, global = true, env = "STRIX_HUB_URL", value_name = "URL")]
    pub hub: Option<String>,
    /// Folder for downloaded model files [default: the user cache folder + /strix]
    #[arg(long, global = true, env = "STRIX_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Folders holding model files by relative path, separated by ':'
    #[arg(long, global = true, env = "STRIX_MODEL_PATH", value_name = "DIRS")]
    pub model_path: Option<String>,
    /// Where the model registry keeps files: a folder, file:///PATH or s3://BUCKET/PREFIX (S3
    /// credentials, region and endpoint from AWS_*) [default: STRIX_HOME/registry]
    #[arg(long, global = true, env = "STRIX_REGISTRY_STORE", value_name = "URL", hide = cfg!(not(feature = "full")))]
    pub registry_store: Option<String>,
    /// The registry's metadata database: sqlite://PATH or postgres://USER@HOST/DB
    /// [default: registry.db in a local store folder, else STRIX_HOME/registry/registry.db]
    #[arg(long, global = true, env = "STRIX_REGISTRY_DB", value_name = "URL", hide = cfg!(not(feature = "full")))]
    pub registry_db: Option<String>,
    /// Strix's data folder: imported models, the default registry, settings.toml
    /// [default: the user data folder + /strix]
    #[arg(long, global = true, env = "STRIX_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Settings file (TOML: home, cache_dir, model_path, hub, offline, registry_store,
    /// registry_db, ort_library, queue); flags and STRIX_* variables override it
    /// [default: HOME/settings.toml when it exists]
    #[arg(long, global = true, env = "STRIX_SETTINGS", value_name = "FILE")]
    pub settings: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a model on images and print what it sees
    Predict(PredictArgs),
    /// Any other command, which the demo build does not have: refused with what to build.
    #[cfg(not(feature = "full"))]
    #[command(external_subcommand)]
    NotInDemo(Vec<String>),
    /// The model zoo, your imported models and the model registry (versions, aliases, lineage)
    #[cfg(feature = "full")]
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Measure a model against ground truth: COCO AP/AR (as pycocotools), accuracy, IoU;
    /// or a trained run on a test set (`strix eval RUN_DIR --data DIR`)
    #[cfg(feature = "full")]
    Eval(EvalArgs),
    /// Train a classifier on your labelled images (transfer learning or from scratch)
    #[cfg(feature = "full")]
    Train(Box<TrainArgs>),
    /// Search training settings (learning rate, batch size, augmentation, ...) over many
    /// trials: TPE, random or grid; unpromising trials stopped early; the best one exported
    #[cfg(feature = "full")]
    Tune(Box<TuneArgs>),
    /// Look at a dataset before training on it
    #[cfg(feature = "full")]
    #[command(subcommand)]
    Data(DataCommand),
    /// Export a trained run's best model to ONNX, checked against burn by every ONNX engine
    #[cfg(feature = "full")]
    Export(ExportArgs),
    /// Serve models over HTTP: SageMaker / Rekognition-style routes, dynamic batching
    #[cfg(feature = "full")]
    Serve(Box<ServeArgs>),
    /// Run a video file, RTSP/HTTP stream, camera or image folder through a model: tracking,
    /// events (JSON lines, webhook, MQTT), live MJPEG views in the browser, recording
    #[cfg(feature = "full")]
    Stream(Box<StreamArgs>),
    /// Label images in the browser (model-assisted), export and import labels
    #[cfg(feature = "full")]
    #[command(subcommand)]
    Label(LabelCommand),
    /// Batch transform: every image under a folder or bucket prefix through a model, into
    /// JSON Lines shards and a manifest; here, or spread over workers with --queue
    #[cfg(feature = "full")]
    Batch(Box<BatchArgs>),
    /// Take tasks from the job queue (NATS JetStream) and run them (batch transform shards,
    /// training runs and tuning trials)
    #[cfg(feature = "full")]
    Worker(Box<WorkerArgs>),
    /// Jobs on the queue: list, show, logs, wait, cancel
    #[cfg(feature = "full")]
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Vector indexes: embeddings of images (or of the faces in them), versioned in the
    /// registry, searched by similarity
    #[cfg(feature = "full")]
    #[command(subcommand)]
    Index(IndexCommand),
    /// Group unlabelled images by what they look like (embeddings, k-means): clusters and a
    /// contact sheet of each, to label a cluster at a time
    #[cfg(feature = "full")]
    Cluster(Box<ClusterArgs>),
    /// Watch a model: a baseline of what it saw and said, and drift of new images and answers
    /// from it (KS, chi-squared, Wasserstein, Jensen-Shannon, MMD on embeddings)
    #[cfg(feature = "full")]
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// From labels to a deployed version in one command: snapshot, train or tune, evaluate,
    /// a condition, register, move an alias; each step cached by the digest of its inputs
    #[cfg(feature = "full")]
    #[command(subcommand)]
    Pipeline(PipelineCommand),
}

#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Inference engine: auto (ONNX Runtime when its library is found, else tract; the choice
    /// is printed), tract (pure Rust, always there) or ort (ONNX Runtime, faster)
    #[arg(short, long, env = "STRIX_BACKEND", default_value = "auto", value_parser = parse_backend_choice)]
    pub backend: BackendChoice,
    /// Threads in all (the budget --workers splits; same meaning in predict, serve and
    /// stream) [default: every core]
    #[arg(long, env = "STRIX_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// Path of libonnxruntime.so (what --backend ort loads and auto looks for)
    #[arg(long, env = "ORT_DYLIB_PATH", value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
    /// Where models run: cpu, or cuda / cuda:N (an NVIDIA GPU through ONNX Runtime's CUDA
    /// execution provider: needs --backend ort or auto and the library of PyPI's
    /// onnxruntime-gpu; a CPU-only library is refused, never a silent CPU run)
    #[arg(long, env = "STRIX_DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub device: strix_runtime::Device,
}

impl RuntimeArgs {
    /// What a command without runtime flags checks a model with: the backend chosen as
    /// `--backend auto` does, with the ONNX Runtime library of the settings.
    #[cfg(feature = "full")]
    pub fn for_checks() -> RuntimeArgs {
        RuntimeArgs { backend: BackendChoice::Auto, threads: None, ort_lib: None, device: Default::default() }
    }
}

pub(crate) fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse::<Backend>().map_err(|e| e.to_string())
}

/// `--backend`: an engine, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// ONNX Runtime when this build has it and its library is found, else tract.
    Auto,
    Fixed(Backend),
}

fn parse_device(s: &str) -> Result<strix_runtime::Device, String> {
    s.parse().map_err(|e: strix_runtime::RuntimeError| e.to_string())
}

fn parse_backend_choice(s: &str) -> Result<BackendChoice, String> {
    if s == "auto" { Ok(BackendChoice::Auto) } else { parse_backend(s).map(BackendChoice::Fixed) }
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Image files or folders (searched recursively for .jpg .jpeg .png .webp .gif .bmp .tif .tiff)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// A zoo or imported name, a registered model (NAME, NAME:VERSION, NAME@ALIAS), a spec
    /// .toml, or an .onnx with its spec .toml beside it
    /// [default: the --task's default model, else efficientnet_lite0]
    #[arg(short, long, value_name = "MODEL")]
    #[cfg_attr(
        not(feature = "full"),
        arg(help = "A zoo or imported name, a spec .toml, or an .onnx with its spec .toml beside it \
                    [default: the --task's default model, else efficientnet_lite0]")
    )]
    pub model: Option<String>,
    /// What to look for; picks the zoo's default model for it when --model is not given
    /// (detect: nanodet_m_416, pose: movenet_lightning_192, segment: selfie_256,
    /// faces: blazeface_back_256, text: ppocrv4, embed: efficientnet_lite0_embed, a unit-length
    /// vector per image)
    #[arg(short, long, value_parser = task_parser())]
    pub task: Option<strix_core::Task>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Classes to show per image
    #[arg(short = 'k', long, default_value_t = 5, value_name = "K")]
    pub top_k: usize,
    /// Images per inference (models that fix their batch size use theirs)
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub batch: u64,
    /// Batches in flight at once, sharing --threads [default: one per thread while there are
    /// enough images; a single image gets every thread]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub workers: Option<u64>,
    /// One JSON object per image and line, in Rekognition's shapes (DetectLabels,
    /// DetectFaces, DetectText; Persons and Segmentation alike)
    #[arg(long)]
    pub json: bool,
    /// Write each image with its answer drawn on it (boxes, keypoints, masks, text boxes)
    /// as DIR/NAME.jpg
    #[arg(long, value_name = "DIR")]
    pub save_annotated: Option<PathBuf>,
    /// Write segmentation masks as DIR/NAME.mask.png: indexed colour, pixel value = class index
    /// (what `strix eval segment` and VOC-style tools read)
    #[arg(long, value_name = "DIR")]
    pub save_masks: Option<PathBuf>,
    /// Refuse images with more pixels than this (checked from the header, before decoding)
    #[arg(long, default_value_t = strix_vision::DecodeLimits::DEFAULT_MAX_PIXELS, value_name = "PIXELS")]
    pub max_pixels: u64,
}

/// `--task`: the tasks a model can do, by their names (listed in --help, suggested on a typo).
pub(crate) fn task_parser() -> impl TypedValueParser<Value = strix_core::Task> {
    let names: Vec<&'static str> = strix_core::Task::ALL.iter().map(|t| t.as_str()).collect();
    PossibleValuesParser::new(names).try_map(|name| name.parse::<strix_core::Task>())
}

#[cfg(all(test, feature = "full"))]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_demo_builds_list_of_other_commands_is_the_whole_builds() {
        let names: Vec<String> = super::Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|n| n != "predict" && n != "help")
            .collect();
        assert_eq!(names, super::FULL_COMMANDS);
    }
}
