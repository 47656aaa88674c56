//! The malformed-manifest corpus: every file under tests/manifests/invalid/ states the error it
//! must produce in its first line (`# expect: <text>`), and every example manifest must pass.

use std::path::{Path, PathBuf};

use flywheel_operator::manifest::validate_manifest;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate lives inside the repository")
        .to_path_buf()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("failed to read {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn every_malformed_manifest_fails_with_its_expected_error() {
    let mut files = Vec::new();
    yaml_files(&repo_root().join("tests/manifests/invalid"), &mut files);
    assert!(
        files.len() >= 30,
        "the corpus holds {} manifests",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable corpus file");
        let expected = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks a '# expect: ' first line", path.display()));
        match validate_manifest(&text) {
            Ok(kind) => failures.push(format!("{}: accepted as a valid {kind}", path.display())),
            Err(errors) => {
                let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
                if !rendered.iter().any(|line| line.contains(expected)) {
                    failures.push(format!(
                        "{}: expected an error containing {expected:?}, got:\n    {}",
                        path.display(),
                        rendered.join("\n    ")
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_example_manifest_is_valid() {
    let mut files = Vec::new();
    yaml_files(&repo_root().join("examples"), &mut files);
    let studies: Vec<_> = files
        .iter()
        .filter(|path| {
            std::fs::read_to_string(path)
                .is_ok_and(|text| text.contains("apiVersion: flywheel.dev"))
        })
        .collect();
    assert!(!studies.is_empty(), "no example manifests found");
    for path in studies {
        let text = std::fs::read_to_string(path).expect("readable example");
        if let Err(errors) = validate_manifest(&text) {
            panic!("{} is invalid: {errors:?}", path.display());
        }
    }
}
