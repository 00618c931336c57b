# The source handed to cargo. Release builds get the manifests, the crates
# and the files crates read at build or run time (k8s/, cargo config);
# editing docs, nix/ or the Makefile does not rebuild them. The checks
# (`forTests = true`) also get docs/, which tests read (docs/PROTOCOL.md test
# vectors).
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
      (fs.maybeMissing (root + "/k8s"))
      (fs.maybeMissing (root + "/.cargo"))
      (fs.maybeMissing (root + "/.config"))
      (fs.maybeMissing (root + "/rustfmt.toml"))
      (fs.maybeMissing (root + "/clippy.toml"))
    ]
    ++ (if forTests then [ (fs.maybeMissing (root + "/docs")) ] else [ ])
  );
}
