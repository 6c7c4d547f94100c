//! The repository's own documentation: every relative link in every
//! Markdown file leads to a file or folder that exists.

use std::path::{Path, PathBuf};

/// Markdown files of the repository (not build output or tool folders).
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" {
                markdown_files(&path, found);
            }
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// The targets of the links in `text`: inline `[text](target)` and
/// reference definitions `[label]: target`, angle brackets removed.
fn link_targets(text: &str) -> Vec<&str> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find(')') else { break };
        targets.push(rest[..end].split_whitespace().next().unwrap_or(""));
        rest = &rest[end..];
    }
    targets.extend(text.lines().filter_map(|line| {
        let (label, target) = line.trim_start().strip_prefix('[')?.split_once("]: ")?;
        (!label.is_empty()).then(|| target.split_whitespace().next().unwrap_or(""))
    }));
    targets.into_iter().map(|t| t.trim_matches(['<', '>'])).collect()
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    markdown_files(root, &mut files);
    assert!(files.iter().any(|f| f.ends_with("README.md")), "found {files:?}");
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link_targets(&text) {
            let path = target.split('#').next().unwrap();
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            if !file.parent().unwrap().join(path).exists() {
                broken.push(format!("{}: {target}", file.strip_prefix(root).unwrap().display()));
            }
        }
    }
    assert!(checked > 10, "only {checked} relative links found");
    assert!(broken.is_empty(), "links to nothing:\n{}", broken.join("\n"));
}

#[test]
fn the_link_finder_finds_links_and_skips_other_brackets() {
    let text = "See [api](docs/api.md#codes) and [x](<https://e.org> \"t\"); f(a)[0] stays.\n[ref]: ../k8s/ \"k8s\"";
    assert_eq!(link_targets(text), ["docs/api.md#codes", "https://e.org", "../k8s/"]);
}
