"""Step 4: score the chosen checkpoint on val and write the test submission, scores.json and
per_query.csv (val; on the demo, whose test answers are known, also test and its boards test_A and
test_B). The checkpoint's identity keys the embedding cache."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib.config import Config
from lib.data.layout import TEST_GT_FILE
from lib.data.prepare import Prepared, load_prepared, write_table
from lib.data.relevance import read_ground_truth, relevance_sets
from lib.errors import KitError
from lib.eval import metrics, retrieval, scoring, submission
from lib.eval.boards import split_boards
from lib.eval.metrics import check_same_queries
from lib.files import atomic_write_text, sha256_file
from lib.model.encode import truncated_texts
from lib.model.factory import model_from_config
from lib.paths import resolve
from lib.train.state import SOUP, collect_result

SCORES_FILE = "scores.json"
SUBMISSION_FILE = "submission.json"
PER_QUERY_FILE = "per_query.csv"


@dataclass
class Inference:
    checkpoint: str  # what was scored ("" = the profile's pretrained weights)
    val_scores: pd.DataFrame
    val_result: retrieval.RetrievalResult
    test_result: retrieval.RetrievalResult
    submission_path: Path
    test_scores: pd.DataFrame | None  # demo only: the generator knows the test answers
    board_scores: dict[str, pd.DataFrame]  # "A", "B": the test boards (demo only, else empty)
    per_query: pd.DataFrame  # split, query, kind, board, ap_official, ap_standard
    truncated_queries: list[int]  # test queries longer than the text context: the tokenizer cut them

    def tables(self) -> dict[str, pd.DataFrame]:
        tables = {"val": self.val_scores} | ({} if self.test_scores is None else {"test": self.test_scores})
        return tables | {f"test_{board}": table for board, table in self.board_scores.items()}


def choose_checkpoint(run_dir: Path, checkpoint: str = "", soup: str = "none",
                      submit_epoch: int = 0) -> str:
    """An explicit checkpoint, else the run's soup when `soup` (cfg.soup) asks for one and it exists, else
    the run's `submit_epoch` (0: the best val epoch), else "" (pretrained weights: a run never trained)."""
    if checkpoint:
        return checkpoint
    soup_path = Path(run_dir) / "checkpoints" / SOUP
    if soup != "none" and soup_path.is_file():
        return str(soup_path)
    trained = collect_result(run_dir, submit_epoch)
    if trained.checkpoints and trained.best_checkpoint is None:
        have = ", ".join(p.name for p in trained.checkpoints)
        raise KitError(f"{run_dir} has no checkpoint of submit_epoch={submit_epoch} (it has {have}): train "
                       "that far, or set submit_epoch=0 (the best val epoch)")
    return str(trained.best_checkpoint) if trained.best_checkpoint else ""


def model_identity(cfg: Config, checkpoint: str) -> str:
    """Cache key of the weights: the file's sha256, or the architecture + pretrained tag."""
    source = resolve(checkpoint) if checkpoint else None
    if source is None and cfg.pretrained and cfg.path("pretrained").is_file():
        source = cfg.path("pretrained")
    if source is not None and Path(source).is_file():
        return sha256_file(source)
    return f"{cfg.model}/{cfg.pretrained}/{cfg.image_size}"


def test_relevance(cfg: Config, queries: list[str]) -> list[set[str]] | None:
    """The demo's test ground truth, checked to be in the queries' order; None for the real data."""
    gt_path = cfg.path("data_root") / TEST_GT_FILE
    if not gt_path.exists():
        return None
    gt = read_ground_truth(gt_path)
    check_same_queries([text for text, _ in gt], queries, what="test_text.txt")
    return [set(images) for _, images in gt]


def infer(cfg: Config, run_dir: Path, checkpoint: str = "", prep: Prepared | None = None,
          progress: bool = True) -> Inference:
    prep = prep or load_prepared(run_dir)
    chosen = choose_checkpoint(run_dir, checkpoint, soup=cfg.soup, submit_epoch=cfg.submit_epoch)
    net, tokenizer, preprocess_cfg = model_from_config(cfg, chosen or None)
    net.eval()
    model_id = model_identity(cfg, chosen)
    val_relevant = relevance_sets(prep.val)
    val_scores, val_result = scoring.evaluate_split(net, tokenizer, preprocess_cfg, prep.val, val_relevant,
                                                    cfg, model_id=model_id, progress=progress)
    texts, kinds = list(prep.test_queries["text"]), list(prep.test_queries["kind"])
    test_result = retrieval.retrieve(net, tokenizer, preprocess_cfg, texts, kinds,
                                     [resolve(p) for p in prep.test_gallery["filepath"]], model_id=model_id,
                                     progress=progress, **retrieval.options(cfg))
    path = run_dir / SUBMISSION_FILE
    submission.write_submission(path, texts, test_result.image_names, gallery=set(prep.test_gallery["image"]))
    relevant = test_relevance(cfg, texts)
    test_scores, board_scores = None, {}
    per_query = [per_query_table("val", val_result.image_names, val_relevant, list(prep.val["kind"]))]
    if relevant is not None:
        test_scores = scoring.score_table(test_result.image_names, relevant, kinds)
        boards = split_boards(kinds)
        board_scores = scoring.board_tables(test_result.image_names, relevant, kinds, boards)
        per_query.append(per_query_table("test", test_result.image_names, relevant, kinds, boards))
    truncated = truncated_texts(tokenizer, test_result.encoded_texts)
    result = Inference(chosen, val_scores, val_result, test_result, path, test_scores, board_scores,
                       pd.concat(per_query, ignore_index=True), truncated)
    write_scores_tables(run_dir, Path(chosen).name if chosen else "pretrained", result.tables(),
                        [result.per_query])
    return result


def summary_table(result: Inference) -> pd.DataFrame:
    """One row per (split, kind): val, and on the demo test with its boards A and B."""
    return pd.concat(result.tables(), names=["split", "kind"])


def per_query_table(split: str, ranked: list[list[str]], relevant: list[set[str]], kinds: list[str],
                    boards=None) -> pd.DataFrame:
    """One row per query: split, query, kind, board ("" outside the demo's test), ap_official, ap_standard."""
    per = metrics.per_query(ranked, relevant)
    return pd.DataFrame({"split": split, "query": range(len(ranked)), "kind": kinds,
                         "board": list(boards) if boards is not None else "",
                         "ap_official": per["ap_official"], "ap_standard": per["ap_standard"]})


def write_scores_tables(run_dir: Path, checkpoint: str, tables: dict[str, pd.DataFrame],
                        per_query: list[pd.DataFrame]) -> Path:
    """scores.json from score tables by split ("val", "test", "test_A", ...) and per_query.csv."""
    data = {"checkpoint": checkpoint, **{split: scoring.flat_metrics(table, prefix="")
                                         for split, table in tables.items()}}
    write_table(pd.concat(per_query, ignore_index=True), Path(run_dir) / PER_QUERY_FILE)
    return atomic_write_text(Path(run_dir) / SCORES_FILE, json.dumps(data, indent=1, sort_keys=True) + "\n")
