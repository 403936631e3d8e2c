"""README.md's headline figures are the rendering of the results files current code wrote
(``benchmarks/readme.py``), as BENCHMARKS.md is: a figure in a marked block cannot be edited by
hand or outlive its file."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks package sits at the repository root

from benchmarks import readme, stats  # noqa: E402


def test_readme_figures_are_the_rendering_of_the_results():
    text = readme.README.read_text()
    assert set(readme.blocks(text)) == set(readme.FIGURES), "every renderer has its block in README, and only those"
    assert text == readme.rendered(text), \
        "README.md's figures differ from their results files: run `python -m benchmarks --render-only`"


def test_a_hand_edited_figure_is_caught_and_an_unknown_block_refused():
    text = readme.README.read_text()
    body = readme.blocks(text)["budget"]
    edited = text.replace(body, body.replace("maskfx", "maskfx (edited)", 1))
    assert edited != text and readme.rendered(edited) == text  # rendering puts the file's figures back
    with pytest.raises(KeyError, match="without a renderer: \\['made-up'\\]"):
        readme.rendered(text + "\n<!-- figures: made-up -->\n| 1 |\n<!-- /figures -->\n")


def test_the_interval_is_student_t_over_the_seeds():
    mean, low, high = stats.interval95([1.0, 2.0, 3.0])  # std 1, n 3: t(0.975, 2) = 4.303
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / 3 ** 0.5, rel=1e-3) and mean - low == high - mean
