"""Rebuild the demo's person-vector table from a real label file: the recipe of
lib/demo/assets/person_vectors.csv, which ships with the kit (the real labels do not).

    python -m tools.demo_assets ../shared/data/val_label.txt [--out lib/demo/assets/person_vectors.csv]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from lib.data.attributes import N_PERSON_BITS
from lib.demo.captions import PERSON_TABLE
from lib.files import atomic_write_text


def build_person_vector_table(label_path: str | Path, out_path: str | Path = PERSON_TABLE) -> Path:
    """Count the distinct real person vectors of a label file (and how many captions say boots):
    the CSV (vector,count,boots) the demo samples its persons from, most frequent first."""
    counts, boots = Counter(), Counter()
    for line in Path(label_path).read_text(encoding="utf-8").splitlines():
        fields = line.split("$")
        if len(fields) == 3:
            items = fields[1].rstrip(".").split(",")
            if len(items) == N_PERSON_BITS and all(i in ("0", "1") for i in items):
                key = "".join(items)
                counts[key] += 1
                boots[key] += "boots" in fields[2]
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    table = "vector,count,boots\n" + "".join(f"{k},{n},{boots[k]}\n" for k, n in rows)
    return atomic_write_text(out_path, table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo_assets", description=__doc__.split("\n")[0])
    parser.add_argument("labels", type=Path, help="a label file with person lines (the real val_label.txt)")
    parser.add_argument("--out", type=Path, default=PERSON_TABLE)
    args = parser.parse_args(argv)
    print(build_person_vector_table(args.labels, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
