"""Late fusion of several trained runs: the mean of their similarity matrices ranks the gallery.

The competition winners' standard move, measured beside the soups (which average weights instead):
each member ranks with its kept checkpoint (or soup), its query and gallery embeddings are
concatenated with the others' and divided by sqrt(M), so that a query-image dot product is the mean
of the M models' cosines, and the first stage runs on that. The members must share the prepared
data (the seeds of one recipe, or different recipes on the same run's data). Writes scores.json and
per_query.csv as 04_infer does, so the ablation scores an ensemble like any other row.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from lib import runs
from lib.config import Config
from lib.data.prepare import Prepared, load_prepared
from lib.data.relevance import relevance_sets
from lib.errors import KitError
from lib.eval import infer, retrieval, scoring
from lib.eval.boards import split_boards
from lib.eval.topk import topk
from lib.model.factory import model_from_config
from lib.paths import resolve


def fuse(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """Row-normalised embeddings of the same items under M models -> one (n, sum of d) embedding
    whose dot products are the mean of the models' cosines."""
    if not embeddings or len({len(e) for e in embeddings}) != 1:
        raise KitError("an ensemble needs at least one model, each embedding the same items")
    return torch.cat(list(embeddings), dim=1) / math.sqrt(len(embeddings))


def _member_embeddings(cfg: Config, run_dir: Path, prep: Prepared, gallery: dict[str, list[Path]]
                       ) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """(query embeddings, gallery embeddings, gallery names) per split, from the run's kept weights."""
    checkpoint = infer.choose_checkpoint(run_dir, soup=cfg.soup, submit_epoch=cfg.submit_epoch)
    net, tokenizer, preprocess_cfg = model_from_config(cfg, checkpoint or None)
    net.eval()
    model_id = infer.model_identity(cfg, checkpoint)
    opts = {**retrieval.options(cfg), "k": 1, "category_aware": False, "rerank": None}
    out = {}
    for split, table in (("val", prep.val), ("test", prep.test_queries)):
        found = retrieval.retrieve(net, tokenizer, preprocess_cfg, list(table["text"]), list(table["kind"]),
                                   gallery[split], model_id=model_id, progress=False, **opts)
        out[split] = (found.query_emb, found.gallery_emb, found.gallery_names)
    return out


def score_ensemble(cfg: Config, members: Sequence[Path], out_dir: Path) -> Path:
    """Rank val and test with the fused embeddings of `members` (scored with cfg's query policy and
    top k, first stage only); write out_dir/scores.json and per_query.csv. Returns out_dir."""
    if cfg.category_aware or cfg.rerank != "none":
        raise KitError("an ensemble is scored on its first stage: category_aware=false and rerank=none")
    prep = load_prepared(Path(members[0]))
    gallery = {"val": scoring.split_gallery(prep.val),
               "test": [resolve(p) for p in prep.test_gallery["filepath"]]}
    embedded = [_member_embeddings(runs.read_params(m), Path(m), prep, gallery) for m in members]
    ranked = {}
    for split in ("val", "test"):
        names = embedded[0][split][2]
        if any(e[split][2] != names for e in embedded):
            raise KitError("the members' galleries differ: an ensemble needs runs of the same prepared data")
        query, images = (fuse([e[split][i] for e in embedded]) for i in (0, 1))
        _, idx = topk(query, images, k=cfg.topk)
        ranked[split] = [[names[j] for j in row] for row in idx.tolist()]
    kinds = list(prep.test_queries["kind"])
    relevant = infer.test_relevance(cfg, list(prep.test_queries["text"]))
    val_relevant, val_kinds = relevance_sets(prep.val), list(prep.val["kind"])
    per_query = [infer.per_query_table("val", ranked["val"], val_relevant, val_kinds)]
    result = {"val": scoring.score_table(ranked["val"], val_relevant, val_kinds)}
    if relevant is not None:
        boards = split_boards(kinds)
        per_query.append(infer.per_query_table("test", ranked["test"], relevant, kinds, boards))
        result["test"] = scoring.score_table(ranked["test"], relevant, kinds)
        result.update({f"test_{b}": t for b, t in scoring.board_tables(ranked["test"], relevant, kinds,
                                                                        boards).items()})
    infer.write_scores_tables(out_dir, "ensemble of " + ", ".join(Path(m).name for m in members), result,
                              per_query)
    return out_dir
