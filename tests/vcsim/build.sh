#!/usr/bin/env bash
# Builds tests/vcsim/main.go (govmomi's vSphere simulator behind a tiny
# main) offline from Debian's packages: golang-go and
# golang-github-vmware-govmomi-dev (the govmomi source in /usr/share/gocode).
#
#   tests/vcsim/build.sh OUT
#
# builds OUT once: it is rebuilt only when main.go or this script is newer.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT}"
if [ -x "$out" ] && [ "$out" -nt "$here/main.go" ] && [ "$out" -nt "$here/build.sh" ]; then
    exit 0
fi
gocode=/usr/share/gocode/src
if ! command -v go >/dev/null || [ ! -d "$gocode/github.com/vmware/govmomi/simulator" ]; then
    echo "build.sh: needs Debian's golang-go and golang-github-vmware-govmomi-dev (apt-get install golang-go golang-github-vmware-govmomi-dev)" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# GOPATH mode, as Debian builds Go packages: the sources in /usr/share/gocode
# are found by import path, and nothing is fetched.
mkdir -p "$work/src/vcsim"
cp "$here/main.go" "$work/src/vcsim/"
mkdir -p "$(dirname "$out")"
(
    cd "$work/src/vcsim"
    GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOFLAGS='' GOPROXY=off \
        GOCACHE="${GOCACHE:-$work/cache}" CGO_ENABLED=0 \
        go build -o "$out.tmp" .
)
mv "$out.tmp" "$out"
