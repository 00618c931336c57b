# What each distroless image contains, as plain data (Nix builtins only), so
# it can be evaluated and asserted on without nixpkgs (nix/tests/check-nix.sh)
# and turned into images by nix/images.nix.
#
# An image holds exactly: the static binary at /usr/local/bin/<binary>,
# /etc/passwd and /etc/group with a non-root user 65532 ("nonroot"), its home
# directory, and an empty /tmp. No shell, no package manager, no libc (the
# binaries are static), no CA bundle (the binaries use rustls with CAs they are
# given: the in-cluster service-account CA for the Kubernetes API; the agent
# talks plain HTTP to the gateway in the demo).
{
  version,
  revision,
  source,
  license,
  tag ? "dev",
}:
let
  uid = 65532;
  user = "${toString uid}:${toString uid}";

  passwd = ''
    root:x:0:0:root:/root:/sbin/nologin
    nonroot:x:${toString uid}:${toString uid}:nonroot:/home/nonroot:/sbin/nologin
  '';
  group = ''
    root:x:0:
    nonroot:x:${toString uid}:
  '';

  mkImage =
    {
      key,
      name,
      binary,
      description,
      ports ? [ ],
    }:
    {
      inherit
        key
        name
        tag
        binary
        ;
      ref = "${name}:${tag}";
      file = "${key}.tar";
      entrypoint = "/usr/local/bin/${binary}";
      # Paths in the image root besides the directories leading to them.
      files = [
        "etc/passwd"
        "etc/group"
        "usr/local/bin/${binary}"
      ];
      config = {
        Entrypoint = [ "/usr/local/bin/${binary}" ];
        User = user;
        WorkingDir = "/home/nonroot";
        Env = [ "HOME=/home/nonroot" ];
        Labels = {
          "org.opencontainers.image.title" = binary;
          "org.opencontainers.image.description" = description;
          "org.opencontainers.image.source" = source;
          "org.opencontainers.image.version" = version;
          "org.opencontainers.image.revision" = revision;
          "org.opencontainers.image.licenses" = license;
        };
      }
      // (
        if ports == [ ] then
          { }
        else
          {
            ExposedPorts = builtins.listToAttrs (
              map (p: {
                name = "${toString p}/tcp";
                value = { };
              }) ports
            );
          }
      );
    };

  controller = {
    binary = "apollo-controller";
    description = "Apollo DeviceProcess controller (DeviceProcessDeployment -> DeviceProcess fan-out)";
  };
in
{
  inherit
    uid
    user
    passwd
    group
    ;

  # Names and tags match the k8s/ manifests. The controller is also tagged
  # apollo-deviceprocess-controller:dev (as in the demo runbook): same
  # contents and config (labels name the binary, not the tag), hence the same
  # image ID, in an archive of its own.
  images = [
    (mkImage (controller // { key = "controller"; name = "apollo/controller"; }))
    (mkImage (
      controller
      // {
        key = "controller-alias";
        name = "apollo-deviceprocess-controller";
      }
    ))
    (mkImage {
      key = "gateway";
      name = "apollo/gateway";
      binary = "apollo-gateway";
      description = "Apollo DeviceProcess device gateway (the only component that talks to Kubernetes)";
      ports = [ 8080 ];
    })
    (mkImage {
      key = "agent";
      name = "apollo/agent";
      binary = "apollo-agent";
      description = "Apollo DeviceProcess device agent (talks HTTP to the gateway only)";
    })
  ];
}
