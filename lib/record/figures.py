"""The docs' figures of the record, written by `make promote` from best-result-review/'s own files:
the scores, curve and fills in docs/results.md, and the re-rankers (rescore.csv) in
docs/reranking.md. A test checks that the committed pages hold what the committed record says.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lib import config as config_mod
from lib.augment.agreement import ACCURACY_FILE
from lib.errors import KitError
from lib.eval.rescore import FIRST_STAGE, RESCORE_FILE
from lib.files import atomic_write_text

RECORD_BEGIN = "<!-- record: written by make promote from best-result-review/; do not edit -->"
RECORD_END = "<!-- /record -->"
RERANK_BEGIN = "<!-- rerank: written by make promote from best-result-review/rescore.csv; do not edit -->"
RERANK_END = "<!-- /rerank -->"
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
    kept = f"epoch {epoch} kept (submit_epoch)" if cfg.submit_epoch else f"the best val epoch kept ({epoch})"
    commit = provenance.get("git_sha", "unknown")[:12]
    zero = rows[0]
    lines = [RECORD_BEGIN,
             f"The record: `{cfg.model}` fine-tuned at lr {cfg.lr:g}, batch {cfg.batch_size}, seed "
             f"{cfg.seed}, {cfg.stop_epoch} of {cfg.schedule_epochs} cosine epochs, {kept}; made by commit "
             f"`{commit}`. mAP@10 official / standard:",
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


RERANK_NAMES = {"a3r": "`a3r` (embedded)", "a3r quantified": "`a3r`, quantified",
                "a3r without flip": "`a3r` without flip",
                "a3r without adapted query": "`a3r` without adapted query",
                "a3r adapted query only": "`a3r`, adapted query only (no reciprocity)", "aqe": "`aqe`",
                "k-reciprocal": "`kreciprocal`"}


def _signed(value: float) -> str:
    return f"{value:+.3f}".replace("-", "−")


def rerank_block(review_dir: Path) -> str:
    """docs/reranking.md's markdown: each setting's val, A and B official mAP@10 and its change from the
    first stage with the 95 % paired interval (one model: over the queries)."""
    table = pd.read_csv(review_dir / RESCORE_FILE).set_index(["variant", "split"])
    lines = [RERANK_BEGIN, "| setting | val | test A | test B | Δ val | Δ A | Δ B |",
             "|---|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(table.index.get_level_values("variant")):
        splits = ("val", "test_A", "test_B")
        cells = [f"{table.loc[(variant, s), 'map10_official']:.3f}" for s in splits]
        changes = (" | ".join(f"{_signed(row.delta)} [{_signed(row.low)}, {_signed(row.high)}]"
                              for row in (table.loc[(variant, s)] for s in splits))
                   if variant != FIRST_STAGE else "| |")  # the first stage: three empty cells
        lines.append(f"| {RERANK_NAMES.get(variant, variant)} | " + " | ".join(cells) + f" | {changes} |")
    return "\n".join([*lines, RERANK_END])


PAGES = ((Path("docs") / "results.md", RECORD_BEGIN, RECORD_END, block),
         (Path("docs") / "reranking.md", RERANK_BEGIN, RERANK_END, rerank_block))


def update_page(page: Path, review_dir: Path, begin: str = RECORD_BEGIN, end: str = RECORD_END,
                render=block) -> Path:
    """Put a block rendered from the record into the page between its markers."""
    text = page.read_text(encoding="utf-8")
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise KitError(f"{page} has no block {begin} ... {end}: add the two markers where the record's "
                       "figures belong")
    return atomic_write_text(page, text[:start] + render(review_dir) + text[stop + len(end):])


def update_pages(root: Path, review_dir: Path) -> None:
    """Every page's block of the record's figures (under the repository `root`)."""
    for page, begin, end, render in PAGES:
        update_page(root / page, review_dir, begin, end, render)
