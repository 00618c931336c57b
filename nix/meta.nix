# Project facts read with Nix builtins only (no nixpkgs), so the flake's
# attribute names can be listed and tested on a machine without a Nix store.
{ root }:
let
  cargo = builtins.fromTOML (builtins.readFile (root + "/Cargo.toml"));
  workspacePackage = cargo.workspace.package;

  # Binary crates of the workspace (members are `crates/*`, what ships, and `dev/*`, the
  # development tooling): a crate with a [[bin]] section or a src/main.rs. New binary crates are
  # picked up without editing this file; each becomes `packages.<system>.<cargo package name>`.
  memberDirs = [
    "crates"
    "dev"
  ];
  cratesIn =
    parent:
    let
      entries = builtins.readDir (root + "/${parent}");
      dirs = builtins.filter (name: entries.${name} == "directory") (builtins.attrNames entries);
      manifestOf = dir: root + "/${parent}/${dir}/Cargo.toml";
    in
    map (dir: {
      path = "${parent}/${dir}";
      manifest = builtins.fromTOML (builtins.readFile (manifestOf dir));
    }) (builtins.filter (dir: builtins.pathExists (manifestOf dir)) dirs);
  crates = builtins.concatMap cratesIn memberDirs;
  isBinary =
    crate:
    (crate.manifest.bin or [ ]) != [ ]
    || builtins.pathExists (root + "/${crate.path}/src/main.rs");
  binaries = map (crate: crate.manifest.package.name) (builtins.filter isBinary crates);
in
{
  inherit (workspacePackage) version repository license;
  inherit binaries;
  hasBinary = name: builtins.elem name binaries;
}
