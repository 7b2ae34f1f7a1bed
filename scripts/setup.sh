#!/usr/bin/env bash
# Set up everything framebus needs on a fresh Debian machine of this kind:
# apt packages (Xvfb, FFmpeg), one virtualenv per Python version with the test
# dependencies, and the release build of the extension into each.
#
#   FRAMEBUS_PYTHONS="3.9 3.13" bash scripts/setup.sh   # default: 3.11
#   FRAMEBUS_BENCH=1 bash scripts/setup.sh               # + the anchors (mss, turbopipe, ...)
#   FRAMEBUS_DEVELOP=0 bash scripts/setup.sh             # venvs without the extension
#                       (CI tests installed wheels instead: scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

# Wayland tests: headless sway (wlr-screencopy), grim (the reference capture), foot
# (real client content), and the ScreenCast portal stack (D-Bus session, PipeWire,
# WirePlumber, xdg-desktop-portal + its wlroots backend).
APT_PACKAGES=(xvfb x11-utils x11-xserver-utils xterm ffmpeg chromium libgl1 libglx-mesa0 libgl1-mesa-dri
    sway grim foot dbus dbus-user-session pipewire wireplumber xdg-desktop-portal xdg-desktop-portal-wlr)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

source scripts/build-wheels.sh # find_python

venv_for() { if [ "$1" = 3.11 ]; then echo .venv; else echo ".venv-$1"; fi; }

for v in ${FRAMEBUS_PYTHONS:-3.11}; do
    venv=$(venv_for "$v")
    if [ ! -x "$venv/bin/python" ]; then
        "$(find_python "$v")" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements-test.txt
    if [ "${FRAMEBUS_BENCH:-0}" = 1 ]; then
        "$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements-bench.txt
    fi
    [ "${FRAMEBUS_DEVELOP:-1}" = 1 ] || continue
    echo "setup: building framebus for $("$venv/bin/python" -V)"
    (VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" \
        "$venv/bin/maturin" develop --release -q 2>&1 | grep -vE "^(📦|✏️|🛠|🍹|🐍|🔗|📡|Looking in|Ignoring)" || true)
    "$venv/bin/python" -c "import framebus; print('setup: framebus', framebus.__version__, 'ok')"
done
# The standalone binary for the capture/record tests; without Zenoh (`framebus bridge`
# is tested through the wheel's `framebus` script), which halves this build.
cargo build --release -q -p framebus-cli --no-default-features
