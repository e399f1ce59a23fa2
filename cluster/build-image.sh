#!/usr/bin/env bash
# Build the quorumkv node image (default tag quorumkv:dev) without any registry or network:
# assemble a root filesystem from files already on this host — the debug quorumkv binary
# from $CARGO_TARGET_DIR, every shared library `ldd` lists for it and for iptables (plus
# the dynamic loader and the xtables match modules), a static busybox for `sh` — and build
# `FROM scratch` with cluster/Dockerfile. Why this way: the machines this runs on cannot
# pull images, and the node needs iptables inside its container for netsplits.
#
# The image is rebuilt only when its inputs changed: a hash of the binary, this script and
# the Dockerfile is stored as the label org.quorumkv.hash and compared. --force rebuilds.
#
# Usage: cluster/build-image.sh [--force] [--tag quorumkv:dev] [--binary PATH]
# Host needs: docker, busybox-static, iptables (apt-get install busybox-static iptables).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${QKV_IMAGE:-quorumkv:dev}"
FORCE=0
BIN="${CARGO_TARGET_DIR:-$HOME/.cache/quorumkv-target}/debug/quorumkv"
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        --tag) TAG="$2"; shift ;;
        --binary) BIN="$2"; shift ;;
        -h|--help) sed -n "2,15p" cluster/build-image.sh; exit 0 ;;
        *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

[ -x "$BIN" ] || { echo "build-image: no binary at $BIN (run: cargo build --bin quorumkv)" >&2; exit 1; }
BUSYBOX="$(command -v busybox || true)"
if [ -z "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
    # `ldd` succeeds only on dynamic executables; the image wants the static one.
    echo "build-image: need a static busybox (apt-get install busybox-static)" >&2; exit 1
fi
XT_LEGACY=/usr/sbin/xtables-legacy-multi
XT_NFT=/usr/sbin/xtables-nft-multi
[ -x "$XT_LEGACY" ] || { echo "build-image: need iptables on the host (apt-get install iptables)" >&2; exit 1; }
XT_MODULES=$(dirname "$(readlink -f /usr/lib/x86_64-linux-gnu/libxtables.so.12 2>/dev/null || echo /usr/lib/x86_64-linux-gnu/x)")/xtables

HASH=$( { sha256sum "$BIN" cluster/Dockerfile cluster/build-image.sh | cut -d' ' -f1; } | sha256sum | cut -c1-16)
CURRENT=$(docker image inspect -f '{{ index .Config.Labels "org.quorumkv.hash" }}' "$TAG" 2>/dev/null || true)
if [ "$FORCE" = 0 ] && [ "$CURRENT" = "$HASH" ]; then
    echo "image $TAG is up to date (hash $HASH)"
    exit 0
fi

CTX=cluster/run/image
rm -rf "$CTX"
ROOT="$CTX/rootfs"
mkdir -p "$ROOT"/{usr/bin,usr/sbin,usr/lib64,usr/local/bin,etc/quorumkv,var/lib/quorumkv,run,tmp,proc,sys,dev}
chmod 1777 "$ROOT/tmp"
# Debian's merged /usr layout, so paths ldd prints (/lib/..., /lib64/...) resolve.
ln -s usr/bin "$ROOT/bin"
ln -s usr/sbin "$ROOT/sbin"
ln -s usr/lib "$ROOT/lib"
ln -s usr/lib64 "$ROOT/lib64"

# Strip debug info from a copy: the debug build is large and symbols are not needed in it.
if command -v objcopy >/dev/null 2>&1; then
    objcopy --strip-debug "$BIN" "$ROOT/usr/local/bin/quorumkv"
else
    cp "$BIN" "$ROOT/usr/local/bin/quorumkv"
fi
chmod 0755 "$ROOT/usr/local/bin/quorumkv"
cp "$XT_LEGACY" "$XT_NFT" "$ROOT/usr/sbin/"
mkdir -p "$ROOT/usr/lib/x86_64-linux-gnu/xtables"
cp -L "$XT_MODULES"/*.so "$ROOT/usr/lib/x86_64-linux-gnu/xtables/"
cp "$BUSYBOX" "$ROOT/usr/bin/busybox"

# Every shared library of every ELF file we ship, at the path the loader looks it up by
# (ldd's path, with /lib and /lib64 mapped into /usr as in Debian).
copy_libs() {
    local f lib dest
    for f in "$@"; do
        ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
            dest="$ROOT/usr${lib#/usr}"
            case "$lib" in /usr/*) dest="$ROOT$lib" ;; esac
            if [ ! -e "$dest" ]; then
                mkdir -p "$(dirname "$dest")"
                cp -L "$lib" "$dest"
            fi
        done
    done
}
copy_libs "$BIN" "$XT_LEGACY" "$XT_NFT" "$XT_MODULES"/*.so

# Applets: sh and the usual tools, as links to busybox (not over anything we copied).
for applet in $("$BUSYBOX" --list); do
    [ -e "$ROOT/usr/bin/$applet" ] || [ -e "$ROOT/usr/sbin/$applet" ] || ln -s busybox "$ROOT/usr/bin/$applet"
done
# iptables: the legacy (x_tables) backend by default — it works in a container's network
# namespace with NET_ADMIN on any kernel that has ip_tables; the nft variant is shipped too.
for t in iptables iptables-save iptables-restore ip6tables; do
    rm -f "$ROOT/usr/bin/$t"
    ln -s xtables-legacy-multi "$ROOT/usr/sbin/$t"
done
for t in iptables-legacy iptables-legacy-save iptables-legacy-restore; do ln -s xtables-legacy-multi "$ROOT/usr/sbin/$t"; done
for t in iptables-nft iptables-nft-save iptables-nft-restore; do ln -s xtables-nft-multi "$ROOT/usr/sbin/$t"; done

cat > "$ROOT/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$ROOT/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$ROOT/etc/nsswitch.conf"
printf 'ip 0 IP\nicmp 1 ICMP\ntcp 6 TCP\nudp 17 UDP\n' > "$ROOT/etc/protocols"
mkdir -p "$ROOT/root"

cp cluster/Dockerfile "$CTX/Dockerfile"
echo "building $TAG from $CTX ($(du -sh "$ROOT" | cut -f1), hash $HASH)"
OLD_ID=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
# The classic builder: BuildKit may be missing and is not needed for COPY into scratch.
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" --build-arg QKV_HASH="$HASH" "$CTX" 2>&1 \
    | { grep -v -e 'legacy builder is deprecated' -e 'BuildKit is currently disabled' -e 'environment-variable' || true; }
# Remove the image this one replaced, unless something else still uses it.
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$(docker image inspect -f '{{.Id}}' "$TAG")" ]; then
    docker rmi "$OLD_ID" >/dev/null 2>&1 || true
fi
echo "image $TAG built"
