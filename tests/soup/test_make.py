"""lib.soup.make: uniform and greedy soups and WiSE-FT on kit-micro-vit checkpoints, chosen by a fake
scorer whose scores the tests set (the real one on the smoke run: the slow test at the end)."""
from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import sys
from itertools import combinations

import pandas as pd
import pytest
import torch

from lib import config, runs, steps
from lib.eval.boards import split_boards
from lib.eval.embedding_cache import CACHE_ENV
from lib.eval.infer import SCORES_FILE, choose_checkpoint, infer
from lib.files import sha256_file
from lib.model.checkpoints import load_checkpoint, save_checkpoint
from lib.model.factory import create_model, model_from_config
from lib.paths import REPO_ROOT, portable
from lib.soup import make as soup
from lib.soup.averaging import AveragingError
from lib.soup.make import A_KEY, SOUP_JSON, VAL_KEY
from lib.train.state import SOUP
from tests.model import MICRO, same_weights, weights

SCALES = {1: 1.0, 2: 2.0, 3: 4.0, 4: 8.0}  # epoch -> logit_scale: every subset has its own mean


def micro_state(seed: int = 0, logit_scale: float | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = weights(create_model(MICRO)[0])
    if logit_scale is not None:
        state["logit_scale"] = torch.tensor(logit_scale)
    return state


def make_run(root, states: dict[int, dict], **overrides):
    """A run folder holding params.yaml and epoch_N.pt (with an optimizer state, as training writes)."""
    run_dir = root / "run"
    cfg = config.load("smoke", model=MICRO, pretrained="", runs_root=str(root), run_name="run", **overrides)
    for epoch, state in states.items():
        save_checkpoint(run_dir / "checkpoints" / f"epoch_{epoch}.pt",
                        {"epoch": epoch, "name": MICRO, "state_dict": state, "optimizer": {"step": epoch}})
    runs.write_params(cfg, run_dir)
    return cfg, run_dir


def members(state) -> frozenset[int]:
    """Which epochs of SCALES a soup holds, read from its logit_scale (their mean)."""
    value = float(state["logit_scale"])
    for size in range(1, len(SCALES) + 1):
        for combo in combinations(SCALES, size):
            if abs(sum(SCALES[e] for e in combo) / size - value) < 1e-4:
                return frozenset(combo)
    raise AssertionError(f"no subset has mean {value}")


def table_scorer(table: dict[frozenset, float], calls: list | None = None):
    def score(state):
        chosen = members(state)
        if calls is not None:
            calls.append(chosen)
        return {VAL_KEY: table[chosen]}
    return score


def soup_weights(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / SOUP)["state_dict"]


def test_off_by_default():
    assert config.Config().soup == "none"
    assert soup.make_soup(config.Config(), REPO_ROOT / "no-such-run") is None


def test_uniform_soup_of_identical_checkpoints_is_the_checkpoint(tmp_path):
    state = micro_state(0)
    cfg, run_dir = make_run(tmp_path, {1: state, 2: state}, soup="uniform")
    result = soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5}, progress=False)
    assert same_weights(soup_weights(run_dir), state)
    assert [i.path.name for i in result.ingredients] == ["epoch_1.pt", "epoch_2.pt"]
    saved = load_checkpoint(run_dir / "checkpoints" / SOUP)  # verified against its sidecar
    assert (saved["name"], saved["epoch"], saved["soup"]["method"]) == (MICRO, 2, "uniform")
    assert set(saved) == {"name", "epoch", "state_dict", "soup"}  # weights only
    assert choose_checkpoint(run_dir, soup="uniform") == str(run_dir / "checkpoints" / SOUP)
    net, _, _ = model_from_config(cfg, choose_checkpoint(run_dir, soup="uniform"))  # open_clip loads it
    assert same_weights(weights(net), state)


def test_uniform_soup_of_different_checkpoints_is_their_mean(tmp_path):
    a, b = micro_state(0), micro_state(1)
    cfg, run_dir = make_run(tmp_path, {1: a, 2: b}, soup="uniform")
    soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5}, progress=False)
    for key, value in soup_weights(run_dir).items():
        mean = (a[key].double() + b[key].double()) / 2
        torch.testing.assert_close(value, mean.float(), rtol=1e-6, atol=1e-7)


def test_greedy_keeps_an_ingredient_only_when_the_score_does_not_drop(tmp_path):
    """Epochs scored 0.30, 0.50, 0.40, 0.45 alone: tried in the order 2, 4, 3, 1; adding 4 lowers the
    score (dropped), adding 3 keeps it level (kept), adding 1 raises it (kept)."""
    cfg, run_dir = make_run(tmp_path, {e: micro_state(0, s) for e, s in SCALES.items()}, soup="greedy")
    f = frozenset
    table = {f({1}): 0.30, f({2}): 0.50, f({3}): 0.40, f({4}): 0.45,
             f({2, 4}): 0.49, f({2, 3}): 0.50, f({1, 2, 3}): 0.52}
    calls = []
    result = soup.make_soup(cfg, run_dir, scorer=table_scorer(table, calls), progress=False)
    assert calls == [f({1}), f({2}), f({3}), f({4}), f({2, 4}), f({2, 3}), f({1, 2, 3})]
    assert [i.path.name for i in result.ingredients] == ["epoch_2.pt", "epoch_3.pt", "epoch_1.pt"]
    assert result.scores == {VAL_KEY: 0.52}
    assert float(soup_weights(run_dir)["logit_scale"]) == pytest.approx((1 + 2 + 4) / 3)
    record = json.loads((run_dir / SOUP_JSON).read_text())
    assert record["method"] == "greedy" and record[VAL_KEY] == 0.52
    assert [i["file"] for i in record["ingredients"]] == ["epoch_2.pt", "epoch_3.pt", "epoch_1.pt"]
    assert record["ingredients"][0]["sha256"] == sha256_file(run_dir / "checkpoints" / "epoch_2.pt")
    tried = [(c["step"], c["ingredients"], c[VAL_KEY], c.get("kept")) for c in record["candidates"]]
    assert tried[4:] == [("add", ["epoch_2.pt", "epoch_4.pt"], 0.49, False),
                         ("add", ["epoch_2.pt", "epoch_3.pt"], 0.50, True),
                         ("add", ["epoch_2.pt", "epoch_3.pt", "epoch_1.pt"], 0.52, True)]
    assert record["sha256"] == sha256_file(run_dir / "checkpoints" / SOUP)


def test_candidates_table_is_soup_json_row_by_row(tmp_path):
    """04_infer's soup table: every candidate soup.json recorded, in order, with its scores and choice."""
    two_epochs = {e: micro_state(0, s) for e, s in SCALES.items() if e <= 2}
    cfg, run_dir = make_run(tmp_path, two_epochs, soup="greedy")
    assert soup.candidates_table(run_dir) is None  # no soup made yet
    f = frozenset
    scores = {f({1}): 0.3, f({2}): 0.5, f({1, 2}): 0.4}
    soup.make_soup(cfg, run_dir, scorer=table_scorer(scores), progress=False)
    table = soup.candidates_table(run_dir)
    assert list(table["step"]) == ["alone", "alone", "add"]
    assert list(table["ingredients"]) == ["epoch_1.pt", "epoch_2.pt", "epoch_2.pt + epoch_1.pt"]
    assert list(table["val"]) == [0.3, 0.5, 0.4] and list(table["kept"]) == [False, False, False]
    assert "test_A" not in table and "alpha" not in table  # nothing recorded, no empty column


def test_greedy_never_scores_below_its_best_ingredient(tmp_path):
    """Random scores for every subset, eight times: the soup's score is the best single one's or more,
    and every kept step is at least the one before."""
    cfg, run_dir = make_run(tmp_path, {e: micro_state(0, s) for e, s in SCALES.items()}, soup="greedy")
    rng = random.Random(0)
    subsets = [frozenset(c) for size in range(1, 5) for c in combinations(SCALES, size)]
    for _ in range(8):
        table = {s: round(rng.random(), 2) for s in subsets}
        result = soup.greedy_soup(sorted((run_dir / "checkpoints").glob("epoch_*.pt")), MICRO,
                                  table_scorer(table), log=lambda line: None)
        assert result.scores[VAL_KEY] >= max(table[frozenset({e})] for e in SCALES)
        kept = [c["selection_score"] for c in result.candidates if c.get("kept")]
        assert kept == sorted(kept)
        assert members(result.weights) == frozenset(i.epoch for i in result.ingredients)
        assert result.scores[VAL_KEY] == table[members(result.weights)]


def test_wise_ends_are_the_foundation_and_the_fine_tuned_weights(tmp_path):
    foundation, tuned = micro_state(0), micro_state(1)
    cfg, run_dir = make_run(tmp_path, {1: tuned}, soup="wise", wise_alphas=[0.0])
    result = soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5}, foundation=foundation,
                            progress=False)
    assert result.alpha == 0.0 and same_weights(soup_weights(run_dir), foundation)
    soup.make_soup(cfg.replace(wise_alphas=[1.0]), run_dir, scorer=lambda w: {VAL_KEY: 0.5},
                   foundation=foundation, progress=False)
    assert same_weights(soup_weights(run_dir), tuned)


def test_wise_alpha_is_chosen_on_the_mean_of_val_and_board_a(tmp_path):
    """val peaks at alpha 0.8, board A (more steeply) at 0.2: their mean peaks at 0.2, not val's 0.8."""
    foundation, tuned = micro_state(0, 0.0), micro_state(0, 1.0)  # logit_scale = alpha

    def scorer(state):
        alpha = float(state["logit_scale"])
        return {VAL_KEY: 1 - abs(alpha - 0.8), A_KEY: 1 - 2 * abs(alpha - 0.2)}

    cfg, run_dir = make_run(tmp_path, {1: tuned}, soup="wise")
    result = soup.make_soup(cfg, run_dir, scorer=scorer, foundation=foundation, progress=False)
    record = json.loads((run_dir / SOUP_JSON).read_text())
    assert result.alpha == record["alpha"] == 0.2
    assert [c["alpha"] for c in record["candidates"]] == cfg.wise_alphas
    assert [c["alpha"] for c in record["candidates"] if c["kept"]] == [0.2]
    assert record["selection"] == f"mean of {VAL_KEY} and {A_KEY}"
    assert float(soup_weights(run_dir)["logit_scale"]) == pytest.approx(0.2)
    with pytest.raises(soup.SoupError, match="pretrained is empty"):
        soup.make_soup(cfg, run_dir, scorer=scorer, progress=False)


def test_the_same_checkpoints_give_the_same_bytes(tmp_path):
    states = {e: micro_state(e) for e in (1, 2, 3)}
    digests = []
    for name in ("a", "b"):
        cfg, run_dir = make_run(tmp_path / name, states, soup="uniform")
        soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5}, progress=False)
        digests.append((sha256_file(run_dir / "checkpoints" / SOUP), (run_dir / SOUP_JSON).read_bytes()))
    assert digests[0] == digests[1]


def test_cli_records_the_method_and_prints_json_last(tmp_path, monkeypatch, capsys):
    cfg, run_dir = make_run(tmp_path, {1: micro_state(0, 1.0), 2: micro_state(0, 2.0)})
    monkeypatch.setattr(soup, "selection_scorer", lambda *a: table_scorer(
        {frozenset({1}): 0.3, frozenset({2}): 0.4, frozenset({1, 2}): 0.45}))
    assert soup.main(["--run", str(run_dir)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (last["method"], last["ingredients"]) == ("greedy", ["epoch_2.pt", "epoch_1.pt"])
    assert last[VAL_KEY] == 0.45 and A_KEY not in last  # no test answers here: chosen on val alone
    assert runs.read_params(run_dir).soup == "greedy"  # 04_infer now scores the soup
    assert choose_checkpoint(run_dir, soup=runs.read_params(run_dir).soup) == last["checkpoint"]


def test_cli_refusals_are_one_line_and_exit_1(tmp_path, capsys):
    cfg, run_dir = make_run(tmp_path, {1: micro_state(0)})
    assert soup.main(["--run", str(run_dir), "--alpha", "1.5"]) == 1
    assert "wise_alphas=[1.5] is out of range" in capsys.readouterr().err
    assert soup.main(["--run", str(run_dir), "--method", "uniform", "--alpha", "0.5"]) == 1
    assert "--alpha is WiSE-FT's" in capsys.readouterr().err
    other_model = {"name": "ViT-B-32", "state_dict": micro_state(1)}
    save_checkpoint(run_dir / "checkpoints" / "epoch_2.pt", other_model)
    assert soup.main(["--run", str(run_dir), "--method", "uniform"]) == 1
    assert "holds a ViT-B-32 model" in capsys.readouterr().err
    assert runs.read_params(run_dir).soup == "none"  # nothing made, nothing recorded


@pytest.mark.slow
def test_the_command_line_refusal_is_one_line_without_a_traceback(tmp_path):
    _, run_dir = make_run(tmp_path, {1: micro_state(0)})
    shutil.rmtree(run_dir / "checkpoints")
    done = subprocess.run([sys.executable, "-m", "lib.soup", "--run", str(run_dir)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "holds no epoch_N.pt" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_mismatched_ingredients_are_refused_naming_the_key(tmp_path):
    state = micro_state(0)
    fewer = {k: v for k, v in state.items() if k != "text_projection"}
    cfg, run_dir = make_run(tmp_path, {1: state, 2: fewer}, soup="greedy")
    with pytest.raises(AveragingError, match="epoch_2.pt lacks key 'text_projection'"):
        soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5}, progress=False)
    assert not (run_dir / "checkpoints" / SOUP).exists()


@pytest.mark.slow
def test_wise_on_the_smoke_run_scores_as_04_infer_does(smoke_notebook, smoke_workspace, tmp_path):
    """The real scorer on the smoke run (a copy): soup.json's val and board A are what 04_infer then
    reports for soup.pt."""
    smoke_notebook("03_train")
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_workspace["run_dir"], run_dir, symlinks=True)
    done = subprocess.run([sys.executable, "-m", "lib.soup", "--run", str(run_dir), "--method", "wise",
                           "--no-progress"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = json.loads(done.stdout.strip().splitlines()[-1])
    record = json.loads((run_dir / SOUP_JSON).read_text())
    best = max(record["candidates"], key=lambda c: c["selection_score"])  # the first of equal scores
    assert last["method"] == "wise" and last["alpha"] == best["alpha"] == record["alpha"] and A_KEY in last
    assert [c["alpha"] for c in record["candidates"] if c["kept"]] == [best["alpha"]]
    cfg = runs.read_params(run_dir)
    assert cfg.soup == "wise"
    infer(cfg, run_dir, progress=False)
    scores = json.loads((run_dir / SCORES_FILE).read_text())
    assert scores["checkpoint"] == SOUP
    assert scores["val"]["map10_official"] == pytest.approx(last[VAL_KEY], abs=1e-6)
    assert scores["test_A"]["map10_official"] == pytest.approx(last[A_KEY], abs=1e-6)


def test_wise_keeps_the_first_of_equal_scores(tmp_path):
    """alpha 0.3 and 0.6 score the same best 0.9 (the others 0.5): the grid's first of them, 0.3, is
    kept; a scan keeping the last maximum would take 0.6."""
    foundation, tuned = micro_state(0, 0.0), micro_state(0, 1.0)  # logit_scale = alpha

    def scorer(state):
        return {VAL_KEY: 0.9 if round(float(state["logit_scale"]), 6) in (0.3, 0.6) else 0.5}

    cfg, run_dir = make_run(tmp_path, {1: tuned}, soup="wise")
    result = soup.make_soup(cfg, run_dir, scorer=scorer, foundation=foundation, progress=False)
    record = json.loads((run_dir / SOUP_JSON).read_text())
    assert result.alpha == record["alpha"] == 0.3
    assert [c["alpha"] for c in record["candidates"] if c["kept"]] == [0.3]


def test_a_greedy_soup_across_runs_names_each_ingredients_run(tmp_path):
    """As the reference mixed epochs of two runs: this run's epochs 1 and 2, the other's 3 and 4;
    alone 0.30, 0.50 | 0.40, 0.45; order 2, other/4, other/3, 1."""
    f = frozenset
    _, other = make_run(tmp_path / "b", {3: micro_state(0, SCALES[3]), 4: micro_state(0, SCALES[4])})
    cfg, run_dir = make_run(tmp_path / "a", {1: micro_state(0, SCALES[1]), 2: micro_state(0, SCALES[2])},
                            soup="greedy", soup_runs=[str(other)])
    table = {f({1}): 0.30, f({2}): 0.50, f({3}): 0.40, f({4}): 0.45,
             f({2, 4}): 0.51, f({2, 3, 4}): 0.49, f({1, 2, 4}): 0.52}
    result = soup.make_soup(cfg, run_dir, scorer=table_scorer(table), progress=False)
    assert [i.name for i in result.ingredients] == ["epoch_2.pt", "run/epoch_4.pt", "epoch_1.pt"]
    record = json.loads((run_dir / SOUP_JSON).read_text())
    assert record["ingredients"][1] == {"file": "epoch_4.pt", "run": "run", "epoch": 4,
                                        "sha256": sha256_file(other / "checkpoints" / "epoch_4.pt")}
    assert float(soup_weights(run_dir)["logit_scale"]) == pytest.approx((2 + 8 + 1) / 3)
    with pytest.raises(soup.SoupError, match="soup_runs is for uniform and greedy"):
        soup.make_soup(cfg.replace(soup="wise"), run_dir, scorer=table_scorer(table), foundation={})


def test_the_selection_score_is_vals_and_board_as_official_map(tmp_path, gallery, monkeypatch, capsys):
    """A hand-built prepared run on six images, scored by the real scorer: each val query's answers are all
    six images (mAP 1); on test, the A person query's answer is missing (0), every other query's answers
    are all six (1), so board A scores 0.5 where all of test would score 0.75. The model is built from
    the checkpoint (pretrained weights moved since are not needed), quietly, and nothing is cached: every
    candidate is other weights."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    data_root = tmp_path / "dataset"
    cfg, run_dir = make_run(tmp_path, {1: micro_state()}, topk=6, data_root=str(data_root))
    data = run_dir / "data"
    data.mkdir()
    images = {"filepath": [str(p) for p in gallery], "image": [p.name for p in gallery]}
    val = pd.DataFrame({**images, "text": ["A white Audi."] * 6, "kind": ["car"] * 6,
                        "attribute": ["white Audi"] * 6})
    texts, kinds = ["A red car.", "A blue car.", "A man.", "A woman."], ["car", "car", "person", "person"]
    queries = pd.DataFrame({"text": texts, "kind": kinds})
    for name, table in (("train", val), ("val", val), ("test_queries", queries),
                        ("test_gallery", pd.DataFrame(images))):
        table.to_csv(data / f"{name}.csv", index=False)
    (data / "vocabulary.json").write_text(json.dumps({"colours": ["white"], "brands": ["Audi"]}))
    boards = split_boards(kinds)
    answers = ["missing.png" if board == "A" and kind == "person" else "$".join(images["image"])
               for board, kind in zip(boards, kinds)]
    (data_root / "test").mkdir(parents=True)
    (data_root / "test" / "test_gt.txt").write_text("".join(f"{t}${a}\n" for t, a in zip(texts, answers)))
    checkpoint = run_dir / "checkpoints" / "epoch_1.pt"
    assert sorted(boards[:2]) == sorted(boards[2:]) == ["A", "B"]  # one query of each kind on A
    assert soup.selection_scorer(cfg, run_dir, checkpoint)(micro_state(1)) == {VAL_KEY: 1.0, A_KEY: 0.5}
    moved = cfg.replace(pretrained=str(tmp_path / "moved.pt"))
    assert soup.selection_scorer(moved, run_dir, checkpoint)(micro_state(1)) == {VAL_KEY: 1.0, A_KEY: 0.5}
    assert capsys.readouterr() == ("", "") and not (tmp_path / "cache").exists()
    (data_root / "test" / "test_gt.txt").unlink()  # the real data: no test answers, val alone chooses
    assert soup.selection_scorer(cfg, run_dir, checkpoint)(micro_state(1)) == {VAL_KEY: 1.0}


def test_candidates_table_of_a_wise_soup_names_every_column_and_keeps_a_partly_unscored_one(tmp_path):
    """04_infer's table of a WiSE-FT grid 0, 0.5, 1 scored (val, board A) 0.25 0.5 | 0.75 0.5 | NaN 0.125:
    every column by its name, alpha 0.5 the kept row (selection 0.625), and alpha 1's val that could
    not be scored shows as NaN without taking the other alphas' val column with it."""
    foundation, tuned = micro_state(0, 0.0), micro_state(0, 1.0)  # logit_scale = alpha
    grid = {0.0: (0.25, 0.5), 0.5: (0.75, 0.5), 1.0: (float("nan"), 0.125)}

    def scorer(state):
        val, board_a = grid[round(float(state["logit_scale"]), 6)]
        return {VAL_KEY: val, A_KEY: board_a}

    cfg, run_dir = make_run(tmp_path, {1: tuned}, soup="wise", wise_alphas=[0.0, 0.5, 1.0])
    soup.make_soup(cfg, run_dir, scorer=scorer, foundation=foundation, progress=False)
    table = soup.candidates_table(run_dir)
    assert list(table.columns) == ["method", "step", "alpha", "ingredients", "val", "test_A",
                                   "selection_score", "kept"]
    assert list(table["method"]) == ["wise"] * 3 and list(table["step"]) == ["alpha"] * 3
    assert list(table["alpha"]) == [0.0, 0.5, 1.0] and list(table["ingredients"]) == ["epoch_1.pt"] * 3
    assert list(table["val"])[:2] == [0.25, 0.75] and pd.isna(table["val"][2])
    assert list(table["test_A"]) == [0.5, 0.5, 0.125]
    assert list(table["selection_score"])[:2] == [0.375, 0.625] and pd.isna(table["selection_score"][2])
    assert list(table["kept"]) == [False, True, False]


def test_wise_foundation_is_the_pretrained_file_read_on_the_cpu_and_its_absence_is_explained(tmp_path):
    """WiSE-FT's foundation is cfg.pretrained's weights, built on the CPU whatever device the run trains
    on (a cuda run's soup is averaged in host memory; here, without a GPU, it is not refused); a run
    from a random initialisation is told, word for word, which soups it can make instead."""
    pretrained = tmp_path / "foundation.pt"
    save_checkpoint(pretrained, {"name": MICRO, "state_dict": micro_state(3)})
    cfg, _ = make_run(tmp_path, {1: micro_state(0)}, soup="wise", device="cuda")
    foundation = soup.foundation_weights(cfg.replace(pretrained=str(pretrained)))
    assert same_weights(foundation, micro_state(3))
    assert {value.device.type for value in foundation.values()} == {"cpu"}
    with pytest.raises(soup.SoupError) as refused:
        soup.foundation_weights(cfg)
    assert str(refused.value) == ("soup=wise needs the foundation weights, and pretrained is empty (the run "
                                  "started from a random initialisation): use soup=greedy or uniform")


def test_the_summary_line_names_alpha_only_for_wise_and_the_checkpoint_once_written(tmp_path):
    """The command line's last line: WiSE-FT's chosen alpha (0.25, val 0.5 over 0.75's 0.25), no alpha
    key at all for a greedy soup; checkpoint and sha256 empty until soup.pt is written, then its path
    and digest."""
    foundation, tuned = micro_state(0, 0.0), micro_state(0, 1.0)  # logit_scale = alpha
    val = {0.25: 0.5, 0.75: 0.25, 1.0: 0.125}

    def scorer(state):
        return {VAL_KEY: val[round(float(state["logit_scale"]), 6)]}

    cfg, run_dir = make_run(tmp_path, {1: tuned}, soup="wise", wise_alphas=[0.25, 0.75])
    epoch_1 = run_dir / "checkpoints" / "epoch_1.pt"
    wise = soup.wise_soup(foundation, epoch_1, MICRO, [0.25, 0.75], scorer, log=lambda line: None)
    assert wise.summary() == {"method": "wise", "ingredients": ["epoch_1.pt"], "alpha": 0.25, VAL_KEY: 0.5,
                              "checkpoint": "", "sha256": ""}
    soup.write_soup(cfg, run_dir, wise)
    written = run_dir / "checkpoints" / SOUP
    assert wise.summary() == {"method": "wise", "ingredients": ["epoch_1.pt"], "alpha": 0.25, VAL_KEY: 0.5,
                              "checkpoint": str(written), "sha256": sha256_file(written)}
    greedy = soup.greedy_soup([epoch_1], MICRO, scorer, log=lambda line: None)
    assert greedy.summary() == {"method": "greedy", "ingredients": ["epoch_1.pt"], VAL_KEY: 0.125,
                                "checkpoint": "", "sha256": ""}


def test_the_command_line_help_names_every_option_and_what_it_does(capsys):
    with pytest.raises(SystemExit) as exit_:
        soup.main(["--help"])
    assert exit_.value.code == 0
    assert " ".join(capsys.readouterr().out.split()) == (
        "usage: python -m lib.soup [-h] --run RUN [--method {greedy,uniform,wise}] [--alpha ALPHA] "
        "[--with RUN [RUN ...]] [--no-progress] "
        "Model soups and WiSE-FT: one checkpoint from several, chosen on val (and board A where known). "
        "options: -h, --help show this help message and exit "
        "--run RUN a trained run (its params.yaml and checkpoints/) "
        "--method {greedy,uniform,wise} default: the run's soup parameter, else greedy (wise with --alpha) "
        "--alpha ALPHA WiSE-FT with this alpha instead of the grid's best "
        "--with RUN [RUN ...] other runs of the same model whose epochs join the pool (uniform, greedy) "
        "--no-progress")


def test_the_command_line_needs_a_run_and_a_known_method(capsys):
    for argv, said in (([], "the following arguments are required: --run"),
                       (["--run", "r", "--method", "soupy"], "argument --method: invalid choice: 'soupy'")):
        with pytest.raises(SystemExit) as exit_:
            soup.main(argv)
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_cli_makes_the_runs_own_soup_with_other_runs_recorded_and_progress_on_request(tmp_path, monkeypatch,
                                                                                    capsys):
    """A run saved with soup=uniform, --with another run: the uniform soup of epoch 1 and the other's
    epoch 3 (scored 0.5), progress lines before the JSON line, soup_runs recorded in the run's history
    by the command (said on stderr); again with --no-progress: the JSON line alone, nothing new to record."""
    _, other = make_run(tmp_path / "b", {3: micro_state(0, SCALES[3])})
    _, run_dir = make_run(tmp_path / "a", {1: micro_state(0, SCALES[1])}, soup="uniform")
    monkeypatch.setattr(soup, "selection_scorer", lambda *a: table_scorer({frozenset({1, 3}): 0.5}))
    assert soup.main(["--run", str(run_dir), "--with", str(other)]) == 0
    out, err = capsys.readouterr()
    written = run_dir / "checkpoints" / SOUP
    summary = {"method": "uniform", "ingredients": ["epoch_1.pt", "run/epoch_3.pt"], VAL_KEY: 0.5,
               "checkpoint": str(written), "sha256": sha256_file(written)}
    assert out.splitlines()[:2] == [
        "soup=uniform of run: candidates scored on val (and test board A where known)",
        "[uniform] epoch_1.pt + run/epoch_3.pt: val 0.5000"]
    assert json.loads(out.splitlines()[2]) == summary and len(out.splitlines()) == 3
    assert err == ("recorded in the run's history; 03_train and 04_infer show the soup after "
                   f"{runs.resume_command(run_dir)}\n")
    assert runs.read_params(run_dir).soup_runs == [portable(other)]
    last = steps.read_state(run_dir)["history"][-1]
    assert (last["event"], last["by"]) == ("parameters changed", "python -m lib.soup")
    assert soup.main(["--run", str(run_dir), "--with", str(other), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and json.loads(out)["ingredients"] == summary["ingredients"]
    assert err == ""


def test_a_uniform_soup_records_its_one_candidate_as_kept_and_shows_it(tmp_path):
    """Epochs 1 and 2 averaged, scored once (val 0.75): soup.json's one candidate, kept, and one line
    shown naming the step, the ingredients and the score."""
    cfg, run_dir = make_run(tmp_path, {1: micro_state(0, SCALES[1]), 2: micro_state(0, SCALES[2])},
                            soup="uniform")
    scorer = table_scorer({frozenset({1, 2}): 0.75})
    soup.make_soup(cfg, run_dir, scorer=scorer, progress=False)
    assert json.loads((run_dir / SOUP_JSON).read_text())["candidates"] == [
        {"step": "uniform", "ingredients": ["epoch_1.pt", "epoch_2.pt"], "kept": True, VAL_KEY: 0.75,
         "selection_score": 0.75}]
    shown = []
    soup.uniform_soup(sorted((run_dir / "checkpoints").glob("epoch_*.pt")), MICRO, scorer, shown.append)
    assert shown == ["[uniform] epoch_1.pt + epoch_2.pt: val 0.7500"]


def test_wise_shows_each_alpha_with_both_scores_and_refuses_a_mismatch_naming_the_file(tmp_path):
    """One line per alpha of the grid, val and board A to four places; fine-tuned weights that lack
    a key of the foundation's are refused naming the checkpoint."""
    foundation, tuned = micro_state(0, 0.0), micro_state(0, 1.0)  # logit_scale = alpha
    scores = {0.25: (0.5, 0.25), 0.75: (0.25, 0.125)}

    def scorer(state):
        val, board_a = scores[round(float(state["logit_scale"]), 6)]
        return {VAL_KEY: val, A_KEY: board_a}

    _, run_dir = make_run(tmp_path, {1: tuned, 2: {k: v for k, v in tuned.items() if k != "text_projection"}})
    epoch_1, epoch_2 = (run_dir / "checkpoints" / f"epoch_{e}.pt" for e in (1, 2))
    shown = []
    soup.wise_soup(foundation, epoch_1, MICRO, [0.25, 0.75], scorer, shown.append)
    assert shown == ["[alpha 0.25] epoch_1.pt: val 0.5000 test_A 0.2500",
                     "[alpha 0.75] epoch_1.pt: val 0.2500 test_A 0.1250"]
    with pytest.raises(AveragingError) as refused:
        soup.wise_soup(foundation, epoch_2, MICRO, [0.25], scorer, shown.append)
    assert str(refused.value) == (f"{epoch_2} lacks key 'text_projection': not the same model as the "
                                  "weights it is averaged with")


def test_greedy_shows_every_trial_marking_the_dropped_and_needs_a_checkpoint(tmp_path):
    """Epochs alone 0.30, 0.50, 0.40, 0.45, then 2 + 4 (0.49, dropped), 2 + 3 (0.50, level: kept) and
    2 + 3 + 1 (0.52): one line each, in the order tried; no checkpoint at all is refused in words."""
    _, run_dir = make_run(tmp_path, {e: micro_state(0, s) for e, s in SCALES.items()})
    f = frozenset
    table = {f({1}): 0.30, f({2}): 0.50, f({3}): 0.40, f({4}): 0.45,
             f({2, 4}): 0.49, f({2, 3}): 0.50, f({1, 2, 3}): 0.52}
    shown = []
    soup.greedy_soup(sorted((run_dir / "checkpoints").glob("epoch_*.pt")), MICRO, table_scorer(table),
                     shown.append)
    assert shown == ["[alone] epoch_1.pt: val 0.3000", "[alone] epoch_2.pt: val 0.5000",
                     "[alone] epoch_3.pt: val 0.4000", "[alone] epoch_4.pt: val 0.4500",
                     "[add] epoch_2.pt + epoch_4.pt: val 0.4900 (dropped)",
                     "[add] epoch_2.pt + epoch_3.pt: val 0.5000",
                     "[add] epoch_2.pt + epoch_3.pt + epoch_1.pt: val 0.5200"]
    with pytest.raises(soup.SoupError) as refused:
        soup.greedy_soup([], MICRO, table_scorer(table), shown.append)
    assert str(refused.value) == "no checkpoints to make a soup of"


def test_greedy_tries_the_earlier_of_equal_ingredients_first_and_keeps_a_level_soup(tmp_path):
    """Alone 0.4, 0.6, 0.6: epoch 2 starts the soup (the earlier of the two best), epoch 3 joins at a
    level 0.6, epoch 1 lowers it to 0.55 and is dropped; the soup's logit_scale is exactly
    (2 + 4) / 2 = 3."""
    _, run_dir = make_run(tmp_path, {e: micro_state(0, SCALES[e]) for e in (1, 2, 3)})
    f = frozenset
    table = {f({1}): 0.4, f({2}): 0.6, f({3}): 0.6, f({2, 3}): 0.6, f({1, 2, 3}): 0.55}
    result = soup.greedy_soup(sorted((run_dir / "checkpoints").glob("epoch_*.pt")), MICRO,
                              table_scorer(table), log=lambda line: None)
    assert [c["ingredients"] for c in result.candidates[3:]] == [["epoch_2.pt", "epoch_3.pt"],
                                                                  ["epoch_2.pt", "epoch_3.pt", "epoch_1.pt"]]
    assert [c["kept"] for c in result.candidates[3:]] == [True, False]
    assert [i.name for i in result.ingredients] == ["epoch_2.pt", "epoch_3.pt"]
    assert result.scores == {VAL_KEY: 0.6} and float(result.weights["logit_scale"]) == 3.0


def test_a_wise_soup_records_its_foundation_and_the_submitted_epoch(tmp_path, capsys):
    """WiSE-FT at alpha 0.5 between the pretrained file (logit_scale 0) and submit_epoch 1 (logit_scale 1;
    epoch 2, the last, holds 8): soup.pt is exactly 0.5, records epoch 1 and the foundation by path and
    sha256; progress is shown unless asked not to (then nothing is printed)."""
    pretrained = tmp_path / "foundation.pt"
    save_checkpoint(pretrained, {"name": MICRO, "state_dict": micro_state(0, 0.0)})
    cfg, run_dir = make_run(tmp_path, {1: micro_state(0, 1.0), 2: micro_state(0, SCALES[4])}, soup="wise",
                            wise_alphas=[0.5], submit_epoch=1)
    cfg = cfg.replace(pretrained=str(pretrained))
    soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5})
    assert capsys.readouterr().out.splitlines() == [
        "soup=wise of run: candidates scored on val (and test board A where known)",
        "[alpha 0.5] epoch_1.pt: val 0.5000"]
    epoch_1 = run_dir / "checkpoints" / "epoch_1.pt"
    made_of = {"method": "wise", "alpha": 0.5, "foundation": str(pretrained),
               "foundation_id": sha256_file(pretrained),
               "ingredients": [{"file": "epoch_1.pt", "sha256": sha256_file(epoch_1), "epoch": 1}]}
    saved = load_checkpoint(run_dir / "checkpoints" / SOUP)
    assert saved["soup"] == made_of and saved["epoch"] == 1
    assert float(saved["state_dict"]["logit_scale"]) == 0.5
    record = json.loads((run_dir / SOUP_JSON).read_text())
    assert {k: record[k] for k in made_of} == made_of and record["checkpoint"] == "checkpoints/soup.pt"
    soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5}, progress=False)
    assert capsys.readouterr().out == ""


def test_soup_json_is_sorted_and_indented_by_one_space(tmp_path):
    """The uniform soup of epochs 1 and 2 (val 0.75), soup.json byte for byte."""
    cfg, run_dir = make_run(tmp_path, {1: micro_state(0, SCALES[1]), 2: micro_state(0, SCALES[2])},
                            soup="uniform")
    soup.make_soup(cfg, run_dir, scorer=table_scorer({frozenset({1, 2}): 0.75}), progress=False)
    sha = {name: sha256_file(run_dir / "checkpoints" / name) for name in ("epoch_1.pt", "epoch_2.pt", SOUP)}
    assert (run_dir / SOUP_JSON).read_text() == f"""{{
 "candidates": [
  {{
   "ingredients": [
    "epoch_1.pt",
    "epoch_2.pt"
   ],
   "kept": true,
   "selection_score": 0.75,
   "step": "uniform",
   "val_map10_official": 0.75
  }}
 ],
 "checkpoint": "checkpoints/soup.pt",
 "ingredients": [
  {{
   "epoch": 1,
   "file": "epoch_1.pt",
   "sha256": "{sha['epoch_1.pt']}"
  }},
  {{
   "epoch": 2,
   "file": "epoch_2.pt",
   "sha256": "{sha['epoch_2.pt']}"
  }}
 ],
 "method": "uniform",
 "selection": "mean of val_map10_official",
 "sha256": "{sha[SOUP]}",
 "val_map10_official": 0.75
}}
"""


def test_a_soup_of_checkpoints_that_record_no_epoch_records_none(tmp_path):
    paths = [tmp_path / "run" / "checkpoints" / f"epoch_{e}.pt" for e in (1, 2)]
    for path in paths:
        save_checkpoint(path, {"name": MICRO, "state_dict": micro_state(0, 2.0)})
    cfg, run_dir = make_run(tmp_path, {}, soup="uniform")
    result = soup.uniform_soup(paths, MICRO, lambda w: {VAL_KEY: 0.5}, log=lambda line: None)
    soup.write_soup(cfg, run_dir, result)
    saved = load_checkpoint(run_dir / "checkpoints" / SOUP)
    assert saved["epoch"] is None and [i["epoch"] for i in saved["soup"]["ingredients"]] == [None, None]


def test_a_run_without_epochs_is_refused_in_words_and_so_is_an_other_run_without(tmp_path):
    cfg, run_dir = make_run(tmp_path / "a", {}, soup="uniform")
    with pytest.raises(soup.SoupError) as refused:
        soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5}, progress=False)
    assert str(refused.value) == (f"{run_dir / 'checkpoints'} holds no epoch_N.pt: train the run first "
                                  "(notebooks/03_train.ipynb), then make its soup")
    _, other = make_run(tmp_path / "b", {})
    cfg, run_dir = make_run(tmp_path / "c", {1: micro_state(0)}, soup="uniform", soup_runs=[str(other)])
    with pytest.raises(soup.SoupError) as refused:
        soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5}, progress=False)
    assert str(refused.value) == f"{other.resolve() / 'checkpoints'} holds no epoch_N.pt to add to the soup"


class _Live(io.StringIO):
    """A stdout that keeps what had been written at each flush (what a pipe's reader has seen)."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def flush(self):
        self.seen.append(self.getvalue())


def test_progress_lines_are_flushed_as_they_come_and_none_are_printed_when_off(tmp_path, monkeypatch):
    """A greedy soup of epochs 1 (0.3) and 2 (0.5), 2 + 1 scoring 0.4: each line reaches a pipe as it
    is printed; with progress off nothing is printed at all."""
    cfg, run_dir = make_run(tmp_path, {e: micro_state(0, SCALES[e]) for e in (1, 2)}, soup="greedy")
    scorer = table_scorer({frozenset({1}): 0.3, frozenset({2}): 0.5, frozenset({1, 2}): 0.4})
    lines = ["soup=greedy of run: candidates scored on val (and test board A where known)\n",
             "[alone] epoch_1.pt: val 0.3000\n", "[alone] epoch_2.pt: val 0.5000\n",
             "[add] epoch_2.pt + epoch_1.pt: val 0.4000 (dropped)\n"]
    live = _Live()
    monkeypatch.setattr(sys, "stdout", live)
    soup.make_soup(cfg, run_dir, scorer=scorer, progress=True)
    assert live.seen == ["".join(lines[:n]) for n in range(1, 5)]
    soup.make_soup(cfg, run_dir, scorer=scorer, progress=False)
    assert live.getvalue() == "".join(lines)


def test_the_real_scorer_is_built_once_from_the_runs_kept_epoch(tmp_path, monkeypatch):
    """Three candidates scored, one scorer built: for this run's parameters and folder, its model from
    the kept epoch (no submit_epoch and no metrics: the last, 2)."""
    cfg, run_dir = make_run(tmp_path, {e: micro_state(0, SCALES[e]) for e in (1, 2)}, soup="greedy",
                            submit_epoch=0)
    built = []

    def building(*args):
        built.append(args)
        return table_scorer({frozenset({1}): 0.3, frozenset({2}): 0.5, frozenset({1, 2}): 0.4})

    monkeypatch.setattr(soup, "selection_scorer", building)
    soup.make_soup(cfg, run_dir, progress=False)
    assert built == [(cfg, run_dir, run_dir / "checkpoints" / "epoch_2.pt")]


def test_wise_refuses_other_runs_in_words(tmp_path):
    _, other = make_run(tmp_path / "b", {2: micro_state(0)})
    cfg, run_dir = make_run(tmp_path / "a", {1: micro_state(0)}, soup="wise", soup_runs=[str(other)])
    with pytest.raises(soup.SoupError) as refused:
        soup.make_soup(cfg, run_dir, scorer=lambda w: {VAL_KEY: 0.5}, foundation={}, progress=False)
    assert str(refused.value) == ("WiSE-FT interpolates the foundation and this run's kept epoch: "
                                  "soup_runs is for uniform and greedy soups")
