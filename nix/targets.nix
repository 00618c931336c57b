# Static (musl) targets. `crossAttr` names the nixpkgs `pkgsCross` set whose
# C toolchain compiles C/assembly in dependencies (ring) and links the binary.
{
  x86_64 = {
    rustTarget = "x86_64-unknown-linux-musl";
    crossAttr = "musl64";
    dockerArch = "amd64";
  };
  aarch64 = {
    rustTarget = "aarch64-unknown-linux-musl";
    crossAttr = "aarch64-multiplatform-musl";
    dockerArch = "arm64";
  };
}
