# Everything the flake exposes for one system.
#
# Attribute names (which packages and checks exist) are computed with Nix
# builtins only; nixpkgs, crane and rust-overlay are only needed for values.
# nix/tests/check-nix.sh lists the outputs this way without a Nix store.
{
  self,
  nixpkgs,
  crane,
  rust-overlay,
  system,
}:
let
  root = ../.;
  meta = import ./meta.nix { inherit root; };
  toolchain = import ./toolchain.nix;
  targets = import ./targets.nix;

  arch = builtins.head (builtins.split "-" system); # "x86_64" | "aarch64"
  nativeTarget = targets.${arch};

  nixVersion = import ./nix-version.nix;

  # Every value below needs nixpkgs; an unsupported Nix stops here with a clear message.
  pkgs =
    assert nixVersion.check nixVersion.current;
    import nixpkgs {
      localSystem = system;
      overlays = [ rust-overlay.overlays.default ];
    };

  src = import ./source.nix {
    inherit (pkgs) lib;
    inherit root;
  };
  testSrc = import ./source.nix {
    inherit (pkgs) lib;
    inherit root;
    forTests = true;
  };

  revision = self.rev or self.dirtyRev or "unknown";

  imageSpec = import ./image-spec.nix {
    inherit (meta) version license;
    inherit revision;
    source = meta.repository;
  };

  mkStatic =
    target:
    import ./rust.nix {
      inherit
        pkgs
        crane
        toolchain
        src
        target
        ;
      inherit (meta) version;
      binaryNames = meta.binaries;
      hostArch = arch;
    };

  native = mkStatic nativeTarget;

  withCrdgen = meta.hasBinary "apollo-crdgen";
  crdgen = native.binaries.apollo-crdgen;

  images = import ./images.nix {
    inherit pkgs;
    spec = imageSpec;
    binaries = native.binaries;
    inherit (nativeTarget) dockerArch;
  };

  agentImage = builtins.head (builtins.filter (i: i.key == "agent") imageSpec.images);

  compose = import ./compose-package.nix {
    inherit pkgs;
    composeArgs.image = agentImage.ref;
  };

  # x86_64-linux also cross-builds the aarch64 binaries and images (the musl
  # cross GCC comes from nixpkgs' pkgsCross.aarch64-multiplatform-musl).
  # aarch64-linux builds aarch64 natively (nix/targets.nix).
  cross =
    if arch == "x86_64" then
      let
        aarch64 = mkStatic targets.aarch64;
      in
      {
        images-aarch64 = import ./images.nix {
          inherit pkgs;
          spec = imageSpec;
          binaries = aarch64.binaries;
          inherit (targets.aarch64) dockerArch;
          nameSuffix = "-aarch64";
        };
      }
      // builtins.listToAttrs (
        map (name: {
          name = "${name}-aarch64";
          value = aarch64.binaries.${name};
        }) meta.binaries
      )
    else
      { };
in
{
  packages =
    native.binaries
    // {
      inherit images compose;
      # All static binaries in one bin/ directory.
      default = pkgs.symlinkJoin {
        name = "apollo-${meta.version}";
        paths = builtins.attrValues native.binaries;
      };
    }
    // (if withCrdgen then { crds = import ./crds.nix { inherit (pkgs) runCommand; inherit crdgen; inherit (meta) version; }; } else { })
    // cross;

  checks = import ./checks.nix {
    src = testSrc;
    inherit
      pkgs
      crane
      toolchain
      withCrdgen
      crdgen
      compose
      ;
    inherit (meta) version;
    staticBinaries = native.binaries;
  }
  # `nix flake check` also builds the images (and so every release binary).
  // {
    inherit images;
  };

  # Builds nothing of the project: the CRD generator runs through cargo in the shell.
  devShells.default = import ./devshell.nix {
    inherit pkgs toolchain;
  };
}
