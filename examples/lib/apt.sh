# shellcheck shell=bash
# Sourced by .ci/run, examples/demo.sh and the guest builds: installs Debian
# packages so that QEMU's packages match each other.
#
# Some machines come with qemu-utils from bookworm-backports while their
# sources list only bookworm; qemu-system-x86 from bookworm then breaks
# against it ("qemu-utils : Breaks: qemu-system-common (< ...)"). When the
# installed qemu-utils is a backport, the backports suite is added and the
# QEMU packages are taken from it, so both halves have one version.

# apt_install PKG...: apt-get update once per shell, then install what is
# missing, quietly, without recommends.
apt_install() {
    local missing=() p
    for p in "$@"; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
        return 1
    fi
    local suite="" qver
    qver=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    case "$qver" in
    *bpo*)
        local codename
        codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
        suite="$codename-backports"
        if ! grep -rqs "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$suite" >/etc/apt/sources.list.d/reimage-backports.sources
            APT_UPDATED=
        fi
        ;;
    esac
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq >&2
        APT_UPDATED=1
    fi
    local plain=() qemu=()
    for p in "${missing[@]}"; do
        case "$p" in
        qemu-*) qemu+=("$p") ;;
        *) plain+=("$p") ;;
        esac
    done
    if [ ${#plain[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${plain[@]}" >/dev/null
    fi
    if [ ${#qemu[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            ${suite:+-t "$suite"} "${qemu[@]}" >/dev/null
    fi
}
