# The oldest Nix the flake supports, and the guard that says so before anything is built.
#
# crane, at the commit locked in flake.lock, "dropped compatibility for Nix versions below
# 2.31.2" (its CHANGELOG); its CI runs Nix 2.34.7 (the Nix of nixos-26.05) and the latest
# release. nix/tests/check-nix.sh checks that docs/PACKAGING.md states this floor and, when
# crane's source is at hand (APOLLO_NIX_SOURCES), that crane's CHANGELOG at the locked commit
# names the same version.
rec {
  minimum = "2.31.2";

  # The Nix doing the evaluation. APOLLO_ASSUME_NIX_VERSION stands in for it only where
  # builtins.getEnv reads the environment: non-flake (impure) evaluation, which is how the
  # offline checks evaluate the flake with an older Nix. Flake evaluation is pure: there it is
  # always builtins.nixVersion.
  current =
    let
      assumed = builtins.getEnv "APOLLO_ASSUME_NIX_VERSION";
    in
    if assumed != "" then assumed else builtins.nixVersion;

  # true, or an evaluation error naming both versions.
  check =
    version:
    if builtins.compareVersions version minimum >= 0 then
      true
    else
      throw "apollo: this flake needs Nix >= ${minimum} (crane, locked in flake.lock, supports no older Nix); this is Nix ${version}. Upgrade Nix (docs/PACKAGING.md).";
}
