# `.#compose`: compose.nix evaluated at build-time into
#   $out/docker-compose.yaml, $out/docker-compose.json,
#   $out/bin/apollo-write-compose [DEST]   (copies the YAML, default ./docker-compose.yaml)
{
  pkgs,
  composeArgs ? { },
}:
let
  attrs = import ../compose.nix composeArgs;
  services = builtins.attrNames attrs.services;
  json = pkgs.writeText "docker-compose.json" (builtins.toJSON attrs);
  # YAML 1.1 output quotes every string a 1.1 reader could take for a bool.
  yamlFormat = pkgs.formats.yaml_1_1 or pkgs.formats.yaml;
  yaml = (yamlFormat { }).generate "docker-compose.yaml" attrs;

  write = pkgs.writeShellApplication {
    name = "apollo-write-compose";
    runtimeInputs = [ pkgs.coreutils ];
    text = ''
      dest="''${1:-docker-compose.yaml}"
      install -m 0644 ${yaml} "$dest"
      echo "wrote $dest: ${builtins.concatStringsSep " " services}"
      echo "each agent reads APOLLO_DEVICE_KEY from its env_file (not in the repository):"
      ${pkgs.lib.concatMapStrings (s: ''
        echo "  ${s}: ${builtins.head attrs.services.${s}.env_file}"
      '') services}
    '';
  };
in
pkgs.runCommand "apollo-compose"
  {
    passthru = {
      inherit
        attrs
        json
        yaml
        services
        ;
    };
    meta.description = "docker-compose.yaml for the Apollo agents (from compose.nix)";
  }
  ''
    mkdir -p $out/bin
    cp ${yaml} $out/docker-compose.yaml
    cp ${json} $out/docker-compose.json
    ln -s ${write}/bin/apollo-write-compose $out/bin/apollo-write-compose
  ''
