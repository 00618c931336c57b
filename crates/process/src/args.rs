//! Command-line arguments as Kubernetes manifests write them.
//!
//! argh reads `--flag value` only, while manifests (and the runbook) write `--addr=:8080`,
//! `--kubeconfig=` and `--leader-elect=true`. [`split_equals`] rewrites the `=` forms before
//! argh parses, so both forms work for every Apollo binary; [`from_env`] is `argh::from_env`
//! with it.

/// Rewrites `--flag=value` into `--flag value` (an empty value stays an empty argument) and,
/// for the boolean `switches` (written with their dashes, e.g. `"--leader-elect"`),
/// `--switch=true|false` into `--switch` or nothing. Arguments after a bare `--` are left
/// alone. A switch with another value is an error naming it.
pub fn split_equals(
    args: impl IntoIterator<Item = String>,
    switches: &[&str],
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = false;
    for arg in args {
        if rest || arg == "--" {
            rest = true;
            out.push(arg);
            continue;
        }
        match arg.split_once('=') {
            Some((flag, value)) if flag.len() > 2 && flag.starts_with("--") => {
                if switches.contains(&flag) {
                    match value.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "on" => out.push(flag.to_owned()),
                        "false" | "0" | "no" | "off" => {}
                        _ => return Err(format!("{flag} takes true or false, not {value:?}")),
                    }
                } else {
                    out.push(flag.to_owned());
                    out.push(value.to_owned());
                }
            }
            _ => out.push(arg),
        }
    }
    Ok(out)
}

/// [`argh::from_env`] with [`split_equals`] first: the process's arguments parsed into `T`,
/// `--flag=value` accepted beside `--flag value` (`switches` as for [`split_equals`]). As
/// argh's own: `--help` prints to stdout and exits 0; a usage error prints to stderr with a
/// pointer to `--help` and exits 1.
pub fn from_env<T: argh::TopLevelCommand>(switches: &[&str]) -> T {
    let strings: Vec<String> = std::env::args_os()
        .map(|s| s.into_string())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|arg| {
            eprintln!("Invalid utf8: {}", arg.to_string_lossy());
            std::process::exit(1)
        });
    let Some((program, rest)) = strings.split_first() else {
        eprintln!("No program name, argv is empty");
        std::process::exit(1)
    };
    let cmd = std::path::Path::new(program)
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or(program);
    let parsed = split_equals(rest.iter().cloned(), switches)
        .map_err(|output| argh::EarlyExit {
            output,
            status: Err(()),
        })
        .and_then(|args| {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            T::from_args(&[cmd], &refs)
        });
    parsed.unwrap_or_else(|early| {
        std::process::exit(match early.status {
            Ok(()) => {
                println!("{}", early.output);
                0
            }
            Err(()) => {
                eprintln!("{}\nRun {cmd} --help for more information.", early.output);
                1
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(args: &[&str]) -> Result<Vec<String>, String> {
        split_equals(args.iter().map(|a| (*a).to_owned()), &["--leader-elect"])
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
            ])
            .unwrap(),
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
    fn switches_take_booleans() {
        assert_eq!(split(&["--leader-elect=true"]).unwrap(), ["--leader-elect"]);
        assert!(split(&["--leader-elect=false"]).unwrap().is_empty());
        let err = split(&["--leader-elect=maybe"]).unwrap_err();
        assert!(
            err.contains("--leader-elect") && err.contains("maybe"),
            "{err}"
        );
    }

    #[test]
    fn values_keep_later_equals_signs_and_positional_arguments_stay() {
        assert_eq!(
            split(&["--x=a=b", "=c", "-v=1"]).unwrap(),
            ["--x", "a=b", "=c", "-v=1"]
        );
        assert_eq!(split(&["--", "--y=z"]).unwrap(), ["--", "--y=z"]);
        assert_eq!(split(&["--=v"]).unwrap(), ["--=v"]);
    }
}
