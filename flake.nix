{
  description = "Apollo DeviceProcess: static musl binaries, distroless images, dev shell and checks";

  # Needs Nix >= 2.31.2 (nix/nix-version.nix). Every input is pinned in
  # flake.lock (see docs/PACKAGING.md for how each pin was obtained and which
  # parts were verified on a machine without a Nix store).
  inputs = {
    # NixOS 26.05 release branch.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

    # Cargo builds with dependency caching (dependencies built once, shared).
    # Locked to a master commit after v0.23.4: it has the cross-compilation
    # fix (full cc paths) and handles cargo's new lock files; crane's own test
    # flake.lock at that commit pins the same nixpkgs commit as ours.
    crane.url = "github:ipetkov/crane";

    # Pinned upstream Rust toolchains with extra (musl) targets.
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      crane,
      rust-overlay,
    }:
    let
      # Linux only: the images are Linux images and the binaries are static
      # Linux (musl) executables. Each system builds its own architecture
      # natively; x86_64-linux additionally cross-builds aarch64 images.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      # builtins only, so attribute names can be listed without nixpkgs
      # (nix/tests/check-nix.sh relies on this).
      forSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);

      perSystem = forSystems (
        system:
        import ./nix/per-system.nix {
          inherit
            self
            nixpkgs
            crane
            rust-overlay
            system
            ;
        }
      );
    in
    {
      packages = forSystems (system: perSystem.${system}.packages);
      checks = forSystems (system: perSystem.${system}.checks);
      devShells = forSystems (system: perSystem.${system}.devShells);

      # `compose.nix` as a function, for other flakes:
      #   apollo.lib.compose { devices = [ "tor1-01" ]; }
      # `lib` is one of the community outputs `nix flake check` accepts
      # without checking (since Nix 2.13): no "unknown flake output" warning.
      lib.compose = import ./compose.nix;
    };
}
