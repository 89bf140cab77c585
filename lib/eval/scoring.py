"""Scoring a model on a labelled split: retrieval + the organisers' relevance + mAP@10, by kind.
One function for the training loop, 04_infer and the quick review: training reports what 04 prints."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pandas as pd
import torch

from lib.config import Config
from lib.data.prepare import val_queries_path
from lib.data.relevance import relevance_sets
from lib.eval import metrics, retrieval
from lib.eval.boards import BOARDS
from lib.paths import resolve


def score_table(image_names: list[list[str]], relevant: list[set[str]], kinds: list[str]) -> pd.DataFrame:
    """mAP@10 (official and standard) and recall@k for all queries, cars and persons."""
    per = metrics.per_query(image_names, relevant)
    kinds_arr = np.asarray(kinds)
    rows = {"all": metrics.summary(per)}
    for kind in ("car", "person"):
        if (kinds_arr == kind).any():
            rows[kind] = metrics.summary(per, kinds_arr == kind)
    return pd.DataFrame(rows).T[list(metrics.SUMMARY_KEYS)].astype({"queries": int})


def board_tables(image_names: list[list[str]], relevant: list[set[str]], kinds: list[str],
                 boards: Sequence[str]) -> dict[str, pd.DataFrame]:
    """score_table on each test board's queries ("A", "B": lib.eval.boards), in query order."""
    tables = {}
    for board in BOARDS:
        pick = [i for i, b in enumerate(boards) if b == board]
        tables[board] = score_table([image_names[i] for i in pick], [relevant[i] for i in pick],
                                    [kinds[i] for i in pick])
    return tables


def split_gallery(table: pd.DataFrame) -> list[str]:
    """A labelled split's gallery: its images, unique, resolved and sorted (every line is a query)."""
    return sorted({str(resolve(p)) for p in table["filepath"]})


def evaluate_split(model: torch.nn.Module, tokenizer: Any, preprocess_cfg: Any, table: pd.DataFrame,
                   relevant: list[set[str]], cfg: Config, *, model_id: str | None = None,
                   cache_dir: str | Path | None = retrieval.DEFAULT_CACHE_DIR, progress: bool = True,
                   ) -> tuple[pd.DataFrame, retrieval.RetrievalResult]:
    """Every line of `table` is a query; its images (unique, sorted) are the gallery."""
    gallery = split_gallery(table)
    result = retrieval.retrieve(model, tokenizer, preprocess_cfg, list(table["text"]), list(table["kind"]),
                                gallery, model_id=model_id, cache_dir=cache_dir, progress=progress,
                                **retrieval.options(cfg))
    return score_table(result.image_names, relevant, list(table["kind"])), result


def flat_metrics(scores: pd.DataFrame, prefix: str = "val_") -> dict[str, float]:
    """`{"val_map10_official": ..., "val_car_map10_official": ...}` for metrics.jsonl."""
    out: dict[str, float] = {}
    for kind, row in scores.iterrows():
        head = prefix if kind == "all" else f"{prefix}{kind}_"
        out.update({f"{head}{key}": float(value) for key, value in row.items() if key != "queries"})
    return out


def run_val_evaluator(cfg: Config, run_dir: Path) -> Callable[[torch.nn.Module], dict[str, float]]:
    """lib.train's evaluator: the run's val table, scored with the model's tokenizer and preprocessing."""
    val = pd.read_csv(val_queries_path(run_dir), keep_default_na=False)
    relevant = relevance_sets(val)
    tokenizer = open_clip.get_tokenizer(cfg.model)

    def evaluate(model: torch.nn.Module) -> dict[str, float]:
        net = getattr(model, "module", model)  # DDP wraps the model
        scores, _ = evaluate_split(net, tokenizer, net.visual.preprocess_cfg, val, relevant, cfg,
                                   cache_dir=None, progress=False)
        return flat_metrics(scores, prefix="")  # the loop prefixes "val_"

    return evaluate
