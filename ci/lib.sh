# Shared helpers for the ci/ scripts. Source it; do not run it.
# Every script does its own set-up on a fresh Debian machine and is idempotent.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# apt-get install the Debian packages that are missing (root, or sudo when available).
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

BUILD_PACKAGES=(nginx nginx-dev libclang-dev build-essential libssl-dev libpcre2-dev zlib1g-dev dpkg-dev)

ensure_build_deps() {
    ensure_packages "${BUILD_PACKAGES[@]}"
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
}

# The module signature string nginx embeds (e.g. 8,4,8,0011...): the ABI a module must match.
module_signature() {
    # The signature is a NUL-terminated string, but the linker may place it right after a
    # string literal that is not (Rust's), so `strings` can print it glued to that text.
    { strings "$1" | grep -oE '[0-9]+,[0-9]+,[0-9]+,[01]+$' || true; } | head -n 1
}

# RabbitMQ on 127.0.0.1:5672, installed and started when it does not answer.
ensure_rabbitmq() {
    if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then return 0; fi
    ensure_packages rabbitmq-server
    log "starting rabbitmq-server"
    rabbitmq-server -detached || true
    for _ in $(seq 1 60); do
        (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && return 0
        sleep 1
    done
    die "RabbitMQ did not start on 127.0.0.1:5672"
}

# Exports NGINX_SOURCE_DIR and NGINX_BUILD_DIR for building against an nginx source tree
# (default: Debian's nginx-dev tree). The tree is configured, with the flags the packaged
# binary was built with when it ships them (conf_flags), into a writable build dir under
# target/; the source tree itself stays untouched. Only configure is needed, not make.
configure_nginx_tree() {
    local src=${1:-/usr/share/nginx/src}
    if [ -n "${NGINX_BUILD_DIR:-}" ]; then
        export NGINX_SOURCE_DIR=${NGINX_SOURCE_DIR:-$src}
        return 0
    fi
    [ -f "$src/configure" ] || [ -f "$src/auto/configure" ] || die "no nginx source tree at $src"
    local build
    build=$TARGET/nginx-build/$(echo "$src" | tr '/' '_')
    if [ ! -f "$build/ngx_auto_config.h" ] || [ ! -f "$build/Makefile" ]; then
        log "configuring nginx headers from $src into $build"
        mkdir -p "$build"
        local flags=()
        if [ -f "$src/conf_flags" ]; then
            # shellcheck disable=SC1091
            . "$src/conf_flags"
            flags=("${NGX_CONF_FLAGS[@]}")
        else
            flags=(--with-compat --with-http_ssl_module --with-threads)
        fi
        local cfg=./configure
        [ -f "$src/configure" ] || cfg=./auto/configure
        (cd "$src" && sh $cfg \
            --with-cc-opt="$(dpkg-buildflags --get CFLAGS 2>/dev/null) -fPIC $(dpkg-buildflags --get CPPFLAGS 2>/dev/null)" \
            --with-ld-opt="$(dpkg-buildflags --get LDFLAGS 2>/dev/null) -fPIC" \
            "${flags[@]}" --builddir="$build") > "$build.configure.log" 2>&1 \
            || { tail -20 "$build.configure.log" >&2; die "nginx configure failed (log: $build.configure.log)"; }
    fi
    export NGINX_SOURCE_DIR=$src NGINX_BUILD_DIR=$build
}
