"""lib.pipeline.plots: the notebooks' figures draw what they are given, and a note on an empty selection."""
import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402

from lib.pipeline import plots  # noqa: E402


def test_empty_selections_draw_a_note_instead_of_failing():
    (ax,) = plots.image_grid([], []).axes
    assert [t.get_text() for t in ax.texts] == ["no images to show"]
    ax = plots.counts_bar(pd.DataFrame({"filled_type": []}), "filled_type", "filled type")
    assert ax.texts and ax.texts[0].get_text() == "no rows"


def test_confusion_plot_writes_every_nonzero_count():
    matrix = pd.DataFrame([[1, 1], [0, 1]], index=pd.Index(["SUV", "Sedan"], name="true type"),
                          columns=pd.Index(["SUV", "Sedan"], name="filled type"))
    ax = plots.confusion_plot(matrix, "type")
    assert ax.get_title() == "type" and sorted(t.get_text() for t in ax.texts) == ["1", "1", "1"]
    assert ax.get_ylabel() == "true type" and ax.get_xlabel() == "filled type"


def test_keep_saves_the_figure_in_the_runs_figures_and_returns_it_closed(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    kept = plots.keep(ax, tmp_path, "03_curves")
    assert kept is fig and not plt.fignum_exists(fig.number)  # displayed once, by the cell's result
    assert (tmp_path / "figures" / "03_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
