//! The README's two commands stay true: the demo prints what the README
//! shows, and `.ci/run` runs the README's test command.

use std::path::Path;
use std::process::Command;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

#[test]
fn readme_demo_classifies_the_bundled_tree() {
    let text = readme();
    let demo = text
        .lines()
        .find_map(|l| l.strip_prefix("cargo run --release -- "))
        .expect("a demo command in README.md");
    let args: Vec<&str> = demo.split_whitespace().collect();
    let out = Command::new(env!("CARGO_BIN_EXE_hotplug-hook"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        // Never read the host's records: classify only reads the state dir.
        .args(["--state-dir", "/nonexistent/hotplug-hook"])
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The README shows the same output, but for the timing line.
    let shown: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("decided in"))
        .collect();
    for line in &shown {
        assert!(text.contains(line), "README does not show {line:?}");
    }
    assert_eq!(shown[0], "ens5 remove: driver-unload (no reconfiguration)");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let text = readme();
    let marker = "# Run all tests:\n";
    let at = text.find(marker).expect("README names its test command") + marker.len();
    let cmd = text[at..].lines().next().unwrap().trim();
    let ci =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap();
    let last = ci
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap()
        .trim();
    assert_eq!(
        last, cmd,
        ".ci/run must end by running the README's test command"
    );
}
