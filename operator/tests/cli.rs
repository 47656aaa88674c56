//! The `flywheel` binary as a user runs it.

use std::path::Path;
use std::process::Command;

fn flywheel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flywheel"))
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
        .display()
        .to_string()
}

#[test]
fn validate_accepts_the_quickstart() {
    let output = flywheel()
        .args(["validate", &repo("examples/quickstart/study.yaml")])
        .output()
        .expect("flywheel runs");
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid Study"));
    let output = flywheel()
        .args(["validate", &repo("examples/quickstart/deployment.yaml")])
        .output()
        .expect("flywheel runs");
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid ModelDeployment"));
}

#[test]
fn validate_prints_each_error_with_its_field_path_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("flywheel-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: flywheel.dev/v1alpha1\nkind: Study\nmetadata: {name: s}\nspec:\n  dataset: {uri: d.csv, target: y2}\n  objective: {metric: f1}\n  budget: {maxTrials: 0}\n",
    )
    .expect("write manifest");
    let output = flywheel()
        .args(["validate", &path.display().to_string()])
        .output()
        .expect("flywheel runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("spec.objective.metric: 'f1' is not one of"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.budget.maxTrials: must be at least 1"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn validate_reports_an_unreadable_file() {
    let output = flywheel()
        .args(["validate", "/nonexistent/study.yaml"])
        .output()
        .expect("flywheel runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("failed to read /nonexistent/study.yaml")
    );
}

#[test]
fn crdgen_prints_three_crds() {
    let output = flywheel().arg("crdgen").output().expect("flywheel runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.matches("kind: CustomResourceDefinition").count(), 3);
}

#[test]
fn the_operator_refuses_an_artifact_root_its_pods_cannot_reach() {
    // Checked before any cluster is contacted: no kubeconfig is needed to see the error.
    for (root, claim, expected) in [
        (
            "file:///data/flywheel",
            Some("flywheel-artifacts"),
            "outside /artifacts",
        ),
        ("file:///artifacts", None, "--artifact-claim"),
    ] {
        let mut command = flywheel();
        command
            .args([
                "operator",
                "--trainer-image=t",
                "--server-image=s",
                "--leader-election=false",
                "--listen=127.0.0.1:0",
            ])
            .arg(format!("--artifact-root={root}"))
            .env_remove("FLYWHEEL_ARTIFACT_CLAIM")
            .env("KUBECONFIG", "/nonexistent");
        if let Some(claim) = claim {
            command.arg(format!("--artifact-claim={claim}"));
        }
        let output = command.output().expect("flywheel runs");
        assert!(!output.status.success(), "{root}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--artifact-root") && stderr.contains(expected),
            "{root}: {stderr}"
        );
    }
}
