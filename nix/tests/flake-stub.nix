# Evaluates every value of the flake (packages, checks, dev shells) for both
# systems against stand-ins for nixpkgs (stub-pkgs.nix), crane and
# rust-overlay that record how they are called, and returns those records as
# JSON for flake_check.py. Nothing is built: this checks the flake's own
# wiring (targets, flags, shared dependency builds, image inputs, scripts).
#
#   nix-instantiate --eval --strict --json nix/tests/flake-stub.nix
let
  inherit (import ./stub-pkgs.nix { lib = null; system = "none"; }) drv;

  crane.mkLib = p: {
    overrideToolchain =
      f:
      let
        toolchain = f p;
        call =
          fn: args:
          drv "crane-${fn}" "${args.pname or "?"}@${p._name}" (
            args
            // {
              _pkgs = p._name;
              _toolchain = toolchain;
            }
          );
      in
      {
        buildDepsOnly = call "buildDepsOnly";
        buildPackage = call "buildPackage";
        cargoClippy = call "cargoClippy";
        cargoNextest = call "cargoNextest";
        cargoFmt = call "cargoFmt";
      };
  };

  out = (import ../../flake.nix).outputs {
    self.rev = "0123456789abcdef0123456789abcdef01234567";
    nixpkgs.outPath = ./nixpkgs-stub;
    rust-overlay.overlays.default = "rust-overlay.overlays.default";
    inherit crane;
  };

  # Stand-ins become their records; the `images` package also lists the
  # records of its images.
  unwrap =
    v:
    if builtins.isAttrs v && v ? _rec then
      v._rec // (if v ? images then { _images = builtins.mapAttrs (_: i: i._rec) v.images; } else { })
    else
      v;
in
builtins.mapAttrs (_: builtins.mapAttrs (_: builtins.mapAttrs (_: unwrap))) {
  inherit (out) packages checks devShells;
}
