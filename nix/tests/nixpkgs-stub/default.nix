# Stand-in for `import nixpkgs { localSystem; overlays; }` (see
# ../flake-stub.nix). Uses the real nixpkgs lib when APOLLO_NIXPKGS_LIB names
# one (a checkout's lib/ directory), else ../stub-lib.nix.
{
  localSystem,
  overlays ? [ ],
}:
let
  libPath = builtins.getEnv "APOLLO_NIXPKGS_LIB";
  lib = if libPath == "" then import ../stub-lib.nix else import libPath;
in
(import ../stub-pkgs.nix {
  inherit lib overlays;
  system = localSystem;
}).pkgs
