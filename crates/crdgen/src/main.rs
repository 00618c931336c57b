//! `apollo-crdgen`: write (or check) the CRD YAML under `k8s/crds/`.

use std::path::PathBuf;

use argh::FromArgs;

/// Generate the Apollo CustomResourceDefinitions from the Rust types.
#[derive(FromArgs)]
struct Args {
    /// directory to write the CRD files into (default: k8s/crds)
    #[argh(option, default = "PathBuf::from(\"k8s/crds\")")]
    out_dir: PathBuf,
    /// do not write; fail if the files in --out-dir are missing or stale
    #[argh(switch)]
    check: bool,
    /// print all CRDs to stdout as one multi-document YAML instead of writing files
    #[argh(switch)]
    stdout: bool,
    /// also write (or check) the variant for older Kubernetes servers beside the manifest
    /// directory, the parent of --out-dir (k8s-pre-1.31/ for k8s/crds)
    #[argh(switch)]
    variants: bool,
}

fn main() -> anyhow::Result<()> {
    let args: Args = apollo_process::args::from_env(&["--check", "--stdout", "--variants"]);
    if args.stdout {
        for file in apollo_crdgen::render()? {
            println!("---\n{}", file.yaml.trim_end());
        }
    } else if args.check {
        if args.variants {
            apollo_crdgen::check_with_variants(&args.out_dir)?;
            eprintln!(
                "CRDs in {} and the variants for older servers are up to date",
                args.out_dir.display()
            );
        } else {
            apollo_crdgen::check(&args.out_dir)?;
            eprintln!("CRDs in {} are up to date", args.out_dir.display());
        }
    } else {
        let written = if args.variants {
            apollo_crdgen::write_with_variants(&args.out_dir)?
        } else {
            apollo_crdgen::write(&args.out_dir)?
        };
        for path in written {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
