#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: system packages, the .venv, Python dependencies.
# Re-running is cheap: each step is skipped when already done. Used by `make setup` (and so by
# `make test` and the pipeline targets).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox libsox-fmt-all ffmpeg
              libsndfile1 fortunes bible-kjv)
if [ "${WITH_BROWSER:-1}" = 1 ]; then APT_PACKAGES+=(chromium chromium-driver); fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  cmd="apt-get install -y --no-install-recommends ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    echo ">> installing Debian packages: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $cmd -q
  else
    echo "error: missing Debian packages: ${missing[*]}" >&2
    echo "run as root:  sudo $cmd    then re-run this command" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo ">> creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.nanokoel-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.txt -nt "$stamp" ]; then
  echo ">> installing Python dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  # requirements.txt pins torch to the CPU build (constraints), pyproject lists the dependencies.
  .venv/bin/pip install -q -c requirements.txt -e '.[dev,asr]'
  touch "$stamp"
fi
