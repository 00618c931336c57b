# Stand-in for a nixpkgs package set, for flake-stub.nix: the functions the
# flake calls return records of their arguments that interpolate as fake
# store paths. Only the attributes the flake uses exist, so a misspelt
# attribute in nix/*.nix fails the evaluation.
{
  lib,
  system,
  overlays ? [ ],
}:
let
  drv = kind: name: data: {
    _rec = data // {
      _kind = kind;
      _name = name;
    };
    __toString = _: "/stub/${kind}/${name}";
  };

  rustBin.stable."1.95.0".minimal.override =
    args:
    drv "rust-toolchain" "1.95.0" (
      args
      // {
        profile = "minimal";
      }
    );

  mkPkgs =
    crossAttr:
    {
      _name = if crossAttr == null then system else "${system}/pkgsCross.${crossAttr}";
      _overlays = overlays;
      inherit lib;
      pkgsCross = builtins.listToAttrs (
        map
          (a: {
            name = a;
            value = mkPkgs a;
          })
          [
            "musl64"
            "aarch64-multiplatform-musl"
          ]
      );
      # Only with rust-overlay applied (flake-stub.nix passes this string as
      # the overlay).
      rust-bin =
        if builtins.elem "rust-overlay.overlays.default" overlays then
          rustBin
        else
          throw "rust-bin used without rust-overlay's overlay";
      dockerTools.buildLayeredImage = args: drv "docker-image" "${args.name}:${args.tag}" args;
      writeShellApplication = args: drv "shell-application" args.name args;
      writeText = name: text: drv "text" name { inherit text; };
      # passthru attributes are attributes of the result, as with mkDerivation
      runCommand =
        name: env: script:
        drv "run-command" name { inherit env script; } // (env.passthru or { });
      symlinkJoin = args: drv "symlink-join" args.name args;
      mkShell = args: drv "shell" "devshell" args;
      musl = drv "package" "musl" { } // {
        dev = drv "package" "musl.dev" { };
      };
      formats.yaml_1_1 = _: {
        generate = name: value: drv "yaml" name { inherit value; };
      };
    }
    // builtins.listToAttrs (
      map
        (n: {
          name = n;
          value = drv "package" n { };
        })
        [
          "kind"
          "kubectl"
          "kustomize"
          "jq"
          "curl"
          "openssl"
          "docker-compose"
          "shellcheck"
          "gnumake"
          "python3"
          "git"
          "cargo-nextest"
          "coreutils"
          "gzip"
          "binutils-unwrapped"
        ]
    );
in
{
  inherit drv;
  pkgs = mkPkgs null;
}
