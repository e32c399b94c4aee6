#!/usr/bin/env bash
# The packages install like a system tool: builds the .deb and the .rpm with
# examples/packaging/build.sh, installs the .deb with dpkg, checks what an
# admin gets (binary, man pages, completions, the config file as a conffile
# that passes `reimage check` and survives an upgrade, the state directory
# root-only), purges it, and checks the .rpm's file list and flags.
# .ci/run calls it after `cargo test`; it needs root (dpkg -i).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

fail() {
    echo "packages: FAIL: $*" >&2
    exit 1
}
# expect WHAT ACTUAL WANTED
expect() {
    [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
    echo "packages: ok: $1"
}

[ "$(id -u)" = 0 ] || fail "run as root: it installs the .deb with dpkg -i"

export DEBIAN_FRONTEND=noninteractive
. examples/lib/apt.sh
# dpkg-dev: dpkg-shlibdeps for the .deb's Depends. man-db: man -w.
# rpm, rpm2cpio, cpio: rpm -qp reads the .rpm, rpm2cpio unpacks it.
apt_install dpkg-dev man-db rpm rpm2cpio cpio

# Purge only what a run of this script left.
if [ "$(dpkg-query -W -f='${db:Status-Status}' reimage 2>/dev/null)" = installed ]; then
    dpkg --purge reimage >/dev/null
fi

# The package must create /var/lib/reimage itself, but this machine may have
# one already (the SSH tests' computer is this machine, and post-load
# writes its marker there), and tests may write it while this runs. So the
# rest runs in a mount namespace whose /var/lib is a tmpfs holding every
# entry of the real one but reimage: dpkg's database and the files the
# package installs are the machine's, its state directory is the test's.
if [ -z "${REIMAGE_PACKAGES_REAL:-}" ]; then
    real=$(mktemp -d)
    rc=0
    unshare --mount env REIMAGE_PACKAGES_REAL="$real" bash .ci/packages.sh || rc=$?
    rmdir "$real"
    exit $rc
fi
real=$REIMAGE_PACKAGES_REAL
mount --make-rprivate /
mount --bind /var/lib "$real"
mount -t tmpfs -o mode=0755 reimage-packages-test /var/lib
for e in "$real"/* "$real"/.[!.]*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    n=${e##*/}
    [ "$n" = reimage ] && continue
    if [ -L "$e" ]; then
        cp -P "$e" "/var/lib/$n"
        continue
    fi
    if [ -d "$e" ]; then mkdir "/var/lib/$n"; else touch "/var/lib/$n"; fi
    mount --bind "$e" "/var/lib/$n"
done
[ ! -e /var/lib/reimage ] || fail "/var/lib/reimage is still there in the test's namespace"

built=$SECONDS
mapfile -t pkgs < <(bash examples/packaging/build.sh all)
built=$((SECONDS - built))
deb=$(printf '%s\n' "${pkgs[@]}" | grep '\.deb$') || fail "build.sh made no .deb"
rpm=$(printf '%s\n' "${pkgs[@]}" | grep '\.rpm$') || fail "build.sh made no .rpm"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
echo "packages: built in ${built}s: $deb ($(stat -c %s "$deb") bytes), $rpm ($(stat -c %s "$rpm") bytes)"

## The .deb, installed.
dpkg -i "$deb" >/dev/null
trap 'dpkg --purge reimage >/dev/null 2>&1 || true' EXIT

expect "reimage --version" "$(env -u REIMAGE_CONFIG reimage --version)" "reimage $version"
expect "man -w reimage" "$(man -w reimage)" /usr/share/man/man1/reimage.1.gz
expect "man -w reimage.toml" "$(man -w reimage.toml)" /usr/share/man/man5/reimage.toml.5.gz
man -P cat reimage 2>/dev/null | grep -q 'completions SHELL' || fail "man reimage does not render the completions subcommand"
echo "packages: ok: man reimage renders"

bash_completion=/usr/share/bash-completion/completions/reimage
[ -f "$bash_completion" ] || fail "$bash_completion missing"
expect "bash completion loads" \
    "$(bash -c "source $bash_completion && complete -p reimage")" \
    "complete -o bashdefault -o nosort -o nospace -F _clap_complete_reimage reimage"
# The loaded function completes a subcommand the way bash would call it: it
# asks the installed reimage (computer and image names are tested in
# tests/integration/term.rs).
expect "bash completes 'reimage prov'" \
    "$(bash -c "source $bash_completion && COMP_WORDS=(reimage prov) COMP_CWORD=1 COMP_LINE='reimage prov' COMP_POINT=12 COMP_TYPE=9 && _clap_complete_reimage reimage prov reimage && echo \"\${COMPREPLY[*]}\"")" \
    provision
[ -f /usr/share/zsh/vendor-completions/_reimage ] || fail "zsh completion missing"
[ -f /usr/share/fish/vendor_completions.d/reimage.fish ] || fail "fish completion missing"
echo "packages: ok: zsh and fish completions installed"

for f in /usr/share/doc/reimage/examples/libvirt-domain.xml /usr/share/doc/reimage/examples/slurm/reimage-resume; do
    [ -f "$f" ] || fail "$f missing: the man pages point to it"
done
echo "packages: ok: the examples the man pages name are installed"

expect "conffiles" "$(dpkg-query -W -f='${Conffiles}' reimage | awk 'NF {print $1}')" /etc/reimage/reimage.toml
# With no --config, reimage reads /etc/reimage/reimage.toml.
expect "reimage check on the shipped config" \
    "$(env -u REIMAGE_CONFIG -u REIMAGE_STATE_DIR reimage check)" \
    "/etc/reimage/reimage.toml: OK (0 computers, 0 images, 0 OS profiles, 0 provisioners)"
expect "/var/lib/reimage mode and owner" "$(stat -c '%a %U' /var/lib/reimage)" "700 root"

# An upgrade (here: the same package again) keeps an edited config.
echo "# edited by the admin" >>/etc/reimage/reimage.toml
dpkg -i "$deb" >/dev/null
expect "edited config kept across an upgrade" "$(tail -n1 /etc/reimage/reimage.toml)" "# edited by the admin"

dpkg --purge reimage >/dev/null
trap - EXIT
for f in /usr/bin/reimage /etc/reimage/reimage.toml /var/lib/reimage; do
    [ ! -e "$f" ] || fail "$f still there after dpkg --purge"
done
echo "packages: ok: purge removes the binary, the config and the state dir"

## The .rpm, read (Debian's rpm has no RHEL to install it on).
# The examples are whatever examples/*.toml holds (both packages ship them
# by that glob); the rest is fixed.
examples=$(for f in examples/*.toml examples/libvirt-domain.xml examples/slurm/*; do echo "/usr/share/doc/reimage/examples/${f#examples/}"; done)
# shellcheck disable=SC2086 # $examples: one path a word
want=$(printf '%s\n' /etc/reimage/reimage.toml /usr/bin/reimage \
    /usr/share/bash-completion/completions/reimage /usr/share/doc/reimage/README.md \
    $examples /usr/share/fish/vendor_completions.d/reimage.fish \
    /usr/share/doc/reimage/examples/systemd/reimage-preload@.service \
    /usr/share/doc/reimage/examples/systemd/reimage-preload@.timer \
    /usr/share/man/man1/reimage.1.gz /usr/share/man/man5/reimage.toml.5.gz \
    /usr/share/zsh/site-functions/_reimage | sort | tr '\n' ' ')
expect "rpm file list" "$(rpm -qlp "$rpm" 2>/dev/null | sort | tr '\n' ' ')" "$want"
expect "rpm config files" "$(rpm -qcp "$rpm" 2>/dev/null)" /etc/reimage/reimage.toml
expect "rpm config file is noreplace" \
    "$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" 2>/dev/null | grep ' /etc/reimage/reimage.toml$')" \
    "cn /etc/reimage/reimage.toml"
# %post makes the state dir; run it where /var/lib is an empty tmpfs.
postin=$(rpm -qp --qf '%{POSTIN}' "$rpm" 2>/dev/null)
# shellcheck disable=SC2016 # $1 is the inner sh's, not this script's
expect "rpm %post creates the state dir root-only" \
    "$(unshare --mount sh -c 'mount -t tmpfs none /var/lib && sh -c "$1" postinst 1 && stat -c "%a %U" /var/lib/reimage' sh "$postin")" \
    "700 root"
expect "rpm man page is gzip" "$(rpm2cpio "$rpm" | cpio -i --quiet --to-stdout ./usr/share/man/man1/reimage.1.gz | gzip -dc | head -n1)" \
    "$(head -n1 man/reimage.1)"

echo "packages: $(stat -c %s "$deb") bytes .deb, $(stat -c %s "$rpm") bytes .rpm; $((SECONDS - start))s in all (build ${built}s)"
