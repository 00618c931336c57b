//! The agent never talks to Kubernetes and must not even link a Kubernetes client: no `kube*`
//! or `k8s-openapi` crate in `cargo tree -p apollo-agent` (normal and build dependencies).

use std::process::Command;

#[test]
fn no_kubernetes_crate_in_the_dependency_tree() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "apollo-agent",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"apollo-protocol"),
        "unexpected tree:\n{tree}"
    );
    let kubernetes: Vec<&&str> = crates
        .iter()
        .filter(|c| c.starts_with("kube") || c.starts_with("k8s-") || c.starts_with("apollo-api"))
        .collect();
    assert!(
        kubernetes.is_empty(),
        "Kubernetes crates in the agent's tree: {kubernetes:?}"
    );
}
