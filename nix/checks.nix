# `nix flake check`: clippy -D warnings, nextest, rustfmt, CRDs up to date,
# compose.nix evaluates to a valid compose file, and the release binaries are
# static. Clippy, tests and fmt run for the host target with one shared
# dependency build (dev profile); the static binaries come from nix/rust.nix.
{
  pkgs,
  crane,
  toolchain,
  src,
  version,
  withCrdgen, # bool, known without building anything
  crdgen,
  compose, # the `.#compose` package
  staticBinaries, # attrset: name -> static binary derivation
}:
let
  inherit (pkgs) lib;

  craneLib = (crane.mkLib pkgs).overrideToolchain toolchain.mkToolchain;

  commonArgs = {
    inherit src version;
    pname = "apollo";
    strictDeps = true;
    CARGO_PROFILE = "dev";
  };

  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  devices = builtins.map (s: lib.removePrefix "agent-" s) compose.services;
  firstService = compose.attrs.services.${builtins.head compose.services};
in
{
  clippy = craneLib.cargoClippy (
    commonArgs
    // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--all-targets -- --deny warnings";
    }
  );

  # One process per test, no network, HOME=/homeless-shelter, no /usr/bin/env
  # and no /bin/bash: the tests find bash and their tools on PATH, pick their
  # own ports and work in their own temporary directories.
  # nix/tests/nextest-sandbox.sh runs the suite in the same conditions
  # without Nix (make test-sandbox, CI).
  nextest = craneLib.cargoNextest (
    commonArgs
    // {
      inherit cargoArtifacts;
      # Tests shell out to kubectl (against the development API server),
      # python3 (the protocol's independent implementation), curl (readiness
      # probes) and shellcheck (scripts/); bash and coreutils are stdenv's.
      nativeBuildInputs = [
        pkgs.kubectl
        pkgs.python3
        pkgs.curl
        pkgs.shellcheck
      ];
      # nextest has just built every binary of the workspace: the demo tests
      # use them instead of running cargo themselves.
      APOLLO_DEMO_SKIP_BUILD = "1";
    }
  );

  fmt = craneLib.cargoFmt {
    inherit src version;
    pname = "apollo";
  };

  # compose.nix evaluated (at eval time, by building `compose`), checked by
  # the same policy/structure test as nix/tests/check-nix.sh, and validated by
  # the docker compose v2 client (`config` needs no engine).
  compose =
    pkgs.runCommand "apollo-compose-check"
      {
        nativeBuildInputs = [
          pkgs.python3
          pkgs.docker-compose
        ];
      }
      ''
        python3 ${./tests/compose_check.py} ${compose}/docker-compose.json \
          --devices ${lib.concatStringsSep "," devices} \
          --gateway ${lib.escapeShellArg firstService.environment.APOLLO_GATEWAY_URL} \
          --image ${lib.escapeShellArg firstService.image}
        mkdir project && cd project
        cp ${compose}/docker-compose.yaml docker-compose.yaml
        ${lib.concatMapStrings (s: ''
          mkdir -p "$(dirname ${lib.escapeShellArg (builtins.head compose.attrs.services.${s}.env_file)})"
          echo APOLLO_DEVICE_KEY=00 > ${lib.escapeShellArg (builtins.head compose.attrs.services.${s}.env_file)}
        '') compose.services}
        export HOME=$TMPDIR DOCKER_CONFIG=$TMPDIR/docker
        docker-compose -f docker-compose.yaml config --quiet
        touch $out
      '';

  # No program interpreter and no shared libraries: the images carry nothing
  # but these files.
  static-binaries =
    pkgs.runCommand "apollo-static-binaries"
      {
        nativeBuildInputs = [ pkgs.binutils-unwrapped ];
      }
      ''
        ${lib.concatMapStrings (name: ''
          bin=${staticBinaries.${name}}/bin/${name}
          if readelf -l "$bin" | grep -q 'INTERP'; then
            echo "$bin has a program interpreter: not static" >&2; exit 1
          fi
          if readelf -d "$bin" | grep -q '(NEEDED)'; then
            echo "$bin needs shared libraries: not static" >&2; exit 1
          fi
          echo "static: $bin ($(stat -c %s "$bin") bytes)"
        '') (builtins.attrNames staticBinaries)}
        touch $out
      '';
}
// (
  if !withCrdgen then
    { }
  else
    {
      # k8s/crds (and k8s-pre-1.31/, the variant for older servers) match what the
      # generator produces now.
      crds-up-to-date =
        pkgs.runCommand "apollo-crds-up-to-date"
          {
            nativeBuildInputs = [ crdgen ];
          }
          ''
            cp -r ${src} source
            chmod -R u+w source
            cd source
            apollo-crdgen --out-dir k8s/crds --check --variants
            touch $out
          '';
    }
)
