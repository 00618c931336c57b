# The source handed to cargo.
#
# Release builds (`forTests = false`) get only what compiles: the manifests, the crates (`crates/`
# and the development tooling in `dev/`, which the workspace builds together) and
# cargo/nextest configuration. No crate embeds k8s/ or reads it at build time, so editing a
# manifest, the docs, nix/ or the Makefile rebuilds no binary and no image.
#
# The checks (`forTests = true`) also get what the tests read at run time: k8s/ (CRDs, RBAC,
# samples, the gateway manifests), k8s-pre-1.31/ (the CRD variant for Kubernetes 1.29-1.30),
# docs/ (the test vectors in docs/PROTOCOL.md) and scripts/ (scripts/demo-kind.sh, run
# against stand-ins and shellchecked). nix/tests/check-nix.sh
# checks that every such path a test names is in this list.
{
  lib,
  root,
  forTests ? false,
}:
let
  fs = lib.fileset;
in
fs.toSource {
  inherit root;
  fileset = fs.unions (
    [
      (root + "/Cargo.toml")
      (root + "/Cargo.lock")
      (root + "/crates")
      (root + "/dev")
      (fs.maybeMissing (root + "/.cargo"))
      (fs.maybeMissing (root + "/.config"))
      (fs.maybeMissing (root + "/rustfmt.toml"))
      (fs.maybeMissing (root + "/clippy.toml"))
    ]
    ++ (
      if forTests then
        [
          (fs.maybeMissing (root + "/k8s"))
          # apollo-crdgen's variant for Kubernetes 1.29-1.30 (checked by crds-up-to-date).
          (fs.maybeMissing (root + "/k8s-pre-1.31"))
          (fs.maybeMissing (root + "/docs"))
          (fs.maybeMissing (root + "/scripts"))
        ]
      else
        [ ]
    )
  );
}
