# Static release binaries for one musl target, built with crane.
#
# Dependencies are compiled once (`buildDepsOnly`) and the resulting target
# directory is shared by every binary. The nixpkgs cross package set for the
# target provides the C compiler/linker (crane wires CC_<target>, AR_<target>
# and CARGO_TARGET_<TARGET>_LINKER for cross package sets), and
# `+crt-static` makes the result a static (static-pie) executable.
{
  pkgs,
  crane,
  toolchain,
  src,
  version,
  binaryNames,
  target,
}:
let
  inherit (pkgs) lib;

  crossPkgs = pkgs.pkgsCross.${target.crossAttr};
  craneLib = (crane.mkLib crossPkgs).overrideToolchain toolchain.mkToolchain;

  envTarget = builtins.replaceStrings [ "-" ] [ "_" ] (lib.toUpper target.rustTarget);

  commonArgs = {
    inherit src version;
    pname = "apollo";
    strictDeps = true;
    # Tests run in the `nextest` check (host target), not in the static build.
    doCheck = false;
    CARGO_BUILD_TARGET = target.rustTarget;
    "CARGO_TARGET_${envTarget}_RUSTFLAGS" = "-C target-feature=+crt-static";
  };

  cargoArtifacts = craneLib.buildDepsOnly (
    commonArgs
    // {
      pname = "apollo-${target.rustTarget}";
      # Only `cargo build` artifacts are needed for release binaries.
      cargoCheckCommand = "true";
    }
  );

  mkBinary =
    name:
    craneLib.buildPackage (
      commonArgs
      // {
        inherit cargoArtifacts;
        pname = name;
        cargoExtraArgs = "--locked --package ${name}";
        passthru = {
          inherit (target) rustTarget dockerArch;
        };
        meta = {
          mainProgram = name;
          description = "${name} (static, ${target.rustTarget})";
          platforms = lib.platforms.linux;
        };
      }
    );
in
{
  inherit craneLib cargoArtifacts;
  # Attribute names come from `binaryNames` alone (no package set needed).
  binaries = builtins.listToAttrs (
    map (name: {
      inherit name;
      value = mkBinary name;
    }) binaryNames
  );
}
