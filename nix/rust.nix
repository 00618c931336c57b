# Static release binaries for one musl target, built with crane.
#
# Dependencies are compiled once per profile (`buildDepsOnly`) and the resulting target
# directory is shared by every binary of that profile. `+crt-static` makes the result a static
# (static-pie) executable. How C code is compiled and what links depends on whether the target
# has the build machine's architecture (nix/targets.nix):
#
# - same architecture (crane's `cross-musl` example): the native package set and toolchain;
#   rustc links with its own musl startup files and libc.a (self-contained) through the native
#   cc; `CC_<target>` is musl-gcc from nixpkgs' `musl`, which the cc crate would otherwise look
#   for as `<arch>-linux-musl-gcc` (ring's and psm's C and assembly);
# - other architecture: nixpkgs' cross set for the target; crane wires `CC_<target>`,
#   `AR_<target>` and `CARGO_TARGET_<TARGET>_LINKER` to its musl cross GCC.
#
# The agent is built with the `release-small` profile, as `make build` does (its own
# dependency build: the profile's opt-level and LTO differ); every other binary with `release`.
{
  pkgs,
  crane,
  toolchain,
  src,
  version,
  binaryNames,
  target,
  hostArch, # architecture of the build machine: "x86_64" | "aarch64"
}:
let
  inherit (pkgs) lib;

  native = target.arch == hostArch;
  buildPkgs = if native then pkgs else pkgs.pkgsCross.${target.crossAttr};
  craneLib = (crane.mkLib buildPkgs).overrideToolchain toolchain.mkToolchain;

  envTarget = builtins.replaceStrings [ "-" ] [ "_" ] (lib.toUpper target.rustTarget);
  ccTarget = builtins.replaceStrings [ "-" ] [ "_" ] target.rustTarget;

  # Per-binary profile (Cargo.toml [profile.*]); anything not listed uses `release`.
  profiles = {
    apollo-agent = "release-small";
  };
  profileOf = name: profiles.${name} or "release";

  commonArgs = {
    inherit src version;
    pname = "apollo";
    strictDeps = true;
    # Tests run in the `nextest` check (host target), not in the static build.
    doCheck = false;
    CARGO_BUILD_TARGET = target.rustTarget;
    "CARGO_TARGET_${envTarget}_RUSTFLAGS" = "-C target-feature=+crt-static";
  }
  // (
    if native then
      {
        # musl-gcc runs the native gcc with musl's headers (specs file); the link is rustc's.
        "CC_${ccTarget}" = "${pkgs.musl.dev}/bin/musl-gcc";
      }
    else
      { }
  );

  # One dependency build per profile in use, holding only what its binaries need.
  depsFor =
    profile:
    let
      names = builtins.filter (n: profileOf n == profile) binaryNames;
    in
    craneLib.buildDepsOnly (
      commonArgs
      // {
        pname = "apollo-${target.rustTarget}${if profile == "release" then "" else "-${profile}"}";
        CARGO_PROFILE = profile;
        # Only `cargo build` artifacts are needed for release binaries.
        cargoCheckCommand = "true";
        cargoExtraArgs = "--locked ${lib.concatMapStringsSep " " (n: "--package ${n}") names}";
      }
    );
  usedProfiles = lib.unique (map profileOf binaryNames);
  cargoArtifactsByProfile = builtins.listToAttrs (
    map (p: {
      name = p;
      value = depsFor p;
    }) usedProfiles
  );

  mkBinary =
    name:
    craneLib.buildPackage (
      commonArgs
      // {
        pname = name;
        CARGO_PROFILE = profileOf name;
        cargoArtifacts = cargoArtifactsByProfile.${profileOf name};
        cargoExtraArgs = "--locked --package ${name}";
        passthru = {
          inherit (target) rustTarget dockerArch;
          profile = profileOf name;
        };
        meta = {
          mainProgram = name;
          description = "${name} (static, ${target.rustTarget}, ${profileOf name} profile)";
          platforms = lib.platforms.linux;
        };
      }
    );
in
{
  inherit craneLib;
  cargoArtifacts = cargoArtifactsByProfile;
  # Attribute names come from `binaryNames` alone (no package set needed).
  binaries = builtins.listToAttrs (
    map (name: {
      inherit name;
      value = mkBinary name;
    }) binaryNames
  );
}
