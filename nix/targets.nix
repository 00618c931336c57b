# Static (musl) targets.
#
# Built on a machine of the same architecture (`arch`), a target uses the native package set,
# as crane's `cross-musl` example does: rustc links with the musl startup files and libc.a it
# ships for the target (self-contained linking) through the native cc, and the C and assembly
# of dependencies (ring, psm) are compiled by musl's gcc wrapper from nixpkgs' `musl` package.
# Nothing has to be built besides the project (no cross GCC).
#
# Built on another architecture (aarch64 images from an x86_64 machine), `crossAttr` names the
# nixpkgs `pkgsCross` set whose musl cross GCC compiles the C code and links the binary (crane
# wires it); that GCC may not be in the binary cache.
{
  x86_64 = {
    arch = "x86_64";
    rustTarget = "x86_64-unknown-linux-musl";
    crossAttr = "musl64";
    dockerArch = "amd64";
  };
  aarch64 = {
    arch = "aarch64";
    rustTarget = "aarch64-unknown-linux-musl";
    crossAttr = "aarch64-multiplatform-musl";
    dockerArch = "arm64";
  };
}
