# `nix develop`: everything `make demo` and day-to-day work need.
{
  pkgs,
  toolchain,
  withCrdgen,
  crdgen, # static apollo-crdgen from this flake (used when withCrdgen)
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
    pkgs.docker-compose # docker compose v2 client (`docker-compose`); the engine is the host's
    pkgs.shellcheck
    pkgs.gnumake
    pkgs.python3
    pkgs.git
  ]
  ++ (if withCrdgen then [ crdgen ] else [ ]);

  KIND_CLUSTER = "apollo-dev";

  shellHook = ''
    echo "apollo dev shell: $(rustc --version), kind $(kind version -q 2>/dev/null || echo '?'), kubectl $(kubectl version --client -o json 2>/dev/null | jq -r .clientVersion.gitVersion 2>/dev/null || echo '?')"
    echo "  KIND_CLUSTER=$KIND_CLUSTER; CRD generator: $(command -v apollo-crdgen || echo 'cargo run -p apollo-crdgen --')"
  '';
}
