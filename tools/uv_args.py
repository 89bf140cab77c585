"""pip's configuration as `uv pip install` flags, so that uv resolves requirements.txt from the same
indexes, wheel folders and constraints as pip would (uv reads no pip.conf and no PIP_* variable).

    uv pip install -r requirements.txt $(python tools/uv_args.py)

Reads `pip config list` (its files and the PIP_* environment). Only the standard library: it runs
before the environment exists.
"""
from __future__ import annotations

import shlex
import subprocess
import sys

FLAGS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}


def uv_args(config_lines: list[str]) -> list[str]:
    """`pip config list` lines (`global.find-links='/opt/wheels'`, `:env:.cert='...'`) -> uv flags."""
    args: list[str] = []
    for line in config_lines:
        key, sep, value = line.partition("=")
        name = key.split(".", 1)[-1]
        if not sep:
            continue
        if name == "cert" and "--native-tls" not in args:
            args.append("--native-tls")  # pip trusts a configured bundle: uv, the system's store
        for item in shlex.split(value):
            for part in item.split():
                pair = [FLAGS[name], part] if name in FLAGS else []
                if pair and not any(args[i:i + 2] == pair for i in range(len(args) - 1)):
                    args += pair
    if any(flag in args for flag in ("--extra-index-url", "--find-links")):
        args += ["--index-strategy", "unsafe-best-match"]  # as pip: the best version from every source
    return args


def main() -> int:
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    print(" ".join(shlex.quote(arg) for arg in uv_args(listed.stdout.splitlines())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
