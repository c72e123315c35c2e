//! `hyphae-agent --check` on real files: the agent reads its config with the policy loader.

use std::path::Path;
use std::process::Command;

fn agent_check(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hyphae-agent"))
        .arg("--check")
        .arg("--config")
        .arg(file)
        .output()
        .expect("run hyphae-agent")
}

#[test]
fn example_agent_configs_pass_the_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/agents");
    for name in ["web-1.yaml", "app-1.yaml", "app-2.yaml"] {
        let output = agent_check(&dir.join(name));
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{name}: {text}");
        assert!(
            text.starts_with(&format!("ok: node `{}`", name.trim_end_matches(".yaml"))),
            "{text}"
        );
    }
}

#[test]
fn a_file_without_an_agent_config_is_refused() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/services.yaml");
    let output = agent_check(&file);
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text.contains(
            "services.yaml:1:1: error: kind: expected exactly one `AgentConfig` document, found 0"
        ),
        "{text}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let output = agent_check(Path::new("/nonexistent/agent.yaml"));
    let text = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text.contains("/nonexistent/agent.yaml:1:1: error: cannot read the file"),
        "{text}"
    );
}
