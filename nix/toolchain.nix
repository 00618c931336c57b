# The one Rust toolchain used by the static builds, the checks and the dev
# shell (from rust-overlay, so the version does not depend on nixpkgs).
rec {
  channel = "stable";
  version = "1.95.0";
  targets = [
    "x86_64-unknown-linux-musl"
    "aarch64-unknown-linux-musl"
  ];
  extensions = [
    "clippy"
    "rustfmt"
    "rust-src"
  ];

  # For crane's `overrideToolchain` (called with each spliced package set)
  # and for the dev shell.
  mkToolchain = p: p.rust-bin.${channel}.${version}.minimal.override { inherit targets extensions; };
}
