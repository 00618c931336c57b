# Distroless images (nixpkgs dockerTools) and the `images` output: one
# uncompressed docker-archive per image (`docker load -i`, `kind load
# image-archive`), `images.txt` (archive -> image reference), `SIZES.txt`, and
# the `load-into-kind` / `load-into-docker` scripts.
#
# `includeStorePaths = false`: the image gets no /nix/store at all, only the
# files written below (the static binary is copied, not symlinked). The
# `static-binaries` check proves the binaries need nothing else.
{
  pkgs,
  spec, # import ./image-spec.nix { ... }
  binaries, # attrset: Cargo package name -> static binary derivation
  dockerArch, # "amd64" | "arm64"
  nameSuffix ? "",
}:
let
  inherit (pkgs) lib;

  # Images whose binary exists in this workspace.
  wanted = builtins.filter (i: binaries ? ${i.binary}) spec.images;

  mkImage =
    image:
    pkgs.dockerTools.buildLayeredImage {
      inherit (image) name tag config;
      architecture = dockerArch;
      compressor = "none";
      includeStorePaths = false;
      extraCommands = ''
        mkdir -p etc usr/local/bin home/nonroot tmp
        cat > etc/passwd <<'APOLLO_EOF'
        ${spec.passwd}APOLLO_EOF
        cat > etc/group <<'APOLLO_EOF'
        ${spec.group}APOLLO_EOF
        chmod 0644 etc/passwd etc/group
        cp ${binaries.${image.binary}}/bin/${image.binary} usr/local/bin/${image.binary}
        chmod 0555 usr/local/bin/${image.binary}
        chmod 1777 tmp
      '';
      fakeRootCommands = ''
        chown ${spec.user} home/nonroot
      '';
    };

  built = map (image: image // { drv = mkImage image; }) wanted;

  # "archive reference" lines baked into the scripts.
  archiveList = lib.concatMapStrings (i: "${i.drv} ${i.ref}\n") built;

  loadIntoKind = pkgs.writeShellApplication {
    name = "load-into-kind";
    runtimeInputs = [ pkgs.kind ];
    text = ''
      cluster="''${KIND_CLUSTER:-apollo-dev}"
      usage() {
        echo "usage: load-into-kind [--name CLUSTER]   (default: \$KIND_CLUSTER, else apollo-dev)"
        echo "loads: ${lib.concatMapStringsSep " " (i: i.ref) built}"
      }
      while [ "$#" -gt 0 ]; do
        case "$1" in
          --name)
            if [ "$#" -lt 2 ]; then usage >&2; exit 2; fi
            cluster="$2"; shift 2 ;;
          --name=*) cluster="''${1#--name=}"; shift ;;
          -h|--help) usage; exit 0 ;;
          *) echo "load-into-kind: unknown argument: $1" >&2; usage >&2; exit 2 ;;
        esac
      done
      while read -r archive ref; do
        [ -n "$archive" ] || continue
        echo "load-into-kind: $ref -> kind cluster $cluster"
        kind load image-archive "$archive" --name "$cluster"
      done <<'APOLLO_EOF'
      ${archiveList}APOLLO_EOF
    '';
  };

  # Uses the docker CLI on PATH (the engine is the host's).
  loadIntoDocker = pkgs.writeShellApplication {
    name = "load-into-docker";
    text = ''
      if [ "$#" -gt 0 ]; then
        echo "usage: load-into-docker   (loads: ${lib.concatMapStringsSep " " (i: i.ref) built})" >&2
        exit 2
      fi
      while read -r archive ref; do
        [ -n "$archive" ] || continue
        echo "load-into-docker: $ref"
        docker load -i "$archive"
      done <<'APOLLO_EOF'
      ${archiveList}APOLLO_EOF
    '';
  };
in
pkgs.runCommand "apollo-images${nameSuffix}"
  {
    nativeBuildInputs = [ pkgs.gzip ];
    passthru = {
      images = builtins.listToAttrs (
        map (i: {
          name = i.key;
          value = i.drv;
        }) built
      );
      inherit loadIntoKind loadIntoDocker;
    };
    meta.description = "Apollo images (${dockerArch}) as docker archives, with load scripts";
  }
  ''
    mkdir -p $out
    ${lib.concatMapStrings (i: ''
      ln -s ${i.drv} $out/${i.file}
      printf '%s\t%s\n' ${i.file} ${i.ref} >> $out/images.txt
    '') built}
    ln -s ${loadIntoKind}/bin/load-into-kind $out/load-into-kind
    ln -s ${loadIntoDocker}/bin/load-into-docker $out/load-into-docker

    # Image sizes: the archive is uncompressed, so its size is the image size;
    # the gzip column is what a registry push would roughly transfer.
    printf 'archive\timage\tbytes\tgzip_bytes\n' > $out/SIZES.txt
    ${lib.concatMapStrings (i: ''
      printf '%s\t%s\t%s\t%s\n' ${i.file} ${i.ref} "$(stat -L -c %s ${i.drv})" "$(gzip -9 -c ${i.drv} | wc -c)" >> $out/SIZES.txt
    '') built}
  ''
