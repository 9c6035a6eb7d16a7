#!/usr/bin/env bash
# Installs the Debian packages emostream needs when they are missing and we are allowed to.
#   base:    libportaudio2 (microphone), espeak-ng + sox (test speech), ffmpeg (test media),
#            pulseaudio + pulseaudio-utils + libasound2-plugins (the real-microphone test: a private
#            PulseAudio null sink whose monitor PortAudio reads through ALSA's pulse plugin),
#            redis-server (the Redis transport's tests)
#   browser: chromium (the real-browser dashboard test)
set -euo pipefail

# ALSA's "pulse" PCM, through which PortAudio (ALSA host API) reaches PulseAudio.
have_alsa_pulse() {
  local dir
  for dir in /usr/lib/*/alsa-lib /usr/lib/alsa-lib; do
    [ -e "$dir/libasound_module_pcm_pulse.so" ] && return 0
  done
  return 1
}

want=()
case "${1:-base}" in
  base)
    ldconfig -p 2>/dev/null | grep -q libportaudio.so || want+=(libportaudio2)
    command -v espeak-ng >/dev/null || want+=(espeak-ng)
    command -v sox >/dev/null || want+=(sox)
    command -v ffmpeg >/dev/null || want+=(ffmpeg)
    command -v pulseaudio >/dev/null || want+=(pulseaudio)
    { command -v pactl >/dev/null && command -v paplay >/dev/null; } || want+=(pulseaudio-utils)
    have_alsa_pulse || want+=(libasound2-plugins)
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
# Other apt runs on this machine may hold the lock for a while: wait for it rather than fail.
"${sudo[@]}" apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${want[@]}" >/dev/null
