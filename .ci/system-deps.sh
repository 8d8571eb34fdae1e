#!/bin/sh
# Install the Debian packages the integration tests need (real OBS under Xvfb, headless Chromium,
# a font for OBS text sources). Idempotent: installs only what is missing. Needs root; as another
# user it prints what is missing and how to install it, and exits 0 so `make test` still runs
# (the tests that need these packages then skip with the same advice).
# The lock timeout matters: CI steps (or other engineers) may run apt at the same time.
set -eu

# obs-plugins is only a Recommends of obs-studio but holds the websocket server, ffmpeg_source and
# text_ft2_source_v2; it is named so --no-install-recommends (which skips vlc & co.) keeps it.
PACKAGES="obs-studio obs-plugins xvfb xauth chromium chromium-driver fonts-dejavu-core"

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "system-deps: all present ($PACKAGES)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing:$missing (no apt-get here; install them with your package manager)"
    exit 0
fi

if [ "$(id -u)" != "0" ]; then
    echo "system-deps: missing:$missing"
    echo "system-deps: install them with: sudo apt-get install -y$missing"
    exit 0
fi

echo "system-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends $missing
echo "system-deps: done"
