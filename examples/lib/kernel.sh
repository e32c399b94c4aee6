# shellcheck shell=bash
# Sourced by the guest builds: kernel file helpers.

# extract_vmlinux BZIMAGE OUT: the ELF kernel inside a bzImage, found the way
# the kernel's scripts/extract-vmlinux does it: try each offset where a
# compressor's magic occurs until one decompresses to an ELF file. QEMU boots
# such a file through its PVH entry point, skipping the decompression in the
# guest (about 4 s under TCG).
extract_vmlinux() {
    local img=$1 out=$2 magic tool off
    for magic in xz gzip zstd; do
        case $magic in
        xz) tool=(xz -dc) magic=$'\xfd7zXZ' ;;
        gzip) tool=(gzip -dc) magic=$'\x1f\x8b\x08' ;;
        zstd) tool=(zstd -qdc) magic=$'\x28\xb5\x2f\xfd' ;;
        esac
        command -v "${tool[0]}" >/dev/null || continue
        while read -r off; do
            # Trailing bytes after the compressed kernel make the
            # decompressor fail at the end; the ELF check below decides.
            tail -c "+$((off + 1))" "$img" | "${tool[@]}" >"$out" 2>/dev/null || true
            [[ $(head -c 4 "$out" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] && return 0
        done < <(LC_ALL=C grep -Fabo "$magic" "$img" | cut -d: -f1)
    done
    rm -f "$out"
    return 1
}
