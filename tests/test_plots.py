"""Plots that notebooks call must not fail on an empty selection (e.g. augmentation switched off)."""
import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from lib import plots  # noqa: E402


def test_empty_selections_draw_a_note_instead_of_failing():
    assert plots.image_grid([], []).axes
    ax = plots.counts_bar(pd.DataFrame({"filled_type": []}), "filled_type", "filled type")
    assert ax.texts and ax.texts[0].get_text() == "no rows"
