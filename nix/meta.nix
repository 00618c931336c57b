# Project facts read with Nix builtins only (no nixpkgs), so the flake's
# attribute names can be listed and tested on a machine without a Nix store.
{ root }:
let
  cargo = builtins.fromTOML (builtins.readFile (root + "/Cargo.toml"));
  workspacePackage = cargo.workspace.package;

  # Binary crates of the workspace: Cargo package name -> crate directory.
  # A binary whose crate does not exist (yet) is left out of every output.
  knownBinaries = [
    {
      name = "apollo-controller";
      dir = "controller";
    }
    {
      name = "apollo-gateway";
      dir = "gateway";
    }
    {
      name = "apollo-agent";
      dir = "agent";
    }
    {
      name = "apollo-crdgen";
      dir = "crdgen";
    }
    {
      name = "apollo-devcluster";
      dir = "devcluster";
    }
    {
      name = "apollo-fleetsim";
      dir = "fleetsim";
    }
  ];

  present = builtins.filter (b: builtins.pathExists (root + "/crates/${b.dir}/Cargo.toml")) knownBinaries;
in
{
  inherit (workspacePackage) version repository license;
  binaries = map (b: b.name) present;
  hasBinary = name: builtins.elem name (map (b: b.name) present);
}
