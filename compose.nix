# Agents for docker compose, one service per device. Nix builtins only:
#
#   nix-instantiate --eval --strict --json compose.nix > docker-compose.yaml
#   nix-instantiate --eval --strict --json compose.nix \
#     --arg devices '[ "tor1-01" "tor1-02" "tor1-03" ]' \
#     --argstr gatewayUrl http://host.docker.internal:18080
#
# (JSON is valid compose YAML.) The flake wraps this as `.#compose`, which
# writes docker-compose.yaml with the agent image from the flake.
#
# Each agent reads its device key from `<keyDir>/<device>.env`, a file that is
# NOT in the repository, e.g. keys/tor1-01.env containing
#   APOLLO_DEVICE_KEY=<hex or base64 key issued for tor1-01>
# Agents get no Kubernetes credentials, no volumes and no service account:
# they only talk HTTP to the gateway.
{
  devices ? [
    "tor1-01"
    "tor1-02"
  ],
  gatewayUrl ? "http://host.docker.internal:18080",
  image ? "apollo/agent:dev",
  keyDir ? "./keys",
}:
let
  # Device names become compose service names and file names: keep them to
  # lower-case DNS labels (as Kubernetes object names are).
  validDevice = d: builtins.isString d && builtins.match "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?" d != null;

  invalid = builtins.filter (d: !validDevice d) devices;

  duplicates = builtins.filter (d: builtins.length (builtins.filter (x: x == d) devices) > 1) devices;

  # "./keys/" and "./keys" mean the same directory.
  trimSlash =
    s:
    let
      n = builtins.stringLength s;
    in
    if n > 1 && builtins.substring (n - 1) 1 s == "/" then trimSlash (builtins.substring 0 (n - 1) s) else s;
  keyDir' = trimSlash keyDir;

  check =
    cond: msg: value:
    if cond then value else throw "compose.nix: ${msg}";

  service = device: {
    name = "agent-${device}";
    value = {
      inherit image;
      # The image is loaded locally (`nix build .#images`, then load-into-docker).
      pull_policy = "never";
      environment = {
        APOLLO_DEVICE_NAME = device;
        APOLLO_GATEWAY_URL = gatewayUrl;
      };
      # APOLLO_DEVICE_KEY comes from here; the file is not in the repository.
      env_file = [ "${keyDir'}/${device}.env" ];
      extra_hosts = [ "host.docker.internal:host-gateway" ];
      network_mode = "bridge";
      restart = "unless-stopped";
      read_only = true;
      user = "65532:65532";
      cap_drop = [ "ALL" ];
      security_opt = [ "no-new-privileges:true" ];
      labels = {
        "io.apollo.device" = device;
      };
    };
  };
in
check (builtins.isList devices) "devices must be a list of strings" (
  check (devices != [ ]) "devices must not be empty" (
    check (invalid == [ ])
      "invalid device name(s) ${builtins.toJSON invalid}: use lower-case letters, digits and '-' (a DNS label)"
      (
        check (duplicates == [ ]) "duplicate device name(s) ${builtins.toJSON duplicates}" (
          check (builtins.isString gatewayUrl && builtins.match "https?://[^ ]+" gatewayUrl != null)
            "gatewayUrl must be an http:// or https:// URL, got ${builtins.toJSON gatewayUrl}"
            (
              check (builtins.isString image && image != "") "image must be a non-empty string" (
                check (builtins.isString keyDir && keyDir != "") "keyDir must be a non-empty string" {
                  # No top-level `name`: older compose clients (docker-compose
                  # 1.29, Debian 12) reject it; the project is named after the
                  # directory or `docker compose -p NAME`.
                  services = builtins.listToAttrs (map service devices);
                }
              )
            )
        )
      )
  )
)
