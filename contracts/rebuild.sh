#!/usr/bin/env bash
# Rebuilds the bundled contract components with the canonical toolchain and compares them with
# the committed artifacts (contracts/artifacts). Reproducible bytes need the exact toolchain of
# contracts/artifacts/toolchain.env: Debian's rustc-web / cargo-web / rust-web-src packages at
# the recorded version (the Debian route of `trac contract build`), linked with the rust-lld of
# the recorded rustup toolchain.
#
#   contracts/rebuild.sh --check    rebuild into a temporary directory, fail if any byte differs
#   contracts/rebuild.sh --update   rebuild, overwrite the artifacts and record the toolchain
#   contracts/rebuild.sh --install  install the recorded Debian packages (needs root), then --check
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
contracts=(intercom registry probe)
env_file="contracts/artifacts/toolchain.env"
mode="${1:---check}"

# shellcheck source=/dev/null
source "$env_file"

installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

install_toolchain() {
  local pkgs=(rustc-web="$DEBIAN_RUSTC_WEB" cargo-web="$DEBIAN_RUSTC_WEB" rust-web-src="$DEBIAN_RUSTC_WEB")
  if [ "$(installed_version rustc-web)" = "$DEBIAN_RUSTC_WEB" ] \
     && [ "$(installed_version cargo-web)" = "$DEBIAN_RUSTC_WEB" ] \
     && [ "$(installed_version rust-web-src)" = "$DEBIAN_RUSTC_WEB" ]; then
    return 0
  fi
  echo "artifacts: installing ${pkgs[*]}"
  apt-get update -qq || true
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"; then
    echo "error: the artifacts' toolchain (Debian rustc-web $DEBIAN_RUSTC_WEB) is no longer installable." >&2
    echo "Rebuild the artifacts with the current packages: apt-get install rustc-web cargo-web rust-web-src," >&2
    echo "then run contracts/rebuild.sh --update and commit contracts/artifacts." >&2
    exit 1
  fi
}

check_toolchain() {
  local have lld
  have="$(installed_version rustc-web)"
  if [ "$have" != "$DEBIAN_RUSTC_WEB" ]; then
    echo "error: rustc-web $have is installed, the artifacts were built with $DEBIAN_RUSTC_WEB (run with --install)" >&2
    exit 1
  fi
  lld="$(rustc --version)"
  if [ "$lld" != "$RUSTUP_RUSTC" ]; then
    echo "error: the rustup toolchain (for rust-lld) is '$lld', the artifacts were built with '$RUSTUP_RUSTC'" >&2
    exit 1
  fi
}

build_all() {
  local out="$1"
  cargo build -q -p trac-host --bin trac
  local trac
  trac="${CARGO_TARGET_DIR:-$root/target}/debug/trac"
  for c in "${contracts[@]}"; do
    "$trac" contract build "contracts/$c" --toolchain debian --out "$out/$c.wasm" >/dev/null
  done
}

case "$mode" in
  --install)
    install_toolchain
    check_toolchain
    mode=--check
    ;;
esac

case "$mode" in
  --check)
    check_toolchain
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    build_all "$tmp"
    status=0
    for c in "${contracts[@]}"; do
      if cmp -s "$tmp/$c.wasm" "contracts/artifacts/$c.wasm"; then
        echo "artifacts: $c.wasm reproduced byte for byte (sha256 $(sha256sum "$tmp/$c.wasm" | cut -d' ' -f1))"
      else
        echo "error: contracts/artifacts/$c.wasm differs from a rebuild of contracts/$c; run contracts/rebuild.sh --update and commit" >&2
        status=1
      fi
    done
    exit "$status"
    ;;
  --update)
    build_all "$root/contracts/artifacts"
    cat > "$env_file" <<EOT
# Toolchain the committed artifacts were built with (contracts/rebuild.sh reads this file).
DEBIAN_RUSTC_WEB='$(installed_version rustc-web)'
RUSTUP_RUSTC='$(rustc --version)'
EOT
    for c in "${contracts[@]}"; do
      echo "artifacts: contracts/artifacts/$c.wasm $(stat -c %s "contracts/artifacts/$c.wasm") bytes"
    done
    ;;
  *)
    echo "usage: contracts/rebuild.sh [--check|--update|--install]" >&2
    exit 2
    ;;
esac
