# `nix develop`: everything `make demo` and day-to-day work need.
#
# Opening the shell builds nothing of this project (only the toolchain and tools are fetched),
# so a workspace that does not compile mid-edit never locks anyone out of it. The CRD generator
# runs from the working tree through cargo: `make manifests` (cargo run -p apollo-crdgen).
{
  pkgs,
  toolchain,
}:
pkgs.mkShell {
  packages = [
    (toolchain.mkToolchain pkgs)
    pkgs.cargo-nextest
    pkgs.kind
    pkgs.kubectl
    pkgs.kustomize
    pkgs.jq
    pkgs.curl
    pkgs.openssl
    # docker compose v2 as the standalone `docker-compose` (the engine and the `docker` CLI are
    # the host's); scripts/demo-kind.sh uses the host CLI's `compose` plugin when it has one,
    # else this binary.
    pkgs.docker-compose
    pkgs.shellcheck
    pkgs.gnumake
    pkgs.python3
    pkgs.git
  ];

  KIND_CLUSTER = "apollo-dev";

  shellHook = ''
    echo "apollo dev shell: $(rustc --version), kind $(kind version -q 2>/dev/null || echo '?'), kubectl $(kubectl version --client -o json 2>/dev/null | jq -r .clientVersion.gitVersion 2>/dev/null || echo '?')"
    echo "  KIND_CLUSTER=$KIND_CLUSTER; CRDs: make manifests (cargo run -p apollo-crdgen -- --out-dir k8s/crds)"
  '';
}
