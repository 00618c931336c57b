//! Command-line arguments as Kubernetes manifests write them.
//!
//! argh reads `--flag value` only, while manifests (and the runbook) write `--addr=:8080` and
//! `--kubeconfig=`. [`split_equals`] turns `--flag=value` into `--flag value` before argh
//! parses, so both forms work for every Apollo binary.

/// Splits every `--flag=value` into `--flag` and `value` (an empty value stays an empty
/// argument). Arguments after a bare `--` are left alone.
pub fn split_equals(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        if rest || arg == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        match arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
            Some((name, value)) if !name.is_empty() => {
                out.push(format!("--{name}"));
                out.push(value.to_owned());
            }
            _ => out.push(arg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(args: &[&str]) -> Vec<String> {
        split_equals(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn manifest_forms() {
        assert_eq!(
            split(&[
                "--addr=:8080",
                "--kubeconfig=",
                "--leader-elect",
                "--namespace",
                "ns"
            ]),
            [
                "--addr",
                ":8080",
                "--kubeconfig",
                "",
                "--leader-elect",
                "--namespace",
                "ns"
            ]
        );
    }

    #[test]
    fn values_keep_later_equals_signs_and_positional_arguments_stay() {
        assert_eq!(
            split(&["--x=a=b", "=c", "-v=1"]),
            ["--x", "a=b", "=c", "-v=1"]
        );
        assert_eq!(split(&["--", "--y=z"]), ["--", "--y=z"]);
        assert_eq!(split(&["--=v"]), ["--=v"]);
    }
}
