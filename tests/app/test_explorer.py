"""The app's events as plain functions: inputs -> outputs, with a small random model."""

import json
import threading
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from xviz.app import archive, views
from xviz.app import explorer as ex
from xviz.engine.hooks import hook_count
from xviz.engine.runner import MINUTES
from xviz.errors import AnalysisError, Cancelled, ImageError
from xviz.model.xception import Xception
from xviz.render.colormaps import get_lut

SIZE = 96  # small but real: block4..12 are 6x6, block13/14 3x3


@pytest.fixture(scope="module")
def explorer() -> ex.Explorer:
    torch.manual_seed(0)
    return ex.Explorer(Xception(head="imagenet").eval(), cache_mb=256)


@pytest.fixture(scope="module")
def session(explorer, tmp_path_factory) -> ex.Session:
    rng = np.random.default_rng(1)
    path = tmp_path_factory.mktemp("img") / "noise.png"
    Image.fromarray(rng.integers(0, 256, (120, 80, 3), dtype=np.uint8)).save(path)
    return explorer.start(str(path), SIZE)


def test_start_resizes_and_analysis_is_cached(explorer, session):
    assert session.image.shape == (SIZE, SIZE, 3) and session.image.dtype == np.uint8
    first = explorer.analysis(session)
    assert explorer.analysis(session) is first
    assert first.size == SIZE
    assert sum(views.prediction(first).values()) <= 1.0 + 1e-6
    choices = views.target_choices(first)
    assert choices[:5] == [p.label for p in first.top]
    assert sorted(choices) == sorted(first.labels)


def test_bad_upload_is_an_image_error(explorer, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ImageError):
        explorer.start(str(bad), SIZE)
    with pytest.raises(AnalysisError, match="Upload an image"):
        explorer.analysis(None)


def test_layer_choices_follow_the_architecture():
    assert views.layers_of("block1") == ["block1_conv1", "block1_conv2"]
    assert views.layers_of("block2") == ["block2_sepconv1", "block2_sepconv2", "block2_residual"]
    assert views.layers_of("block7") == [f"block7_sepconv{i}" for i in (1, 2, 3)]
    assert views.blocks_of("exit") == ["block13", "block14"]
    with pytest.raises(AnalysisError):
        views.layers_of("block15")


def test_sepconv_view_is_depthwise_beside_pointwise(explorer, session):
    a = explorer.analysis(session)
    view = views.layer_view(a, "block4_sepconv1", sort="index", page=1)
    # block4_sepconv1: 256 depthwise channels -> 728 pointwise channels, 64 a page.
    assert "256 channels" in view.left_title and "728 channels" in view.right_title
    assert view.pages == 12  # ceil(728 / 64)
    assert list(view.left.channels) == list(range(64))
    side = 8 * (views.TILE + views.PAD) + views.PAD
    assert view.left.image.size == (side, side) and view.right.image.size == (side, side)


def test_grid_page_clamps_and_sorts(explorer, session):
    a = explorer.analysis(session)
    m = a.sepconvs["block2_sepconv1"].depthwise  # 64 channels: one page
    g = views.grid(m, sort="max", page=5)
    channels, pages, page = g.channels, g.pages, g.page
    assert (pages, page) == (1, 1)
    expected = np.argsort(-m.max, kind="stable")
    assert list(channels) == list(expected)


def test_tile_under_a_click_is_the_channel_drawn_there(explorer, session):
    a = explorer.analysis(session)
    m = a.sepconvs["block5_sepconv1"].pointwise
    g = views.grid(m, sort="mean", page=2, cmap="viridis", scale="channel")
    img, channels = g.image, g.channels
    step = views.TILE + views.PAD
    for i in (0, 9, 63):
        # The right edge, away from the label.
        x = views.PAD + (i % views.COLUMNS) * step + views.TILE - 3
        y = views.PAD + (i // views.COLUMNS) * step + views.TILE - 3
        # The pixel there has the colour of that channel's value at that spot.
        values = m.channel(int(channels[i]))
        lo, hi = values.min(), values.max()
        v = values[-1, -1]
        expected = get_lut("viridis")[min(int((v - lo) / (hi - lo) * 256), 255)]
        assert np.abs(np.asarray(img)[y, x].astype(int) - expected).max() <= 1


def test_plain_conv_view_shows_conv_and_block_output(explorer, session):
    a = explorer.analysis(session)
    view = views.layer_view(a, "block13_residual", sort="index", page=1)
    assert "Residual" in view.left_title and "1024 channels" in view.left_title
    assert "block13 output" in view.right_title


def test_channel_view_reports_the_maps_statistics(explorer, session):
    a = explorer.analysis(session)
    m = a.sepconvs["block3_sepconv2"].depthwise
    view = views.channel_view(a, "block3_sepconv2", "left", 7)
    assert f"mean {m.mean[7]:.4g}" in view.text and f"max {m.max[7]:.4g}" in view.text
    assert view.image.size[0] == views.VIEW_SIZE  # small maps are shown enlarged
    assert view.shape == m.channel(7).shape
    # Its colour range: symmetric around 0 for a signed map, from the channel's own values.
    bound = np.abs(m.channel(7)).max()
    assert view.signed and (view.low, view.high) == pytest.approx((-bound, bound))
    with pytest.raises(AnalysisError, match="channels 0 to 255"):
        views.channel_view(a, "block3_sepconv2", "left", 256)


def test_retarget_changes_the_gradcam_target(explorer, session):
    a = explorer.analysis(session)
    other = views.target_choices(a)[3]
    retargeted = explorer.analysis(explorer.retarget(session, other))
    assert retargeted.target_label == other
    strip = views.gradcam_strip(retargeted)
    assert [caption.split()[0] for _, caption in strip] == [f"block{b}" for b in range(1, 15)]
    assert all(img.size == (SIZE, SIZE) for img, _ in strip)
    with pytest.raises(AnalysisError):
        explorer.retarget(session, "no such class")


def test_attribution_returns_overlay_and_heatmap(explorer, session):
    seen = []
    view = explorer.attribution(
        session, "saliency", "block5", progress=lambda f, m: seen.append(f), session_id="s1"
    )
    assert view.overlay.size == (views.VIEW_SIZE, views.VIEW_SIZE)
    assert view.figure.data[0].z.shape == (SIZE, SIZE)
    assert "Saliency" in view.text and seen and seen[-1] == pytest.approx(1.0)
    assert hook_count(explorer.model) == 0


def test_cancelled_attribution_stops_and_the_next_one_runs(explorer, session):
    def cancel_now(fraction, message):
        explorer.cancel("s2")

    with pytest.raises(Cancelled):
        explorer.attribution(
            session, "integrated_gradients", "block5", progress=cancel_now, session_id="s2"
        )
    assert hook_count(explorer.model) == 0
    view = explorer.attribution(session, "saliency", "block5", session_id="s2")
    assert view.overlay.size == (views.VIEW_SIZE, views.VIEW_SIZE)


def test_attribution_overlay_fades_into_the_photo_where_it_is_zero():
    photo = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    values = np.zeros((8, 8), dtype=np.float32)
    values[:, 4:] = 2.0  # beyond the top of the colours (1): the full opacity
    over = np.asarray(views._blend(photo, values, "coolwarm", -1.0, 1.0, 0.6, fade=True))
    np.testing.assert_array_equal(over[:, :4], photo[:, :4])
    warm = get_lut("coolwarm")[-1].astype(np.float64)
    assert np.abs(over[:, 4:] - (0.4 * photo[:, 4:] + 0.6 * warm)).max() <= 1.0


def test_a_run_started_after_a_cancel_does_not_undo_it(explorer):
    """The cancelled run polls its flag at its next batch; a run the same session starts
    meanwhile gets a flag of its own instead of clearing the cancelled one."""
    first = explorer.new_run("s3")
    explorer.cancel("s3")
    second = explorer.new_run("s3")
    assert first.is_set() and not second.is_set()
    explorer.cancel("s3")
    assert second.is_set()


def test_a_cancel_reaches_a_run_still_waiting_in_the_queue(explorer, session):
    """Armed at the click, cancelled while queued: the run ends before its first batch,
    without running the model; a run armed and not cancelled runs."""
    calls = []
    handle = explorer.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        explorer.arm("s4")
        explorer.cancel("s4")
        with pytest.raises(Cancelled, match="after 0 of"):
            explorer.attribution(session, "integrated_gradients", "block5", session_id="s4")
        assert calls == []
        explorer.arm("s4")
        view = explorer.attribution(session, "saliency", "block5", session_id="s4")
        assert calls and view.overlay.size == (views.VIEW_SIZE, views.VIEW_SIZE)
    finally:
        handle.remove()
    explorer.forget("s4")
    assert explorer.new_run("s4").is_set() is False


def test_ablation_moves_the_prediction_and_restores_the_model(explorer, session):
    before = {k: v.clone() for k, v in explorer.model.state_dict().items()}
    result = explorer.ablation(session, "drop_residual", ["block6"])
    assert result.block_change["block5"] == 0.0 and result.block_change["block6"] > 0
    assert result.kl_divergence >= 0
    zero = explorer.ablation(session, "zero_channel", [], "block6_sepconv2", "left", 3)
    assert zero.ablations[0].map == "block6_sepconv2.depthwise"
    assert np.all(zero.ablated_map.channel(3) == 0)
    after = explorer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(b.use_residual for b in explorer.model.blocks.values() if hasattr(b, "use_residual"))
    assert hook_count(explorer.model) == 0
    with pytest.raises(AnalysisError, match="at least one block"):
        explorer.ablation(session, "relu_between", [])


def test_export_zip_holds_maps_and_statistics(explorer, session, tmp_path):
    path = archive.export_zip(explorer.analysis(session), tmp_path / "out.zip")
    a = explorer.analysis(session)
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        assert {"input.png", "predictions.json", "statistics.json"} <= names
        assert "maps/block5_sepconv1.depthwise.png" in names
        assert len([n for n in names if n.startswith("gradcam/")]) == 14
        summary = json.loads(z.read("predictions.json"))
        stats = json.loads(z.read("statistics.json"))
    assert summary["top"][0]["label"] == a.top[0].label
    m = a.sepconvs["block5_sepconv1"].pointwise
    assert np.allclose(stats["block5_sepconv1.pointwise"]["mean"], m.mean, atol=1e-6)


def test_out_of_memory_in_an_attribution_is_a_clear_message_and_leaves_nothing(
    explorer, session, monkeypatch
):
    """A GPU OOM is simulated inside the model's forward, mid-attribution."""
    target_block = explorer.model.block9

    def exhausted(module, args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = target_block.register_forward_pre_hook(exhausted)
    try:
        with pytest.raises(AnalysisError, match="Out of memory while computing Saliency"):
            explorer.attribution(session, "saliency", "block5", session_id="oom")
    finally:
        handle.remove()
    assert hook_count(explorer.model) == 0
    assert not any(p.grad is not None for p in explorer.model.parameters())
    view = explorer.attribution(session, "saliency", "block5", session_id="oom")
    assert view.overlay.size == (views.VIEW_SIZE, views.VIEW_SIZE)


def test_compared_maps_share_one_colour_scale(explorer, session):
    a = explorer.analysis(session)
    m = a.sepconvs["block6_sepconv1"].depthwise
    top, bottom = views.compare_grids(m, m, "viridis")
    assert top.size == bottom.size
    # The same map on both sides: identical pictures only if the scale is shared.
    assert np.array_equal(np.asarray(top), np.asarray(bottom))
    zero = explorer.ablation(session, "zero_channel", [], "block6_sepconv1", "left", 0)
    before, after = views.compare_grids(zero.original_map, zero.ablated_map, "viridis")
    # Channel 0 is zero after: its tile takes the colour of 0 on the shared scale.
    step = views.TILE + views.PAD
    corner = np.asarray(after)[views.PAD + views.TILE - 2, views.PAD + views.TILE - 2]
    channels = np.concatenate(
        [zero.original_map.channels(range(64)), zero.ablated_map.channels(range(64))]
    )
    lo, hi = channels.min(), channels.max()
    expected = get_lut("viridis")[min(int((0 - lo) / (hi - lo) * 256), 255)]
    assert np.abs(corner.astype(int) - expected).max() <= 1
    assert before.size[1] == 8 * step + views.PAD


def _bar_row_ends(image: Image.Image, row: int) -> tuple[np.ndarray, np.ndarray]:
    """The first and last non-white pixel of one row (a colourbar's ends)."""
    pixels = np.asarray(image)[row]
    coloured = np.nonzero((pixels != 255).any(axis=1))[0]
    return pixels[coloured[0]], pixels[coloured[-1]]


def test_difference_map_is_ablated_minus_original_on_a_symmetric_scale(explorer, session):
    zero = explorer.ablation(session, "zero_channel", [], "block6_sepconv1", "left", 0)
    before, after = zero.original_map, zero.ablated_map
    maps = views.compared_maps(before, after, "viridis")
    # By hand: zeroing channel 0 of the watched map changes that channel alone, by -original.
    difference = after.channels(range(64)) - before.channels(range(64))
    np.testing.assert_array_equal(difference[1:], 0)
    np.testing.assert_array_equal(difference[0], -before.channel(0))
    bound = float(np.abs(before.channel(0)).max())
    assert maps.difference_bound == bound > 0
    coolwarm = get_lut("coolwarm")
    grid = np.asarray(maps.difference)
    step = views.TILE + views.PAD
    # Channel 1 did not change: the middle of the diverging scale (away from its label).
    assert tuple(grid[views.PAD + 40, views.PAD + step + 40]) == tuple(coolwarm[128])
    # Channel 0: each map cell takes coolwarm's colour of 0.5 + d / 2b (binned by 256).
    h, w = before.shape[1:]
    for y, x in [(2, 0), (h - 1, w - 1), (h // 2, w // 3), (3, w - 2)]:
        cy = views.PAD + int((y + 0.5) * views.TILE / h)
        cx = views.PAD + int((x + 0.5) * views.TILE / w)
        index = int((0.5 + difference[0, y, x] / (2 * bound)) * 256)
        near = [coolwarm[i] for i in range(max(index - 1, 0), min(index + 1, 255) + 1)]
        assert any(np.array_equal(grid[cy, cx], c) for c in near), (y, x)
    # Under each grid its colourbar: coolwarm -b..b for the difference, the shared scale of
    # both maps for the original and the ablated one.
    grid_height = 8 * step + views.PAD
    low, high = _bar_row_ends(maps.difference, grid_height + 6)
    assert tuple(low) == tuple(coolwarm[0]) and tuple(high) == tuple(coolwarm[255])
    both = np.concatenate([before.channels(range(64)), after.channels(range(64))])
    assert maps.scale == (both.min(), both.max())
    viridis = get_lut("viridis")
    for image in (maps.original, maps.ablated):
        low, high = _bar_row_ends(image, grid_height + 6)
        assert tuple(low) == tuple(viridis[0]) and tuple(high) == tuple(viridis[255])
    left, right = views.compare_grids(before, after, "viridis")
    np.testing.assert_array_equal(np.asarray(maps.original)[: left.height], np.asarray(left))
    np.testing.assert_array_equal(np.asarray(maps.ablated)[: right.height], np.asarray(right))


@pytest.mark.parametrize("block", ["block2", "block13"])
def test_dropping_a_conv_residual_gives_maps_and_a_difference(explorer, session, block):
    result = explorer.ablation(session, "drop_residual", [block])
    maps = views.compared_maps(result.original_map, result.ablated_map)
    assert result.watched == block
    assert maps.original.size == maps.ablated.size == maps.difference.size
    assert maps.difference_bound > 0


def test_ablation_names_a_block_without_a_residual(explorer, session):
    with pytest.raises(AnalysisError, match="block14' has no residual connection"):
        explorer.ablation(session, "drop_residual", ["block14"])


def test_cancel_flags_stay_bounded_whatever_sessions_a_client_names(explorer):
    # Control: an armed run of a kept session is still reached by its Cancel.
    explorer.arm("visitor")
    explorer.cancel("visitor")
    assert explorer.new_run("visitor").is_set()
    for i in range(ex.MAX_SESSIONS + 3000):  # fresh hashes, as a script could post them
        explorer.arm(f"fresh-{i}")
    assert len(explorer._armed) == ex.MAX_SESSIONS
    assert explorer._armed.get("fresh-0") is None  # the oldest went first
    long = "x" * 1_000_000
    explorer.arm(long)
    assert explorer._armed.get(long[: ex.SESSION_KEY]) is not None  # kept by its first 64
    assert all(len(str(k)) <= ex.SESSION_KEY for k in explorer._armed._entries)
    explorer.cancel(long)  # the same session, named in full again, is found
    assert explorer.new_run(long).is_set()
    explorer.forget(long)
    assert explorer._cancel.get(long[: ex.SESSION_KEY]) is None


def test_a_visitors_second_long_job_is_refused_until_the_first_ends(explorer):
    explorer.arm("a", long=True)
    with pytest.raises(AnalysisError, match="still running or waiting"):
        explorer.arm("a", long=True)
    explorer.arm("b", long=True)  # control: another visitor's is accepted
    explorer.arm("a")  # control: a short run of the same visitor is accepted
    with explorer.long_run("a") as cancelled:
        assert not cancelled.is_set()
        with pytest.raises(AnalysisError, match="still running"):
            explorer.arm("a", long=True)
    explorer.arm("a", long=True)  # it ended: the next is accepted
    explorer.cancel("a")  # Cancel lets the visitor ask for another at once
    explorer.arm("a", long=True)
    with pytest.raises(ValueError), explorer.long_run("a"):
        raise ValueError("a job that fails")
    explorer.arm("a", long=True)  # a failed job frees the visitor too
    explorer.forget("a")
    assert explorer._long.get("a") is None
    for i in range(ex.MAX_SESSIONS + 100):  # bounded like the cancel flags
        explorer.arm(f"fresh-{i}", long=True)
    assert len(explorer._long) == ex.MAX_SESSIONS


def test_the_faithfulness_check_lets_an_interactive_call_pass_and_not_another_long_one(
    explorer, session
):
    """Both arrive at the check's first progress report: the interactive call (an upload)
    runs at one of its pauses, before its last report; the control, another job at the
    check's own priority, only after every report."""
    reports, ran, callers = [], {}, []

    def call(name: str) -> None:
        ran[name] = len(reports)

    def progress(fraction: float, message: str) -> None:  # on the model's thread
        reports.append(fraction)
        if len(reports) > 1:
            return
        callers.extend(
            [
                threading.Thread(target=explorer.runner, args=(lambda m: call("quick"),)),
                threading.Thread(
                    target=explorer.runner.background,
                    args=(lambda m, pause: call("long"),),
                    kwargs={"priority": MINUTES},
                ),
            ]
        )
        for caller in callers:
            caller.start()

    view = explorer.faithfulness(session, "block14", progress=progress, session_id="s-faith")
    for caller in callers:
        caller.join(timeout=60)
    assert 1 <= ran["quick"] < len(reports) - 1
    assert ran["long"] == len(reports)
    assert "Saliency" in view.table
