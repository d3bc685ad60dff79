#!/usr/bin/env bash
# Installs Debian's chromium when it is missing (the report check renders report.html in it).
# Needs root; apt-get update first.
set -euo pipefail
command -v chromium >/dev/null && exit 0
[ "$(id -u)" = 0 ] || { echo "install-chromium: chromium is missing and installing it needs root" >&2; exit 1; }
echo "install-chromium: installing chromium from Debian's packages" >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
