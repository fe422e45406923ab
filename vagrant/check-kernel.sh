#!/usr/bin/env bash
# Refuse to provision the hftcap VM on a kernel without the XDP RX-metadata kfuncs (Linux 6.3).
set -euo pipefail
rel=${HFTCAP_KERNEL_RELEASE:-$(uname -r)}   # override only to test this script
IFS=. read -r major minor _ <<<"$rel"
minor=${minor%%[!0-9]*}
if (( major < 6 || (major == 6 && minor < 3) )); then
    echo "check-kernel: kernel $rel is older than 6.3: no XDP RX-metadata kfuncs; use a newer box" >&2
    exit 1
fi
echo "check-kernel: kernel $rel (>= 6.3: XDP RX-metadata kfuncs available)"
