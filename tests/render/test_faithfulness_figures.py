"""The faithfulness check drawn: the curves (baselines dashed), the randomisation row, the
table and the sentences, from a hand-made result."""

import numpy as np
import pytest

from xviz.app import views
from xviz.methods.faithfulness import Curve, Faithfulness, MethodScores, Randomised

FRACTIONS = (0.0, 0.5, 1.0)


def scores(name, deletion, insertion, randomised=()):
    def curve(values):
        return Curve(FRACTIONS, values, float(np.trapezoid(values, FRACTIONS)))

    return MethodScores(name, curve(deletion), curve(insertion), 0.5, None, randomised)


@pytest.fixture
def result():
    rng = np.random.default_rng(0)
    cuts = ("exit", "middle", "entry")
    good = tuple(Randomised(c, 0.1, 0.2) for c in cuts)
    bad = tuple(Randomised(c, 0.9, 0.95) for c in cuts)
    methods = {
        "saliency": scores("saliency", (0.9, 0.2, 0.1), (0.1, 0.8, 0.9), good),
        "gradcam": scores("gradcam", (0.9, 0.8, 0.1), (0.1, 0.2, 0.9), bad),
    }
    baselines = {
        "random": scores("random", (0.9, 0.5, 0.1), (0.1, 0.5, 0.9)),
        "centre": scores("centre", (0.9, 0.4, 0.1), (0.1, 0.6, 0.9)),
    }
    maps = {m: rng.random((20, 20)) for m in methods}
    randomised = {c: {m: rng.random((20, 20)) for m in methods} for c in cuts}
    return Faithfulness(3, "cup", 20, "block14", methods, baselines, maps, randomised)


def test_curves_have_a_line_per_method_and_dashed_baselines(result):
    view = views.faithfulness_view(result)
    traces = view.curves.data
    assert len(traces) == 2 * 4  # deletion and insertion of 2 methods and 2 baselines
    by_name = {(t.name, t.xaxis): t for t in traces}
    assert list(by_name["Saliency", "x"].y) == [0.9, 0.2, 0.1]
    assert list(by_name["Saliency", "x2"].y) == [0.1, 0.8, 0.9]
    assert by_name["random order (baseline)", "x"].line.dash == "dash"
    assert by_name["Saliency", "x"].line.dash is None


def test_the_randomisation_row_shows_each_methods_original_and_every_cut(result):
    figure = views.faithfulness_view(result).randomisation
    assert len(figure.data) == 2 * 4
    titles = [a.text for a in figure.layout.annotations]
    assert "exit flow random: ρ 0.1" in titles and "all random: ρ 0.9" in titles
    z = np.asarray(figure.data[0].z)
    assert z.max() == pytest.approx(1.0) and z.min() >= 0


def test_the_sentences_say_what_beats_random_and_what_survives_randomisation(result):
    view = views.faithfulness_view(result)
    saliency, gradcam = view.text.split("\n\n")[:2]
    assert "drops faster than in a random order" in saliency
    assert "depends on what the model learnt" in saliency
    assert "drops no faster than in a random order" in gradcam  # the control: 0.5 > 0.4
    assert "still correlates 0.90" in gradcam and "trust it less" in gradcam
    rows = [line for line in view.table.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| Saliency",
        "| Grad-CAM",
        "| random order (baseline)",
        "| centre first (baseline)",
    ]


def test_a_map_that_survives_one_cut_is_named_with_that_cut(result):
    """Adebayo et al.'s cascade: a map may survive the top layers' randomisation and not the
    rest; the sentence names the cut where it changed least, the control the one that did."""
    cuts = (
        Randomised("exit", 0.1, 0.2),
        Randomised("middle", 0.8, 0.9),
        Randomised("entry", 0.2, 0.3),
    )
    survivor = scores("guided_gradcam", (0.9, 0.2, 0.1), (0.1, 0.8, 0.9), cuts)
    blank = scores(
        "gradcam", (0.9, 0.2, 0.1), (0.1, 0.8, 0.9), (Randomised("entry", np.nan, np.nan),)
    )
    methods = {"guided_gradcam": survivor, "gradcam": blank, "saliency": result.methods["saliency"]}
    changed = Faithfulness(3, "cup", 20, "block14", methods, result.baselines, {}, {})
    said = {m: views.faithfulness_sentence(changed, m) for m in methods}
    assert (
        "With the exit and the middle flow random its map still correlates 0.80"
        in said["guided_gradcam"]
    )
    assert "trust it less" in said["guided_gradcam"]
    assert "Randomised, its map is blank" in said["gradcam"]
    assert (
        "at most 0.10" in said["saliency"]
        and "(with the head and the exit flow random)" in (said["saliency"])
    )
