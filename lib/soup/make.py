"""Model soups and WiSE-FT: one checkpoint from several, chosen on val (and board A where known).

The methods (cfg.soup), the score that chooses and what is written: docs/soups.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lib import runs, steps
from lib.config import Config
from lib.data.prepare import load_prepared
from lib.data.relevance import relevance_sets
from lib.errors import KitError
from lib.eval import retrieval, scoring
from lib.eval.boards import split_boards
from lib.eval.infer import model_identity, test_relevance
from lib.files import atomic_write_text
from lib.model.checkpoints import save_checkpoint
from lib.model.factory import model_from_config
from lib.paths import portable, resolve
from lib.soup.averaging import (
    Ingredient,
    State,
    add_to_mean,
    check_compatible,
    dtypes,
    float32,
    interpolate,
    mean_of,
    read_weights,
    restore_dtypes,
)
from lib.train.state import SOUP, collect_result

SOUP_JSON = "soup.json"
VAL_KEY, A_KEY = "val_map10_official", "test_A_map10_official"
Scorer = Callable[[State], dict[str, float]]  # weights -> {VAL_KEY: ..., A_KEY: ... where known}
Log = Callable[[str], None]


class SoupError(KitError, ValueError):
    """A soup that cannot be made from this run (no checkpoints, no foundation weights)."""


@dataclass
class SoupResult:
    method: str
    weights: State  # the chosen weights (what soup.pt holds)
    ingredients: list[Ingredient]
    scores: dict[str, float]  # the chosen weights' VAL_KEY (and A_KEY)
    candidates: list[dict[str, Any]]  # every candidate tried, with its scores
    alpha: float | None = None  # WiSE-FT only
    checkpoint: Path | None = None  # <run>/checkpoints/soup.pt once written
    sha256: str = ""

    def summary(self) -> dict[str, Any]:
        """What the command line prints last (one JSON line)."""
        out = {"method": self.method, "ingredients": [i.name for i in self.ingredients],
               **({"alpha": self.alpha} if self.alpha is not None else {}), **self.scores}
        return {**out, "checkpoint": str(self.checkpoint or ""), "sha256": self.sha256}


def selection_score(scores: dict[str, float]) -> float:
    """The mean of val's official mAP@10 and board A's where known (the kit's rule of choice)."""
    return sum(scores.values()) / len(scores)


def _candidate(step: str, ingredients: Sequence[Ingredient], scores: dict[str, float], **extra) -> dict:
    return {"step": step, "ingredients": [i.name for i in ingredients], **extra, **scores,
            "selection_score": selection_score(scores)}


def _show(row: dict) -> str:
    shown = " ".join(f"{key.removesuffix('_map10_official')} {row[key]:.4f}" for key in _scores(row))
    step = f"{row['step']} {row['alpha']:g}" if "alpha" in row else row["step"]
    return f"[{step}] {' + '.join(row['ingredients'])}: {shown}"


def uniform_soup(paths: Sequence[Path], model: str, scorer: Scorer, log: Log = print,
                 home: Path | None = None) -> SoupResult:
    """The mean of every checkpoint, scored once; `home`: the soup's run (others' are named with theirs)."""
    weights, ingredients = mean_of(paths, model, home)
    row = _candidate("uniform", ingredients, scorer(weights), kept=True)
    log(_show(row))
    return SoupResult("uniform", weights, ingredients, _scores(row), [row])


def greedy_soup(paths: Sequence[Path], model: str, scorer: Scorer, log: Log = print,
                home: Path | None = None) -> SoupResult:
    """Ingredients by their own score, best first (the earlier among equals); each joins only if the
    soup's selection score does not drop (and, unlike the reference's notebook, is averaged in)."""
    loaded = [read_weights(path, model, home) for path in paths]
    if not loaded:
        raise SoupError("no checkpoints to make a soup of")
    for state, ingredient in loaded[1:]:
        check_compatible(loaded[0][0], state, str(ingredient.path))
    rows = []
    for state, ingredient in loaded:
        rows.append(_candidate("alone", [ingredient], scorer(state)))
        log(_show(rows[-1]))
    order = sorted(range(len(loaded)), key=lambda i: -rows[i]["selection_score"])
    first_state, first = loaded[order[0]]
    soup, types, members, best = float32(first_state), dtypes(first_state), [first], rows[order[0]]
    for i in order[1:]:
        state, ingredient = loaded[i]
        trial = add_to_mean(soup, len(members), state)
        row = _candidate("add", [*members, ingredient], scorer(restore_dtypes(trial, types)))
        row["kept"] = row["selection_score"] >= best["selection_score"]
        log(_show(row) + ("" if row["kept"] else " (dropped)"))
        rows.append(row)
        if row["kept"]:
            soup, members, best = trial, [*members, ingredient], row
    return SoupResult("greedy", restore_dtypes(soup, types), members, _scores(best), rows)


def wise_soup(foundation: State, finetuned: Path, model: str, alphas: Sequence[float], scorer: Scorer,
              log: Log = print) -> SoupResult:
    """WiSE-FT: each alpha of the grid scored, the best kept (the first of equal scores)."""
    tuned, ingredient = read_weights(finetuned, model)
    check_compatible(foundation, tuned, str(finetuned))
    rows = []
    for alpha in alphas:
        rows.append(_candidate("alpha", [ingredient], scorer(interpolate(foundation, tuned, alpha)),
                               alpha=float(alpha)))
        log(_show(rows[-1]))
    best = max(rows, key=lambda r: r["selection_score"])
    for row in rows:
        row["kept"] = row is best
    return SoupResult("wise", interpolate(foundation, tuned, best["alpha"]), [ingredient], _scores(best),
                      rows, alpha=best["alpha"])


def _scores(row: dict) -> dict[str, float]:
    return {k: row[k] for k in (VAL_KEY, A_KEY) if k in row}


def selection_scorer(cfg: Config, run_dir: Path, checkpoint: Path) -> Scorer:
    """Scores weights as 04_infer would (val; test board A where the answers are known), nothing
    cached: every candidate is other weights. The model is built once, from `checkpoint`."""
    prep = load_prepared(run_dir)
    net, tokenizer, preprocess_cfg = model_from_config(cfg, checkpoint)
    net.eval()
    val_relevant = relevance_sets(prep.val)
    texts, kinds = list(prep.test_queries["text"]), list(prep.test_queries["kind"])
    relevant = test_relevance(cfg, texts)
    board_a = [i for i, board in enumerate(split_boards(kinds)) if board == "A"]
    gallery = [resolve(p) for p in prep.test_gallery["filepath"]]

    def score(weights: State) -> dict[str, float]:
        net.load_state_dict(weights)
        val, _ = scoring.evaluate_split(net, tokenizer, preprocess_cfg, prep.val, val_relevant, cfg,
                                        cache_dir=None, progress=False)
        scores = {VAL_KEY: float(val.loc["all", "map10_official"])}
        if relevant is not None:  # all queries, as 04_infer (category-aware retrieval looks at them all)
            test = retrieval.retrieve(net, tokenizer, preprocess_cfg, texts, kinds, gallery, cache_dir=None,
                                      progress=False, **retrieval.options(cfg))
            table = scoring.score_table([test.image_names[i] for i in board_a],
                                        [relevant[i] for i in board_a], [kinds[i] for i in board_a])
            scores[A_KEY] = float(table.loc["all", "map10_official"])
        return scores

    return score


def _lazy(build: Callable[[], Scorer]) -> Scorer:
    """Built on the first call: mismatched checkpoints are refused before model and data load (minutes)."""
    built: list[Scorer] = []

    def score(weights: State) -> dict[str, float]:
        if not built:
            built.append(build())
        return built[0](weights)

    return score


def foundation_weights(cfg: Config) -> State:
    """The weights fine-tuning started from (cfg.pretrained), for WiSE-FT."""
    if not cfg.pretrained:
        raise SoupError("soup=wise needs the foundation weights, and pretrained is empty (the run started "
                        "from a random initialisation): use soup=greedy or uniform")
    net, _, _ = model_from_config(cfg, device="cpu")
    return net.state_dict()


def make_soup(cfg: Config, run_dir: Path, *, progress: bool = True, scorer: Scorer | None = None,
              foundation: State | None = None) -> SoupResult | None:
    """cfg.soup's soup of the run's epochs (and cfg.soup_runs'), scored on this run's data, written to
    checkpoints/soup.pt and soup.json; None for soup "none". `scorer`, `foundation`: stand-ins (tests)."""
    if cfg.soup == "none":
        return None
    run_dir = Path(run_dir)
    trained = collect_result(run_dir, cfg.submit_epoch)
    if not trained.checkpoints:
        raise SoupError(f"{run_dir / 'checkpoints'} holds no epoch_N.pt: train the run first "
                        "(notebooks/03_train.ipynb), then make its soup")
    pool, other_runs = list(trained.checkpoints), [runs.find_run(r) for r in cfg.soup_runs]
    for other in other_runs:
        theirs = collect_result(other).checkpoints
        if not theirs:
            raise SoupError(f"{Path(other) / 'checkpoints'} holds no epoch_N.pt to add to the soup")
        pool += theirs
    log: Log = (lambda line: print(line, flush=True)) if progress else (lambda line: None)
    log(f"soup={cfg.soup} of {run_dir.name}: candidates scored on val (and test board A where known)")
    scorer = scorer or _lazy(lambda: selection_scorer(cfg, run_dir, trained.best_checkpoint))
    if cfg.soup == "uniform":
        result = uniform_soup(pool, cfg.model, scorer, log, home=run_dir)
    elif cfg.soup == "greedy":
        result = greedy_soup(pool, cfg.model, scorer, log, home=run_dir)
    elif other_runs:
        raise SoupError("WiSE-FT interpolates the foundation and this run's kept epoch: soup_runs is for "
                        "uniform and greedy soups")
    else:
        foundation = foundation if foundation is not None else foundation_weights(cfg)
        result = wise_soup(foundation, trained.best_checkpoint, cfg.model, cfg.wise_alphas, scorer, log)
    write_soup(cfg, run_dir, result)
    return result


def write_soup(cfg: Config, run_dir: Path, result: SoupResult) -> Path:
    """checkpoints/soup.pt (weights and what they are made of) and soup.json (also how they were chosen)."""
    made_of = {"method": result.method, "ingredients": [i.record() for i in result.ingredients]}
    if result.alpha is not None:
        made_of.update(alpha=result.alpha, foundation=cfg.pretrained, foundation_id=model_identity(cfg, ""))
    epochs = [i.epoch for i in result.ingredients if i.epoch is not None]
    path = Path(run_dir) / "checkpoints" / SOUP
    result.sha256 = save_checkpoint(path, {"name": cfg.model, "epoch": max(epochs) if epochs else None,
                                           "state_dict": result.weights, "soup": made_of})
    result.checkpoint = path
    record = {**made_of, "checkpoint": f"checkpoints/{SOUP}", "sha256": result.sha256, **result.scores,
              "selection": f"mean of {' and '.join(result.scores)}", "candidates": result.candidates}
    return atomic_write_text(Path(run_dir) / SOUP_JSON, json.dumps(record, indent=1, sort_keys=True) + "\n")


def candidates_table(run_dir: Path) -> pd.DataFrame | None:
    """The run's soup.json as a table, one row per candidate tried (each epoch alone, each trial, each
    alpha) with its val and board A scores and whether it was kept; None when the run made no soup."""
    path = Path(run_dir) / SOUP_JSON
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    rows = [{"method": record["method"], "step": row["step"], "alpha": row.get("alpha"),
             "ingredients": " + ".join(row["ingredients"]), "val": row.get(VAL_KEY), "test_A": row.get(A_KEY),
             "selection_score": row["selection_score"], "kept": bool(row.get("kept", False))}
            for row in record["candidates"]]
    return pd.DataFrame(rows).dropna(axis=1, how="all")


def _changed(old: Config, new: Config) -> dict[str, Any]:
    return {k: v for k, v in new.to_dict().items() if old.to_dict()[k] != v}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.soup", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a trained run (its params.yaml and checkpoints/)")
    parser.add_argument("--method", choices=("greedy", "uniform", "wise"),
                        help="default: the run's soup parameter, else greedy (wise with --alpha)")
    parser.add_argument("--alpha", type=float, help="WiSE-FT with this alpha instead of the grid's best")
    parser.add_argument("--with", dest="others", nargs="+", default=None, metavar="RUN",
                        help="other runs of the same model whose epochs join the pool (uniform, greedy)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        run_dir = runs.find_run(args.run)
        saved = runs.read_params(run_dir)
        default = "wise" if args.alpha is not None else saved.soup if saved.soup != "none" else "greedy"
        method = args.method or default
        if args.alpha is not None and method != "wise":
            raise SoupError(f"--alpha is WiSE-FT's: it does not go with --method {method}")
        changes: dict[str, Any] = {"soup": method}
        if args.alpha is not None:
            changes["wise_alphas"] = [args.alpha]
        if args.others is not None:
            changes["soup_runs"] = [portable(runs.find_run(r)) for r in args.others]
        cfg = saved.replace(**changes)
        result = make_soup(cfg, run_dir, progress=not args.no_progress)
        if cfg != saved:  # the run is now scored as this soup (lib.eval.infer): recorded, 03 and 04 stale
            steps.change_parameters(run_dir, _changed(saved, cfg), by="python -m lib.soup")
            print(f"recorded in the run's history; 03_train and 04_infer show the soup after "
                  f"{runs.resume_command(run_dir)}", file=sys.stderr)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result.summary()))
    return 0
