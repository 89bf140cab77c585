"""The first stage against re-rankers (docs/reranking.md) on a run's val and, on the demo, test and
its boards (choose on val and A, report B), from `infer`'s embeddings: nothing is encoded again but
A3R's mirrored gallery, once (then cached like the gallery)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lib.config import Config
from lib.data.prepare import Prepared, image_paths, load_prepared, write_table
from lib.data.relevance import relevance_sets
from lib.eval import infer, retrieval, scoring
from lib.eval.boards import split_boards
from lib.eval.paired import paired_difference
from lib.eval.rerank import settings
from lib.model.factory import model_from_config
from lib.paths import resolve

FIRST_STAGE = "first stage"
RESCORE_FILE = "rescore.csv"  # the run's side-by-side: each setting's scores and change (Rescored.summary)
ABLATION: dict[str, dict[str, Any]] = {
    "a3r": {"rerank": "a3r"},
    "a3r quantified": {"rerank": "a3r", "a3r_reciprocal": "quantified"},
    "a3r without flip": {"rerank": "a3r", "a3r_flip": False},
    "a3r without adapted query": {"rerank": "a3r", "a3r_adapted_query": False},
    "a3r adapted query only": {"rerank": "a3r", "a3r_reciprocal": "none"},
    "aqe": {"rerank": "aqe"},
    "k-reciprocal": {"rerank": "kreciprocal"},
}


@dataclass
class Split:
    """One labelled split's cached retrieval inputs."""

    name: str  # "val" | "test"
    query_emb: torch.Tensor
    gallery_emb: torch.Tensor
    gallery_names: list[str]
    kinds: list[str]
    relevant: list[set[str]]
    boards: np.ndarray | None = None  # "A" / "B" per query (the demo's test), else None
    gallery_flip: torch.Tensor | None = None  # the mirrored gallery, when a setting flips


@dataclass
class Rescored:
    scores: pd.DataFrame  # index (variant, split, kind): lib.eval.scoring.score_table's columns
    per_query: pd.DataFrame  # variant, split, query, kind, board, ap_official, ap_standard
    rankings: dict[tuple[str, str], list[list[str]]]  # (variant, split) -> each query's top-k names
    relevant: dict[str, list[set[str]]]  # split -> each query's relevant image names

    def side_by_side(self, metric: str = "map10_official", kind: str = "all") -> pd.DataFrame:
        """Variants (rows, in the order given) by split (val, test, test_A, test_B)."""
        table = self.scores.xs(kind, level="kind")[metric].unstack("split")
        order = list(dict.fromkeys(self.scores.index.get_level_values("variant")))
        splits = [s for s in ("val", "test", "test_A", "test_B") if s in table.columns]
        return table.loc[order, splits]

    def against_first_stage(self, ap: str = "ap_official") -> pd.DataFrame:
        """Each variant's change of mean AP from the first stage, per split, with its paired interval."""
        rows, per = [], self.per_query
        for variant in dict.fromkeys(per["variant"]):
            if variant == FIRST_STAGE:
                continue
            for split in dict.fromkeys(per["split"]):
                group = per[(per["variant"] == variant) & (per["split"] == split)]
                base = per[(per["variant"] == FIRST_STAGE) & (per["split"] == split)]
                for board in [""] + sorted(set(group["board"]) - {""}):
                    pick = (group["board"] == board).to_numpy() if board else slice(None)
                    diff = paired_difference(base[ap].to_numpy()[pick], group[ap].to_numpy()[pick])
                    rows.append({"variant": variant, "split": f"{split}_{board}" if board else split,
                                 "delta": diff.delta, "low": diff.low, "high": diff.high,
                                 "noise": diff.is_noise})
        return pd.DataFrame(rows).set_index(["variant", "split"])

    def summary(self) -> pd.DataFrame:
        """What `rescore` writes to rescore.csv (docs/reranking.md's table): mAP@10 and change."""
        scores = self.side_by_side().stack().rename("map10_official").reset_index()
        changes = self.against_first_stage()[["delta", "low", "high"]].reset_index()
        return scores.merge(changes, on=["variant", "split"], how="left")

    def most_changed(self, variant: str, split: str, n: int = 2, ap: str = "ap_official") -> list[int]:
        """The n queries whose AP `variant` raised most over the first stage, then the n it lowered most."""
        per = self.per_query[self.per_query["split"] == split]
        change = (per[per["variant"] == variant][ap].to_numpy()
                  - per[per["variant"] == FIRST_STAGE][ap].to_numpy())
        order = np.argsort(-change, kind="stable")
        up = [int(i) for i in order[:n] if change[i] > 0]
        down = [int(i) for i in order[::-1][:n] if change[i] < 0]
        return up + down

    def before_after(self, variant: str, split: str, queries: Sequence[int], texts: Sequence[str]
                     ) -> tuple[list[str], list[list[str]], list[set[str]]]:
        """plots.topk_grid's rows for `queries`: each query's first-stage ranking, then `variant`'s."""
        labels, ranked, relevant = [], [], []
        for i in queries:
            for name in (FIRST_STAGE, variant):
                labels.append(f"[{name}] {texts[i]}")
                ranked.append(self.rankings[(name, split)][i])
                relevant.append(self.relevant[split][i])
        return labels, ranked, relevant

    def before_after_examples(self, prep: Prepared, variant: str = "a3r", n: int = 2
                              ) -> tuple[str, list[str], list[list[str]], dict[str, Path], list[set[str]]]:
        """04's grid of `most_changed` on test where its answers are known (the demo), else val."""
        split = "test" if "test" in self.relevant else "val"
        table, queries = (prep.test_gallery, prep.test_queries) if split == "test" else (prep.val, prep.val)
        picked = self.most_changed(variant, split, n)
        labels, ranked, relevant = self.before_after(variant, split, picked, list(queries["text"]))
        return split, labels, ranked, image_paths(table), relevant


def rescore_splits(cfg: Config, splits: Sequence[Split],
                   variants: Mapping[str, Mapping[str, Any]] = ABLATION) -> Rescored:
    """Rank each split under the first stage and every variant (Config overrides on `cfg`), score them."""
    configs = {FIRST_STAGE: cfg.replace(rerank="none")} | {
        name: cfg.replace(**dict(overrides)) for name, overrides in variants.items()}
    how = {name: settings(c) for name, c in configs.items()}
    tables, per_query, rankings = {}, [], {}
    for split in splits:
        depth = min(max([c.topk for c in configs.values()] + [h.max_depth for h in how.values()]),
                    len(split.gallery_names))
        q, g = split.query_emb, split.gallery_emb
        first_scores, first, _ = retrieval.first_stage(q, g, split.kinds, depth,
                                                       category_aware=cfg.category_aware)
        for name, h in how.items():
            k = configs[name].topk
            idx = (retrieval.second_stage(q, g, first_scores, first, split.kinds, h,
                                          split.gallery_flip if h.needs_flip else None, k)[1]
                   if h.active else first[:, :k])
            ranked = [[split.gallery_names[j] for j in row] for row in idx.tolist()]
            rankings[(name, split.name)] = ranked
            tables[(name, split.name)] = scoring.score_table(ranked, split.relevant, split.kinds)
            if split.boards is not None:
                for board, board_table in scoring.board_tables(ranked, split.relevant, split.kinds,
                                                               split.boards).items():
                    tables[(name, f"{split.name}_{board}")] = board_table
            rows = infer.per_query_table(split.name, ranked, split.relevant, split.kinds, split.boards)
            per_query.append(rows.assign(variant=name)[["variant", *rows.columns]])
    scores = pd.concat(tables, names=["variant", "split", "kind"])
    return Rescored(scores, pd.concat(per_query, ignore_index=True), rankings,
                    {split.name: split.relevant for split in splits})


def rescore(cfg: Config, run_dir: Path, result: infer.Inference,
            variants: Mapping[str, Mapping[str, Any]] = ABLATION, *, prep: Prepared | None = None,
            progress: bool = True) -> Rescored:
    """`rescore_splits` on what `infer.infer(cfg, run_dir)` returned; writes RESCORE_FILE."""
    prep = prep or load_prepared(Path(run_dir))
    val, test = result.val_result, result.test_result
    splits = [(Split("val", val.query_emb, val.gallery_emb, val.gallery_names, list(prep.val["kind"]),
                     relevance_sets(prep.val), gallery_flip=val.gallery_flip_emb),
               scoring.split_gallery(prep.val))]
    relevant = infer.test_relevance(cfg, list(prep.test_queries["text"]))
    if relevant is not None:
        kinds = list(prep.test_queries["kind"])
        splits.append((Split("test", test.query_emb, test.gallery_emb, test.gallery_names, kinds, relevant,
                             boards=split_boards(kinds), gallery_flip=test.gallery_flip_emb),
                       [resolve(p) for p in prep.test_gallery["filepath"]]))
    flips = any(settings(cfg.replace(**dict(o))).needs_flip for o in variants.values())
    missing = [(split, paths) for split, paths in splits if flips and split.gallery_flip is None]
    if missing:
        net, _, preprocess_cfg = model_from_config(cfg, result.checkpoint or None)
        model_id = infer.model_identity(cfg, result.checkpoint)
        for split, paths in missing:
            names, split.gallery_flip, _ = retrieval.encode_gallery(
                net, paths, preprocess_cfg, model_id=model_id, batch_size=cfg.eval_batch_size,
                workers=cfg.workers, precision=cfg.precision, progress=progress, flip=True)
            if names != split.gallery_names:
                raise ValueError(f"{split.name}: the mirrored gallery's names differ from the run's gallery")
    rescored = rescore_splits(cfg, [split for split, _ in splits], variants)
    write_table(rescored.summary(), Path(run_dir) / RESCORE_FILE)
    return rescored
