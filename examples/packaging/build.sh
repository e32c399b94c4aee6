#!/usr/bin/env bash
# Builds reimage's packages with the ecosystem's tools:
#
#   bash examples/packaging/build.sh [deb|rpm|all]     (default: all)
#
# leaves target/packaging/reimage_VERSION-1_ARCH.deb (cargo-deb) and
# target/packaging/reimage-VERSION-1.ARCH.rpm (cargo-generate-rpm), and
# prints their paths. The package metadata is in Cargo.toml
# ([package.metadata.deb], [package.metadata.generate-rpm]).
#
# It installs the two cargo subcommands at the pinned versions below once
# (`cargo install --locked`); a later run finds them and builds nothing.
# The .deb's Depends come from dpkg-shlibdeps (Debian's dpkg-dev).
#
# The binary is the one this machine builds: build the .rpm on the oldest
# RHEL-family release you install it on (its glibc and OpenSSL), the .deb
# on the oldest Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/../.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

what=${1:-all}
case "$what" in
deb | rpm | all) ;;
*)
    echo "usage: $0 [deb|rpm|all]" >&2
    exit 64
    ;;
esac

# tool SUBCOMMAND CRATE VERSION: installs `cargo SUBCOMMAND` unless this
# version is there already.
tool() {
    local have
    have=$(cargo "$1" --version 2>/dev/null || true)
    case "$have" in
    *" $3") return 0 ;;
    esac
    echo "installing $2 $3 (once)" >&2
    cargo install --quiet --locked "$2" --version "$3"
}

if [ "$what" != rpm ]; then
    tool deb cargo-deb "$CARGO_DEB_VERSION"
    if ! command -v dpkg-shlibdeps >/dev/null; then
        echo "dpkg-shlibdeps is missing: apt-get install dpkg-dev" >&2
        exit 1
    fi
fi
if [ "$what" != deb ]; then
    tool generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
    if ! command -v strip >/dev/null; then
        echo "strip is missing: install binutils" >&2
        exit 1
    fi
fi

cargo build --release --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/reimage"

# The assets Cargo.toml names under target/packaging/: completions from the
# binary being packaged, man pages gzipped (-n: no name or time inside, so
# the same page gives the same bytes), and for the .rpm the binary stripped
# (cargo-deb strips the .deb's itself; cargo-generate-rpm does not).
out=target/packaging
rm -rf "$out"
mkdir -p "$out/completions" "$out/man"
"$bin" completions bash >"$out/completions/reimage.bash"
"$bin" completions zsh >"$out/completions/_reimage"
"$bin" completions fish >"$out/completions/reimage.fish"
gzip -9n -c man/reimage.1 >"$out/man/reimage.1.gz"
gzip -9n -c man/reimage.toml.5 >"$out/man/reimage.toml.5.gz"
if [ "$what" != deb ]; then
    strip -o "$out/reimage" "$bin"
fi

if [ "$what" != rpm ]; then
    cargo deb --no-build --quiet --output "$out/" >&2
fi
if [ "$what" != deb ]; then
    cargo generate-rpm --output "$out/" >&2
fi
shopt -s nullglob
for f in "$out"/*.deb "$out"/*.rpm; do
    echo "$f"
done
