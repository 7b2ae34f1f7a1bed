#!/usr/bin/env bash
# Build what users install into dist/: one manylinux2014 (manylinux_2_17) wheel per
# CPython — the extension uses the non-limited API (Py_buffer), so no abi3 — and the
# sdist. Wheels are linked with zig against glibc 2.17 (no Docker needed) in the
# `wheel` cargo profile, and `auditwheel show` must confirm each tag. docs/packaging.md
# says why this tag, and how big the wheels are.
#
#   bash scripts/build-wheels.sh                  # CPython 3.9–3.13 wheels + the sdist
#   bash scripts/build-wheels.sh 3.9 3.13 sdist   # only these
#   FRAMEBUS_WHEEL_TARGET=aarch64-unknown-linux-gnu bash scripts/build-wheels.sh 3.13
#
# Sourced (`source scripts/build-wheels.sh`), it only defines find_python, build_wheel
# and build_sdist (each prints the path of what it built).
set -euo pipefail
shopt -s inherit_errexit # a failing step inside $(build_wheel ...) stops it

# The build tools, pinned: maturin, zig (the linker for the old glibc), auditwheel.
BUILD_TOOLS=(maturin==1.16.0 ziglang==0.17.0 auditwheel==6.8.2)
BUILD_VENV=.venv-build
MANYLINUX=manylinux2014 # = manylinux_2_17: glibc 2.17, what Rust's std itself needs

find_python() {
    local v=$1 root cand
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    for cand in "$root"/versions/"$v".*/bin/python3 "$root"/versions/"$v"/bin/python3; do
        [ -x "$cand" ] && { echo "$cand"; return; }
    done
    command -v "python$v" || { echo "python$v not found (pyenv install $v)" >&2; return 1; }
}

_build_tools() {
    if [ ! -x "$BUILD_VENV/bin/auditwheel" ]; then
        "$(find_python 3.11)" -m venv "$BUILD_VENV"
        "$BUILD_VENV/bin/pip" install -q --disable-pip-version-check "${BUILD_TOOLS[@]}" >&2
    fi
}

# build_wheel VERSION: dist/framebus-*-cpXY-*.whl for that CPython, its tag checked.
build_wheel() {
    local v=$1 target=${FRAMEBUS_WHEEL_TARGET:-x86_64-unknown-linux-gnu} arch wheel interp
    arch=${target%%-*}
    _build_tools
    # Cross-compiling, maturin takes the target's sysconfig from its own tables.
    interp="python$v"
    [ "$arch" != "$(uname -m)" ] || interp=$(find_python "$v")
    rm -f dist/framebus-*-cp"${v/./}"-*_"$arch".whl
    # maturin finds zig as `python -m ziglang` through the build venv on PATH.
    PATH="$PWD/$BUILD_VENV/bin:$PATH" maturin build -q --profile wheel --zig \
        --compatibility "$MANYLINUX" --target "$target" \
        -i "$interp" --out dist >&2
    wheel=$(ls dist/framebus-*-cp"${v/./}"-*_"$arch".whl)
    "$BUILD_VENV/bin/auditwheel" show "$wheel" >"$wheel.auditwheel.txt"
    if ! tr -s ' \n' ' ' <"$wheel.auditwheel.txt" | grep -q "consistent with the following platform tag: \"manylinux_2_17_$arch\""; then
        cat "$wheel.auditwheel.txt" >&2
        echo "build-wheels: $wheel is not manylinux_2_17_$arch" >&2
        return 1
    fi
    echo "$wheel"
}

# build_sdist: dist/framebus-*.tar.gz (Rust sources of the workspace + the Python package).
build_sdist() {
    _build_tools
    mkdir -p dist
    rm -f dist/framebus-*.tar.gz
    # (quiet unless it fails: cargo warns about every crate's missing metadata)
    "$BUILD_VENV/bin/maturin" sdist --out dist >dist/sdist.log 2>&1 || { cat dist/sdist.log >&2; return 1; }
    ls dist/framebus-*.tar.gz
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    cd "$(dirname "$0")/.."
    for what in "${@:-3.9 3.10 3.11 3.12 3.13 sdist}"; do
        for w in $what; do
            if [ "$w" = sdist ]; then path=$(build_sdist); else path=$(build_wheel "$w"); fi
            echo "build-wheels: $path ($(($(stat -c %s "$path") / 1024)) KiB)"
        done
    done
fi
