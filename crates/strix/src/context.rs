//! What every command takes: the settings resolved once from flags, variables and the settings
//! file, the catalog built from them, and the output flags. Commands get an [`AppContext`]
//! instead of the clap structs, so none reads the environment or calls back into `main`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use strix_catalog::{Catalog, Engine};
use strix_pipeline::Pipeline;
use strix_runtime::{Backend, RuntimeOptions};
use strix_zoo::ResolvedModel;

use crate::cli::{BackendChoice, Global, RuntimeArgs};
use crate::progress::Bars;

pub struct AppContext {
    catalog: Catalog,
    /// `--quiet`: no bars, no summaries, no notes on stderr.
    pub quiet: bool,
}

impl AppContext {
    /// An ONNX file with its spec (renamed to `name` if given), resolved and proven to fit: it
    /// loads, and one inference on a plain picture decodes (the decoder checks every output's
    /// shape). `models import` and `models register` take nothing less.
    #[cfg(feature = "full")]
    pub fn checked_model(
        &self,
        onnx: &Path,
        spec_path: &Path,
        name: Option<&str>,
        runtime_args: &RuntimeArgs,
        bars: &Bars,
    ) -> Result<ResolvedModel> {
        use anyhow::Context as _;
        if !onnx.is_file() {
            anyhow::bail!("{}: model file not found", onnx.display());
        }
        if spec_path.extension().and_then(|e| e.to_str()) != Some("toml") {
            anyhow::bail!("{}: the spec must be a .toml file", spec_path.display());
        }
        let mut located = self.catalog().locate_local(&spec_path.display().to_string())?;
        if let Some(name) = name {
            strix_zoo::check_name(name).map_err(anyhow::Error::msg)?;
            located.spec.name = name.to_string();
        }
        // The file given on the command line is the weights, whatever the spec's `file` says;
        // other networks and a labels file are found beside the spec.
        let file_name = onnx.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        located.spec.weights = strix_zoo::Artifact { file: file_name, sha256: None, url: None, size: None };
        let model = self.catalog().resolver().resolve_with_weights(&located, onnx.to_path_buf(), bars)?;
        self.engine(runtime_args)
            .load_checked(model.clone())
            .with_context(|| format!("{} does not fit {}", onnx.display(), spec_path.display()))?;
        Ok(model)
    }

    /// Resolves the settings (flags > variables > settings file > defaults) and opens the catalog.
    pub fn from_flags(global: &Global) -> Result<AppContext> {
        Ok(AppContext::new(crate::settings::build(global)?, global.quiet))
    }

    pub fn new(settings: strix_catalog::Settings, quiet: bool) -> AppContext {
        AppContext { catalog: Catalog::open(settings), quiet }
    }

    /// The models' front door: zoo names, registry references and paths.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Progress bars, hidden under `--quiet`.
    pub fn bars(&self) -> Bars {
        Bars::new(self.quiet)
    }

    /// Every engine of this build for an export gate, opened with the settings'
    /// libonnxruntime; the ones that cannot open here are skipped and named.
    #[cfg(feature = "full")]
    pub fn export_engines(&self) -> strix_export::gate::Engines {
        let mut engines = strix_export::gate::Engines::default();
        engines.options.ort_library = self.ort_library(None);
        engines
    }

    /// libonnxruntime for `--backend ort`: `--ort-lib` / `ORT_DYLIB_PATH`, else the settings file.
    pub fn ort_library(&self, flag: Option<&PathBuf>) -> Option<PathBuf> {
        flag.filter(|p| !p.as_os_str().is_empty()).cloned().or_else(|| self.catalog.settings().ort_library.clone())
    }

    /// The engine the flags name: backend, threads and libonnxruntime.
    pub fn engine(&self, args: &RuntimeArgs) -> Engine {
        let options = RuntimeOptions {
            threads: args.threads,
            device: args.device,
            ort_library: self.ort_library(args.ort_lib.as_ref()),
        };
        let backend = match args.backend {
            BackendChoice::Fixed(b) => b,
            BackendChoice::Auto => self.auto_backend(options.ort_library.as_deref()),
        };
        Engine::new(backend, options)
    }

    /// `--backend auto`: ONNX Runtime, the faster engine, when this build has it and its library
    /// is there, else tract; said once on stderr, so nobody runs the slower engine unknowingly.
    fn auto_backend(&self, ort_library: Option<&Path>) -> Backend {
        static SAID: std::sync::Once = std::sync::Once::new();
        let found = ort_library.filter(|p| p.is_file());
        let (backend, why) = match (Backend::Ort.is_compiled(), found) {
            (true, Some(lib)) => (Backend::Ort, format!("ONNX Runtime from {}", lib.display())),
            (true, None) => {
                (Backend::Tract, "no ONNX Runtime library found (set ORT_DYLIB_PATH or --ort-lib)".to_string())
            }
            (false, _) => (Backend::Tract, "this build has no ONNX Runtime support".to_string()),
        };
        if !self.quiet {
            SAID.call_once(|| eprintln!("engine: {backend} (--backend auto: {why})"));
        }
        backend
    }

    /// A resolved model loaded on the backend the flags name.
    pub fn load_pipeline(&self, model: ResolvedModel, args: &RuntimeArgs) -> Result<Pipeline> {
        Ok(self.engine(args).load(model)?)
    }

    /// A bare runtime on the backend the flags name (for reading a model's inputs and outputs).
    #[cfg(feature = "full")]
    pub fn open_runtime(&self, args: &RuntimeArgs) -> Result<Box<dyn strix_runtime::Runtime>> {
        Ok(self.engine(args).runtime()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strix_catalog::{Defaults, Layer, Settings};

    fn context(ort_library: Option<&str>) -> AppContext {
        let layer = Layer { ort_library: ort_library.map(PathBuf::from), ..Layer::default() };
        let defaults =
            Defaults { home: PathBuf::from("/nonexistent/home"), cache_dir: PathBuf::from("/nonexistent/cache") };
        AppContext::new(Settings::from_layers(vec![layer], defaults, Vec::new()), true)
    }

    fn runtime(backend: BackendChoice, ort_lib: Option<&str>) -> RuntimeArgs {
        RuntimeArgs { backend, threads: Some(3), ort_lib: ort_lib.map(PathBuf::from), device: Default::default() }
    }

    #[test]
    fn engine_takes_the_ort_library_from_the_flag_else_the_settings() {
        let ctx = context(Some("/settings/libonnxruntime.so"));
        let fixed = BackendChoice::Fixed(Backend::Ort);
        let from_flag = ctx.engine(&runtime(fixed, Some("/flag/libonnxruntime.so")));
        assert_eq!(from_flag.options.ort_library, Some(PathBuf::from("/flag/libonnxruntime.so")));
        assert_eq!((from_flag.backend, from_flag.options.threads), (Backend::Ort, Some(3)));
        // An empty flag (`--ort-lib ''`, or an empty variable) says nothing.
        let from_settings = ctx.engine(&runtime(fixed, Some("")));
        assert_eq!(from_settings.options.ort_library, Some(PathBuf::from("/settings/libonnxruntime.so")));
        assert_eq!(context(None).engine(&runtime(fixed, None)).options.ort_library, None);
    }

    #[test]
    fn auto_backend_is_tract_when_the_ort_library_is_not_there() {
        let ctx = context(Some("/nonexistent/libonnxruntime.so"));
        assert_eq!(ctx.engine(&runtime(BackendChoice::Auto, None)).backend, Backend::Tract);
    }
}
