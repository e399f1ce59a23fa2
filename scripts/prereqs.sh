#!/usr/bin/env bash
# Sourced by scripts/dev.sh and scripts/test.sh: installs what a fresh Debian machine lacks
# for building quorumkv (libclang for the rocksdb crate's bindgen, a C++ compiler), for the
# tests (tmux; busybox-static and iptables for the container image), protoc for
# etcd-client, the peer stores of the benchmark comparison (quorumkv_peer_prereqs), and
# points cargo at a build cache outside the checkout so a fresh clone reuses earlier builds.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quorumkv-target}"

# Install Debian packages (none: nothing to do), as root or through sudo.
quorumkv_apt_install() {
    [ $# -gt 0 ] || return 0
    echo "installing missing packages: $*" >&2
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install $*" >&2; return 1; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

quorumkv_prereqs() {
    local missing=()
    command -v cargo >/dev/null 2>&1 || { echo "error: cargo (Rust) is required: https://rustup.rs" >&2; return 1; }
    # bindgen (used by librocksdb-sys) needs libclang; the C++ part needs g++.
    if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libclang'; then
        missing+=(libclang-dev)
    fi
    command -v clang >/dev/null 2>&1 || missing+=(clang)
    command -v g++ >/dev/null 2>&1 || missing+=(g++)
    command -v tmux >/dev/null 2>&1 || missing+=(tmux)
    # etcd-client (the `peers` feature, on by default) compiles etcd's .proto files.
    command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
    # The container image (cluster/build-image.sh) copies a static busybox and iptables
    # from the host; only needed where a Docker engine can run the netsplit evidence test.
    if command -v docker >/dev/null 2>&1; then
        dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
        [ -x /usr/sbin/xtables-legacy-multi ] || missing+=(iptables)
    fi
    quorumkv_apt_install "${missing[@]}"
    mkdir -p "$CARGO_TARGET_DIR"
}

# The peer stores of the benchmark comparison: scripts/bench-compare.sh and its smoke
# run in scripts/test.sh start Debian's redis-server and etcd.
quorumkv_peer_prereqs() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
    command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
    # The packages' own services are not used (the scripts start the servers on ports of
    # their own); where systemd runs, the packages also start one on the default port.
    quorumkv_apt_install "${missing[@]}"
}
