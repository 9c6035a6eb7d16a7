#!/usr/bin/env bash
# Installs the Debian packages emostream needs when they are missing and we are allowed to.
#   base:    libportaudio2 (microphone), espeak-ng + sox (test speech), ffmpeg (test media),
#            redis-server (the Redis bus: `emostream worker/gateway`, and its tests)
#   browser: chromium (the real-browser dashboard test)
set -euo pipefail

want=()
case "${1:-base}" in
  base)
    ldconfig -p 2>/dev/null | grep -q libportaudio.so || want+=(libportaudio2)
    command -v espeak-ng >/dev/null || want+=(espeak-ng)
    command -v sox >/dev/null || want+=(sox)
    command -v ffmpeg >/dev/null || want+=(ffmpeg)
    command -v redis-server >/dev/null || want+=(redis-server)
    ;;
  browser)
    command -v chromium >/dev/null || want+=(chromium)
    ;;
  *) echo "usage: $0 base|browser" >&2; exit 2 ;;
esac

[ ${#want[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "emostream: missing Debian packages: ${want[*]}" >&2
  echo "emostream: install them with: sudo apt-get install ${want[*]}" >&2
  # The service still runs on files without them; tests that need them skip with a reason.
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "emostream: installing Debian packages: ${want[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
