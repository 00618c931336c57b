# Project facts read with Nix builtins only (no nixpkgs), so the flake's
# attribute names can be listed and tested on a machine without a Nix store.
{ root }:
let
  cargo = builtins.fromTOML (builtins.readFile (root + "/Cargo.toml"));
  workspacePackage = cargo.workspace.package;

  # Binary crates of the workspace (members are `crates/*`): a crate with a
  # [[bin]] section or a src/main.rs. New binary crates are picked up without
  # editing this file; each becomes `packages.<system>.<cargo package name>`.
  entries = builtins.readDir (root + "/crates");
  crateDirs = builtins.filter (name: entries.${name} == "directory") (builtins.attrNames entries);
  manifestOf = dir: root + "/crates/${dir}/Cargo.toml";
  crates = map (dir: {
    inherit dir;
    manifest = builtins.fromTOML (builtins.readFile (manifestOf dir));
  }) (builtins.filter (dir: builtins.pathExists (manifestOf dir)) crateDirs);
  isBinary =
    crate:
    (crate.manifest.bin or [ ]) != [ ]
    || builtins.pathExists (root + "/crates/${crate.dir}/src/main.rs");
  binaries = map (crate: crate.manifest.package.name) (builtins.filter isBinary crates);
in
{
  inherit (workspacePackage) version repository license;
  inherit binaries;
  hasBinary = name: builtins.elem name binaries;
}
