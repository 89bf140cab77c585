"""The results page's figures of the record, written from the record's own files, never by hand.

`make promote` rewrites the block between RECORD_BEGIN and RECORD_END in docs/results.md from
best-result-review/ (scores.json, metrics.jsonl, params.yaml, attribute_agreement.csv), and a test
checks that the committed page holds exactly what the committed record says: a figure cannot go
stale without the suite failing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lib import config as config_mod
from lib.augment.agreement import ACCURACY_FILE
from lib.errors import KitError
from lib.files import atomic_write_text

RECORD_BEGIN = "<!-- record: written by make promote from best-result-review/; do not edit -->"
RECORD_END = "<!-- /record -->"
AGREEMENT_FILE = ACCURACY_FILE  # 02's fills against the demo generator's truth
SPLITS = (("val", "val"), ("test_A", "test A"), ("test_B", "test B"), ("test", "test (A + B)"))


def _pair(scores: dict, prefix: str = "") -> str:
    return f"{scores[prefix + 'map10_official']:.3f} / {scores[prefix + 'map10_standard']:.3f}"


def block(review_dir: Path) -> str:
    """The markdown the results page carries between the markers."""
    scores = json.loads((review_dir / "scores.json").read_text())
    rows = [json.loads(line) for line in (review_dir / "metrics.jsonl").read_text().splitlines() if line]
    cfg = config_mod.load_saved(review_dir / "params.yaml")
    provenance = config_mod.read_yaml(review_dir / "params.yaml").get(config_mod.PROVENANCE_KEY, {})
    epoch = int(scores["checkpoint"].removeprefix("epoch_").removesuffix(".pt"))
    zero = rows[0]
    lines = [RECORD_BEGIN,
             f"The record: `{cfg.model}` fine-tuned at lr {cfg.lr:g}, batch {cfg.batch_size}, seed "
             f"{cfg.seed}, {cfg.stop_epoch} of {cfg.schedule_epochs} cosine epochs, the best val epoch kept "
             f"({epoch}); made by commit `{provenance.get('git_sha', 'unknown')[:12]}`. "
             "mAP@10 official / standard:",
             "",
             "| | " + " | ".join(label for split, label in SPLITS if split in scores) + " |",
             "|---|" + "---|" * sum(split in scores for split, _ in SPLITS),
             *(f"| {label} | " + " | ".join(_pair(scores[s], prefix) for s, _ in SPLITS if s in scores) + " |"
               for label, prefix in (("all queries", ""), ("cars", "car_"), ("persons", "person_"))),
             "",
             f"The foundation model before fine-tuning (epoch 0 of the record's metrics.jsonl): val "
             f"{zero['val_map10_official']:.3f} / {zero['val_map10_standard']:.3f}; the val curve by epoch: "
             + ", ".join(f"{r['val_map10_official']:.3f}" for r in rows) + "."]
    agreement = review_dir / AGREEMENT_FILE
    if agreement.is_file():
        table = pd.read_csv(agreement).set_index("field")
        filled = [f"{field} right {row.accuracy:.1%} of {int(row.filled):,} fills (always guessing the "
                  f"most frequent, {row.majority_value}: {row.majority_accuracy:.1%})"
                  for field, row in table.iterrows() if row.filled > 0]
        lines += ["", "Attribute augmentation against the generator's truth (02_augment): "
                  + "; ".join(filled) + "."]
    return "\n".join([*lines, RECORD_END])


RESULTS_PAGE = Path("docs") / "results.md"  # relative to the repository root


def update_page(readme: Path, review_dir: Path) -> Path:
    """Put the record's block into the page between its markers."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(RECORD_BEGIN), text.find(RECORD_END)
    if start < 0 or end < start:
        raise KitError(f"{readme} has no record block ({RECORD_BEGIN} ... {RECORD_END}): add the two markers "
                       "where the record's figures belong")
    return atomic_write_text(readme, text[:start] + block(review_dir) + text[end + len(RECORD_END):])
