//! The Dockerfiles at the repository root (the runbook's step 3, for users without Nix) and
//! the flake's images (`nix/image-spec.nix`, built by `nix/images.nix`) describe the same
//! images: paths, user, working directory, environment, entrypoint, exposed ports, labels,
//! and the same /etc/passwd and /etc/group. The spec is evaluated with `nix-instantiate`
//! (CI installs nix-bin); without it the test says so and checks nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn workspace_field(field: &str) -> String {
    let text = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let section = text
        .split("[workspace.package]")
        .nth(1)
        .expect("[workspace.package]");
    section
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == field).then(|| v.trim().trim_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("workspace.package.{field}"))
}

fn image_spec() -> Option<Value> {
    let expr = format!(
        "import ./nix/image-spec.nix {{ version = \"{}\"; revision = \"unknown\"; source = \"{}\"; license = \"{}\"; }}",
        workspace_field("version"),
        workspace_field("repository"),
        workspace_field("license"),
    );
    let out = std::process::Command::new("nix-instantiate")
        .current_dir(repo())
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIP: nix-instantiate is not installed (apt-get install nix-bin); \
                 nix/image-spec.nix not evaluated"
            );
            None
        }
        Err(e) => panic!("nix-instantiate: {e}"),
        Ok(o) => {
            assert!(
                o.status.success(),
                "nix-instantiate failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(serde_json::from_slice(&o.stdout).unwrap())
        }
    }
}

/// A Dockerfile as instructions (continuation lines joined, comments dropped).
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (op, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((current.as_str(), ""));
        out.push((op.to_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

/// `k="v" k2="v2"` (LABEL, ENV with quotes) or `k=v`.
fn key_values(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=').expect("key=value");
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').expect("closing quote");
            (&q[..end], &q[end + 1..])
        } else {
            after.split_once(char::is_whitespace).unwrap_or((after, ""))
        };
        out.insert(k.trim().to_string(), v.to_string());
        rest = next.trim();
    }
    out
}

struct Dockerfile {
    from: String,
    args: BTreeMap<String, String>,
    copies: Vec<String>,
    user: String,
    workdir: String,
    env: BTreeMap<String, String>,
    expose: Vec<String>,
    labels: BTreeMap<String, String>,
    entrypoint: Value,
}

fn parse(path: &Path) -> Dockerfile {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (the runbook's step 3 needs it)", path.display()));
    let mut d = Dockerfile {
        from: String::new(),
        args: BTreeMap::new(),
        copies: Vec::new(),
        user: String::new(),
        workdir: String::new(),
        env: BTreeMap::new(),
        expose: Vec::new(),
        labels: BTreeMap::new(),
        entrypoint: Value::Null,
    };
    for (op, rest) in instructions(&text) {
        match op.as_str() {
            "FROM" => d.from = rest,
            "ARG" => {
                let (k, v) = rest.split_once('=').unwrap_or((rest.as_str(), ""));
                d.args.insert(k.to_string(), v.to_string());
            }
            "COPY" => d.copies.push(rest),
            "USER" => d.user = rest,
            "WORKDIR" => d.workdir = rest,
            "ENV" => d.env.extend(key_values(&rest)),
            "EXPOSE" => d.expose.extend(rest.split_whitespace().map(str::to_string)),
            "LABEL" => d.labels.extend(key_values(&rest)),
            "ENTRYPOINT" => {
                d.entrypoint = serde_json::from_str(&rest).expect("exec-form ENTRYPOINT")
            }
            other => panic!("{}: unexpected instruction {other}", path.display()),
        }
    }
    d
}

/// A label value with `${ARG}` replaced by the ARG's default.
fn expand(v: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = v.to_string();
    for (k, default) in args {
        out = out.replace(&format!("${{{k}}}"), default);
    }
    out
}

#[test]
fn dockerfiles_describe_the_flake_images() {
    let Some(spec) = image_spec() else { return };
    let images = spec["images"].as_array().expect("images");
    let mut checked = Vec::new();
    for image in images {
        let key = image["key"].as_str().unwrap();
        if key == "controller-alias" {
            // The runbook's second tag of the same image (`docker build -t ... -t ...`).
            continue;
        }
        let binary = image["binary"].as_str().unwrap();
        let config = &image["config"];
        let path = repo().join(format!("Dockerfile.{key}"));
        let d = parse(&path);
        let at = path.display();
        assert_eq!(
            d.from, "scratch",
            "{at}: FROM scratch (distroless, nothing pulled)"
        );
        // Paths: the binary where the flake puts it, and the image root from bin/rootfs.
        let entry = image["entrypoint"].as_str().unwrap();
        assert_eq!(entry, format!("/usr/local/bin/{binary}"));
        assert!(
            d.copies.contains(&format!("bin/{binary} {entry}")),
            "{at}: COPY bin/{binary} {entry} in {:?}",
            d.copies
        );
        assert!(
            d.copies.contains(&"bin/rootfs/ /".to_string()),
            "{at}: {:?}",
            d.copies
        );
        assert!(
            d.copies.contains(&format!(
                "--chown={} bin/rootfs/home/ /home/",
                spec["user"].as_str().unwrap()
            )),
            "{at}: the home directory belongs to the user: {:?}",
            d.copies
        );
        for f in image["files"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            let provided =
                f == format!("usr/local/bin/{binary}") || f == "etc/passwd" || f == "etc/group";
            assert!(provided, "{at}: the flake's image has {f}");
        }
        // User, working directory, environment, entrypoint, ports.
        assert_eq!(d.user, config["User"].as_str().unwrap(), "{at}: USER");
        assert_eq!(
            d.workdir,
            config["WorkingDir"].as_str().unwrap(),
            "{at}: WORKDIR"
        );
        let env: Vec<String> = d.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let want_env: Vec<String> = config["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(env, want_env, "{at}: ENV");
        assert_eq!(d.entrypoint, config["Entrypoint"], "{at}: ENTRYPOINT");
        let want_ports: Vec<String> = config
            .get("ExposedPorts")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(d.expose, want_ports, "{at}: EXPOSE");
        // Labels: the same keys and values (version and revision from build arguments whose
        // defaults are the workspace version and the flake's fallback revision).
        let labels: BTreeMap<String, String> = d
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), expand(v, &d.args)))
            .collect();
        let want_labels: BTreeMap<String, String> = config["Labels"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(labels, want_labels, "{at}: LABEL");
        assert_eq!(
            d.labels["org.opencontainers.image.revision"], "${REVISION}",
            "{at}: the revision comes from the build (make docker-images passes git's)"
        );
        checked.push(key.to_string());
    }
    assert_eq!(checked, ["controller", "gateway", "agent"]);

    // The image root the Dockerfiles copy: the flake's passwd and group, byte for byte.
    for (file, field) in [("docker/passwd", "passwd"), ("docker/group", "group")] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        assert_eq!(text, spec[field].as_str().unwrap(), "{file}");
    }
    // `make build` writes bin/rootfs from them, with the flake's home and /tmp.
    let make = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    for line in [
        "install -d -m 0755 $(BIN_DIR)/rootfs/etc $(BIN_DIR)/rootfs/home/nonroot",
        "install -d -m 1777 $(BIN_DIR)/rootfs/tmp",
        "install -m 0644 docker/passwd docker/group $(BIN_DIR)/rootfs/etc/",
    ] {
        assert!(make.contains(line), "Makefile build: {line}");
    }
    // The build context holds bin/ only (not target/).
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        ".dockerignore starts by excluding everything"
    );
    assert!(
        rules[1..].iter().all(|r| r.starts_with("!bin/")),
        "{rules:?}"
    );
}

#[test]
fn dockerfile_parser_reads_what_it_must() {
    let dir = std::env::temp_dir().join(format!("apollo-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("Dockerfile.x");
    std::fs::write(
        &f,
        "# c\nFROM scratch\nARG V=1\nCOPY a /b\nUSER 1:1\nWORKDIR /w\nENV HOME=/w\nEXPOSE 1/tcp\n\
         LABEL a=\"x y\" \\\n      b=\"${V}\"\nENTRYPOINT [\"/b\"]\n",
    )
    .unwrap();
    let d = parse(&f);
    assert_eq!(d.labels["a"], "x y");
    assert_eq!(expand(&d.labels["b"], &d.args), "1");
    assert_eq!(d.entrypoint, serde_json::json!(["/b"]));
    assert_eq!(d.expose, ["1/tcp"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
