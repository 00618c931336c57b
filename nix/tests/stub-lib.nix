# The few nixpkgs `lib` functions the flake's own files use, re-implemented
# with builtins for the stubbed evaluation in flake-stub.nix (pass the real
# nixpkgs lib instead with --arg lib 'import <path>/lib').
let
  upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  lower = "abcdefghijklmnopqrstuvwxyz";
  chars = s: builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s);
in
{
  toUpper = builtins.replaceStrings (chars lower) (chars upper);
  removePrefix =
    prefix: s:
    let
      n = builtins.stringLength prefix;
    in
    if builtins.substring 0 n s == prefix then builtins.substring n (builtins.stringLength s - n) s else s;
  escapeShellArg = s: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s)}'";
  concatStringsSep = builtins.concatStringsSep;
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
  concatMapStrings = f: l: builtins.concatStringsSep "" (map f l);
  concatMapStringsSep =
    sep: f: l:
    builtins.concatStringsSep sep (map f l);
  platforms.linux = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  fileset = {
    maybeMissing = p: "${baseNameOf p}?";
    unions = map (x: if builtins.isPath x then baseNameOf x else x);
    # A source tree stand-in: a fake store path naming the files it holds.
    toSource = args: "/stub/source:${builtins.toJSON args.fileset}";
  };
}
