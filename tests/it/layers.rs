//! Inside a crate, modules depend one way: when two modules import each other, neither can be
//! read, tested or moved alone, and the shared part belongs in a third (or in one of them).
//! Checked from the sources: a module's `crate::NAME` paths (comments and unit tests aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The modules each top-level module of `src` names through `crate::`.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs") && !p.ends_with("lib.rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let text = std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap();
        // Unit tests sit at the end of a file and may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut named = BTreeSet::new();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for rest in line.split("crate::").skip(1) {
                let first =
                    |s: &str| s.trim().split(|c: char| !c.is_alphanumeric() && c != '_').next().map(String::from);
                let names: Vec<String> = match rest.strip_prefix('{') {
                    Some(group) => group.split(',').filter_map(first).collect(),
                    None => first(rest).into_iter().collect(),
                };
                named.extend(names.into_iter().filter(|n| modules.contains(n) && n != module));
            }
        }
        graph.insert(module.clone(), named);
    }
    graph
}

/// A cycle of `graph` as `a -> b -> a`, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|p| p == node) {
            return Some(format!("{} -> {node}", path[at..].join(" -> ")));
        }
        if !done.insert(node.to_string()) {
            return None;
        }
        path.push(node.to_string());
        for next in &graph[node] {
            if let Some(found) = visit(graph, next, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(graph, node, &mut Vec::new(), &mut done))
}

#[test]
fn modules_inside_a_crate_import_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Every crate of the workspace, a new one included without anyone listing it.
    let mut crates: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| root.join(n).join("Cargo.toml").is_file())
        .collect();
    crates.sort();
    assert!(crates.len() >= 19 && crates.contains(&"strix-batch".to_string()), "{crates:?}");
    for name in &crates {
        let graph = imports(&root.join(name).join("src"));
        assert!(graph.len() >= 2, "{name}: modules not found");
        assert_eq!(cycle(&graph), None, "{name}: modules import each other");
    }
}

#[test]
fn an_import_loop_is_found() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "b")])), Some("b -> c -> b".into()));
}

/// `./scripts/test` compiles the pure-Rust build (no ONNX Runtime) only as the demo build's
/// tests, tract only: enough while strix-runtime is the one crate whose code the cargo feature
/// `ort` switches (a `cfg!` expression compiles either way).
#[test]
fn only_strix_runtime_compiles_differently_without_onnx_runtime() {
    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut switched = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("src").is_dir() || dir.ends_with("strix-runtime") {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            if text.lines().any(|l| l.contains("feature = \"ort\"") && !l.contains("cfg!(")) {
                switched.push(file.display().to_string());
            }
        }
    }
    assert!(
        switched.is_empty(),
        "compiled differently without `ort`; add a tract-only build of them to scripts/test: {switched:?}"
    );
}
