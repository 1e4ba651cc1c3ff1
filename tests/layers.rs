//! The layout of `src/` as `src/lib.rs` draws it: each folder imports only
//! from the folders below it in [`LAYERS`], and no `crate::` imports run in
//! a circle between files (within a folder too). Read from the sources, so
//! that a new import that breaks either fails here, naming the file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The folders (or single-file modules) of `src/`, from the bottom up.
const LAYERS: [&str; 13] = [
    "model",
    "dataflow",
    "observe",
    "http",
    "cluster",
    "files",
    "kafka",
    "checkpoint",
    "pipeline",
    "backfill",
    "service",
    "harness",
    "console",
];

/// A module of the crate: its path (`["kafka", "source"]`) and its file.
type Modules = BTreeMap<Vec<String>, PathBuf>;

fn modules(src: &Path) -> Modules {
    fn walk(dir: &Path, prefix: &[String], found: &mut Modules) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                if prefix.is_empty() && name == "bin" {
                    continue; // the binary imports the library by name
                }
                let mut inner = prefix.to_vec();
                inner.push(name);
                walk(&path, &inner, found);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut module = prefix.to_vec();
                if stem != "mod" && stem != "lib" {
                    module.push(stem.to_owned());
                }
                found.insert(module, path);
            }
        }
    }
    let mut found = Modules::new();
    walk(src, &[], &mut found);
    found
}

/// Code without comments (doc links are not imports), line by line.
fn code_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => line[..at].to_owned(),
            _ => line.to_owned(),
        })
        .collect()
}

/// The module paths a line names: `crate::a::b::C`, `crate::{a::b, c}`,
/// `super::x` (from `module`), and a child `x::` of `module` (in its own
/// file, `use x::...` names the child module `x`).
fn named(line: &str, module: &[String], children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let path_at = |rest: &str| -> Vec<String> {
        let mut parts = Vec::new();
        let mut rest = rest;
        loop {
            let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            parts.push(rest[..end].to_owned());
            match rest[end..].strip_prefix("::") {
                Some(more) => rest = more,
                None => break,
            }
        }
        parts
    };
    for (at, _) in line.match_indices("crate::") {
        if at > 0 && line[..at].ends_with(|c: char| ident(c) || c == ':') {
            continue;
        }
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inside = &group[..group.find('}').unwrap_or(group.len())];
            for item in inside.split(',') {
                found.push(path_at(item.trim()));
            }
        } else {
            found.push(path_at(rest));
        }
    }
    for (at, _) in line.match_indices("super::") {
        if at > 0 && line[..at].ends_with(ident) {
            continue;
        }
        let mut path = module[..module.len().saturating_sub(1)].to_vec();
        path.extend(path_at(&line[at + "super::".len()..]));
        found.push(path);
    }
    let trimmed = line.trim_start();
    if let Some(rest) = trimmed
        .strip_prefix("use ")
        .or_else(|| trimmed.strip_prefix("pub use "))
    {
        let first = path_at(rest);
        if first.first().is_some_and(|f| children.contains(f)) {
            let mut path = module.to_vec();
            path.extend(first);
            found.push(path);
        }
    }
    found
}

/// The module a path names: the longest prefix that is a module.
fn resolve<'m>(path: &[String], modules: &'m Modules) -> Option<&'m Vec<String>> {
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
}

fn layer(module: &[String]) -> Option<usize> {
    LAYERS
        .iter()
        .position(|l| Some(&l.to_string()) == module.first())
}

#[test]
fn folders_import_only_from_below_and_no_import_runs_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let mut edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> = BTreeMap::new();
    let mut upwards = Vec::new();
    let mut unplaced = Vec::new();
    for (module, file) in &modules {
        if module.is_empty() {
            continue; // lib.rs declares the layers
        }
        let Some(own) = layer(module) else {
            unplaced.push(file.display().to_string());
            continue;
        };
        let children: BTreeSet<String> = modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m.last().unwrap().clone())
            .collect();
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere.
        let text = text.split("#[cfg(test)]").next().unwrap();
        for (number, line) in code_lines(text).iter().enumerate() {
            for path in named(line, module, &children) {
                let Some(target) = resolve(&path, &modules) else {
                    continue;
                };
                if target == module || target.is_empty() {
                    continue;
                }
                let place = format!("{}:{}", file.display(), number + 1);
                match layer(target) {
                    Some(theirs) if theirs > own => upwards.push(format!(
                        "{place}: {} imports {} from above it",
                        module.join("::"),
                        target.join("::")
                    )),
                    _ => {}
                }
                edges
                    .entry(module.clone())
                    .or_default()
                    .entry(target.clone())
                    .or_insert(place);
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules in no layer of LAYERS: {unplaced:?}"
    );
    assert!(
        upwards.is_empty(),
        "imports from above:\n{}",
        upwards.join("\n")
    );

    // No circle: a depth-first search finds no edge back to a module on
    // the current path.
    fn visit(
        module: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>,
        path: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
        circles: &mut Vec<String>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| m == module) {
            let circle: Vec<String> = path[at..]
                .iter()
                .chain([module])
                .map(|m| m.join("::"))
                .collect();
            circles.push(circle.join(" -> "));
            return;
        }
        path.push(module.clone());
        for target in edges.get(module).into_iter().flat_map(|e| e.keys()) {
            visit(target, edges, path, done, circles);
        }
        path.pop();
        done.insert(module.clone());
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for module in modules.keys() {
        visit(module, &edges, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(
        circles.is_empty(),
        "imports in a circle:\n{}",
        circles.join("\n")
    );
}

/// The checker sees what it must: an upward import, a circle, a child
/// module used by a relative path.
#[test]
fn the_checker_reads_imports_as_written() {
    let module = vec!["kafka".to_owned(), "source".to_owned()];
    let none = BTreeSet::new();
    let paths = named(
        "use crate::{model::ingest::Kind, dataflow::Time}; let x = crate::observe::metrics::Metrics::default();",
        &module,
        &none,
    );
    let expected: Vec<Vec<String>> = [
        "model::ingest::Kind",
        "dataflow::Time",
        "observe::metrics::Metrics::default",
    ]
    .iter()
    .map(|p| p.split("::").map(str::to_owned).collect())
    .collect();
    assert_eq!(paths, expected);
    let paths = named("use super::fetch::Fetcher;", &module, &none);
    assert_eq!(paths, vec![vec!["kafka", "fetch", "Fetcher"]]);
    let children: BTreeSet<String> = ["store".to_owned()].into();
    let paths = named(
        "use store::{Manifest};",
        &["checkpoint".to_owned()],
        &children,
    );
    assert_eq!(paths, vec![vec!["checkpoint", "store"]]);
    assert!(code_lines("// use crate::harness::bench;")[0].is_empty());
}
