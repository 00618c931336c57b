# Evaluates nix/images.nix with a stand-in for nixpkgs (a few lib functions,
# dockerTools.buildLayeredImage / writeShellApplication / runCommand that
# return their arguments), so the image contents, configs and scripts can be
# checked without a Nix store: see images_check.py.
{ stubDir }:
let
  lib = {
    concatMapStrings = f: l: builtins.concatStringsSep "" (map f l);
    concatMapStringsSep =
      sep: f: l:
      builtins.concatStringsSep sep (map f l);
  };
  pkgs = {
    inherit lib;
    kind = "${stubDir}/kind-package";
    gzip = "${stubDir}/gzip-package";
    dockerTools.buildLayeredImage =
      args: args // { outPath = "${stubDir}/archives/${baseNameOf args.name}-${args.tag}.tar"; };
    writeShellApplication = args: args // { outPath = "${stubDir}/apps/${args.name}"; };
    runCommand = name: env: script: { inherit name env script; };
  };
  spec = import ../image-spec.nix {
    version = "0.1.0";
    revision = "0123456789abcdef";
    source = "https://example.invalid/apollo";
    license = "Apache-2.0";
  };
  binaries = builtins.listToAttrs (
    map (name: {
      inherit name;
      value = "${stubDir}/bins/${name}";
    }) [ "apollo-controller" "apollo-gateway" "apollo-agent" ]
  );
  result = import ../images.nix {
    inherit pkgs spec binaries;
    dockerArch = "amd64";
  };
  field = image: {
    inherit (image)
      name
      tag
      config
      architecture
      compressor
      includeStorePaths
      extraCommands
      fakeRootCommands
      ;
    archive = image.outPath;
  };
in
{
  inherit (result) name script;
  inherit (spec) uid user passwd;
  specImages = map (i: { inherit (i) key ref file binary entrypoint files; }) spec.images;
  images = builtins.mapAttrs (_: field) result.env.passthru.images;
  loadIntoKind = {
    inherit (result.env.passthru.loadIntoKind) name text runtimeInputs;
  };
  loadIntoDocker = {
    inherit (result.env.passthru.loadIntoDocker) name text;
  };
}
