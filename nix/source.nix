# The source handed to cargo: manifests, crates, and the files the crates read
# at build or test time (k8s/ manifests, cargo/nextest config). Editing docs,
# nix/ or the Makefile does not rebuild anything.
{ lib, root }:
let
  fs = lib.fileset;
in
fs.toSource {
  inherit root;
  fileset = fs.unions [
    (root + "/Cargo.toml")
    (root + "/Cargo.lock")
    (root + "/crates")
    (fs.maybeMissing (root + "/k8s"))
    (fs.maybeMissing (root + "/.cargo"))
    (fs.maybeMissing (root + "/.config"))
    (fs.maybeMissing (root + "/rustfmt.toml"))
    (fs.maybeMissing (root + "/clippy.toml"))
  ];
}
