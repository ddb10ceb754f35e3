#!/usr/bin/env bash
# Installs the Debian packages mtbert needs, only those that are missing.
set -euo pipefail
need=()
have_hdr() { [ -e "/usr/include/$1" ] || [ -e "/usr/include/x86_64-linux-gnu/$1" ] || [ -e "/usr/include/aarch64-linux-gnu/$1" ]; }
have_hdr zlib.h                 || need+=(zlib1g-dev)
have_hdr utf8proc.h             || need+=(libutf8proc-dev)
have_hdr cblas.h                || need+=(libopenblas-dev)
command -v bats >/dev/null      || need+=(bats)
command -v cc >/dev/null        || need+=(build-essential)
command -v python3 >/dev/null   || need+=(python3)
command -v unzip >/dev/null     || need+=(unzip)
command -v pip3 >/dev/null || python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -eq 0 ]; then
  echo "deps: all present"
  exit 0
fi
echo "deps: installing ${need[*]}"
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
