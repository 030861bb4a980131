"""The command line: ``python -m xviz predict``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xviz import cli
from xviz.model import weights
from xviz.model.labels import imagenet_labels
from xviz.model.weights import load_model

KITCHENWARE_IMAGES = (
    weights.kitchenware_file().parents[1] / "datasets" / "kitchenware-data" / "images"
    if weights.kitchenware_file()
    else None
)


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    return load_model(None, device="cpu")


@pytest.fixture
def offline_random(monkeypatch, random_model):
    """``load_model`` gives the random model (recording its arguments): no file, no network."""
    calls = []

    def fake_load_model(weights, device):
        calls.append((weights, device))
        return random_model

    monkeypatch.setattr(cli, "load_model", fake_load_model)
    return calls


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 20, 20)).save(path)
    return path


def test_predict_prints_top_classes_and_weights(offline_random, image, capsys):
    assert cli.main(["predict", str(image), "--top", "3", "--size", "71", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("weights: random (")
    assert "input 71x71" in out and str(image) in out
    assert len([line for line in out.splitlines() if "%  " in line]) == 3
    assert offline_random == [("auto", torch.device("cpu"))]


def test_predict_json(offline_random, image, capsys):
    code = cli.main(["predict", str(image), str(image), "--json", "--top", "2", "--size", "71"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["weights"]["name"] == "random" and result["size"] == 71
    assert [r["image"] for r in result["results"]] == [str(image)] * 2
    top = result["results"][0]["top"]
    assert len(top) == 2 and top[0]["probability"] >= top[1]["probability"]
    assert top[0]["label"] == imagenet_labels()[top[0]["index"]]


def test_bad_image_is_a_message_not_a_traceback(offline_random, image, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    code = cli.main(["predict", str(bad), str(image), "--size", "71"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"xviz: error: {bad}:" in captured.err and "Traceback" not in captured.err
    assert str(image) in captured.out  # the good image is still classified


def test_unknown_weights_is_a_message(tmp_path, capsys):
    assert cli.main(["predict", "x.png", "--weights", str(tmp_path / "none.h5")]) == 1
    assert "Unknown weights" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["predict"], ["predict", "x.png", "--top", "0"], ["nope"], []])
def test_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2


@pytest.mark.skipif(KITCHENWARE_IMAGES is None, reason="kitchenware package not installed")
def test_python_m_xviz_predicts_kitchenware_images():
    env = {**os.environ, "XVIZ_OFFLINE": "1", "XVIZ_DEVICE": "cpu"}
    fork, cup = KITCHENWARE_IMAGES / "0412.jpg", KITCHENWARE_IMAGES / "0009.jpg"
    run = subprocess.run(
        [sys.executable, "-m", "xviz", "predict", str(fork), str(cup), "--weights", "kitchenware"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("weights: kitchenware (") and "input 150x150" in lines[0]
    first = {
        line: lines[i + 1].split()[-1] for i, line in enumerate(lines) if line.endswith(".jpg")
    }
    assert first == {str(fork): "fork", str(cup): "cup"}


def test_faithfulness_writes_every_images_scores_and_their_mean_and_spread(
    offline_random, tmp_path, capsys
):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)).save(folder / name)
    out = tmp_path / "scores.json"
    argv = ["faithfulness", str(folder / "b.png"), str(folder), "--size", "48", "--out", str(out)]
    assert cli.main([*argv, "--block", "block4"]) == 0
    printed = capsys.readouterr().out
    assert "faithfulness: 2 images (0 failed)" in printed  # b.png named twice, scored once
    report = json.loads(out.read_text())
    assert report["size"] == 48 and report["block"] == "block4"
    assert [Path(i["image"]).name for i in report["images"]] == ["b.png", "a.png"]
    for name in ("saliency", "gradcam"):
        areas = [i["methods"][name]["deletion"]["area"] for i in report["images"]]
        got = report["summary"][name]["deletion"]
        assert got["mean"] == pytest.approx(np.mean(areas))
        assert got["std"] == pytest.approx(np.std(areas, ddof=1)) and got["n"] == 2
        row = next(line for line in printed.splitlines() if line.startswith(f"| {name} |"))
        assert row.split(" | ")[1] == f"{np.mean(areas):.3f} ± {np.std(areas, ddof=1):.3f}"
        rho = [i["methods"][name]["randomised"]["entry"]["spearman"] for i in report["images"]]
        kept = [r for r in rho if r is not None]  # NaN (a constant map) is left out
        if kept:
            assert report["summary"][name]["spearman_entry"]["mean"] == pytest.approx(np.mean(kept))
            assert report["summary"][name]["spearman_entry"]["n"] == len(kept)
        else:
            assert "spearman_entry" not in report["summary"][name]
    assert report["summary"]["random"]["insertion"]["n"] == 2


def test_faithfulness_of_an_unreadable_image_is_a_message_and_status_1(
    offline_random, tmp_path, capsys
):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    assert cli.main(["faithfulness", str(folder), "--size", "48"]) == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "Traceback" not in captured.err
    assert json.loads(captured.out)["images"][0]["error"]
