#!/usr/bin/env bash
# uv against pip on requirements.txt, each into a new venv with an empty package cache, in the order
# pip, uv, uv, pip (docs/benchmarks.md). Run from the repository root: bash tools/bench/install_race.sh
# Downloads every pinned package four times; leaves nothing behind (its venvs and caches are removed).
set -u
cd "$(dirname "$0")/../.."
UV_PIN=$(grep -m1 -o '^uv==[^ #]*' requirements.txt)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
for side in pip uv uv pip; do
  venv="$SCRATCH/venv" cache="$SCRATCH/uv-cache"
  rm -rf "$venv" "$cache"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$UV_PIN" >/dev/null
  load=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date +%s.%N)
  if [ "$side" = pip ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir -r requirements.txt 2>/dev/null
  else
    UV_CACHE_DIR="$cache" "$venv/bin/uv" pip install --python "$venv/bin/python" -q -r requirements.txt \
      $("$venv/bin/python" tools/uv_args.py)
  fi
  rc=$?
  end=$(date +%s.%N)
  echo "$side: $(python3 -c "print(f'{$end - $start:.1f}')") s (exit $rc, load average $load before)"
done
