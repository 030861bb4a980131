"""Loading weights: every file layout, strictness, hostile files, auto-selection, downloads.

The Keras and timm files are written here from a random model with their own inverse
mappings (written from the formats' descriptions, not from xviz._formats), so that a
transposition or a mix-up of layers shows as a difference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import json
import os
import pickle
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from xviz import _download, weights
from xviz.errors import WeightsError
from xviz.model import BLOCK_SPECS, BLOCKS, Xception
from xviz.weights import WeightsSource, load_model, locate_weights, save_safetensors

needs_kitchenware = pytest.mark.skipif(
    weights.kitchenware_file() is None,
    reason=f"kitchenware package not installed ({weights.KITCHENWARE_INSTALL})",
)


def random_model(head: str) -> Xception:
    """A model whose every float tensor is random, BN statistics included (so that two BNs of
    the same width never hold the same values and a mix-up shows)."""
    torch.manual_seed(0)
    model = Xception(head)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    return model


@pytest.fixture(scope="module")
def imagenet_model() -> Xception:
    return random_model("imagenet")


@pytest.fixture(scope="module")
def kitchen_model() -> Xception:
    return random_model("kitchenware")


def assert_same_weights(loaded: Xception, original: Xception) -> None:
    got, want = loaded.state_dict(), original.state_dict()
    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k].cpu(), want[k])]
    assert not different


# ---------------------------------------------------------------------------------------
# Writers of foreign layouts
# ---------------------------------------------------------------------------------------

KERAS_VARIABLES = {
    "Conv2D": ("kernel",),
    "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "Dense": ("kernel", "bias"),
}
# keras.src.utils.naming.to_snake_case of each class, written out.
KERAS_KEYS = {
    "InputLayer": "input_layer",
    "Conv2D": "conv2d",
    "SeparableConv2D": "separable_conv2d",
    "BatchNormalization": "batch_normalization",
    "Activation": "activation",
    "MaxPooling2D": "max_pooling2d",
    "Add": "add",
    "GlobalAveragePooling2D": "global_average_pooling2d",
    "Dense": "dense",
    "Dropout": "dropout",
    "Functional": "functional",
}


def keras_layers(model: Xception, top: bool = True) -> list[tuple[str, str, list[np.ndarray]]]:
    """``(name, class, arrays)`` of the Keras Xception, in Keras' layer order, with Keras
    layouts: conv (kh, kw, in, out), depthwise (kh, kw, in, 1), Dense (in, out)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}

    def conv(p):
        return [sd[f"{p}.weight"].permute(2, 3, 1, 0).numpy()]

    def sep(p):
        depthwise = sd[f"{p}.depthwise.weight"].permute(2, 3, 0, 1).numpy()
        return [depthwise, *conv(f"{p}.pointwise")]

    def bn(p):
        return [sd[f"{p}.{v}"].numpy() for v in ("weight", "bias", "running_mean", "running_var")]

    layers = [("input_1", "InputLayer", [])]
    for i in (1, 2):
        layers += [
            (f"block1_conv{i}", "Conv2D", conv(f"block1.conv{i}")),
            (f"block1_conv{i}_bn", "BatchNormalization", bn(f"block1.conv{i}_bn")),
            (f"block1_conv{i}_act", "Activation", []),
        ]
    counter = iter(range(5, 9))  # session-dependent automatic names: never map by them
    for spec in BLOCK_SPECS[1:]:
        for name, _, _ in spec.sepconvs:
            p = f"{spec.name}.{name.removeprefix(spec.name + '_')}"
            layers += [
                (f"{name}_act", "Activation", []),
                (name, "SeparableConv2D", sep(p)),
                (f"{name}_bn", "BatchNormalization", bn(f"{p}_bn")),
            ]
        if spec.pool:
            layers.append((f"{spec.name}_pool", "MaxPooling2D", []))
        if spec.residual == "conv":
            n = next(counter)
            layers += [
                (f"conv2d_{n}", "Conv2D", conv(f"{spec.name}.residual")),
                (f"batch_normalization_{n}", "BatchNormalization", bn(f"{spec.name}.residual_bn")),
            ]
        if spec.residual:
            layers.append((f"add_{spec.index}", "Add", []))
    if top:
        w, b = sd["classifier.weight"], sd["classifier.bias"]
        layers += [
            ("avg_pool", "GlobalAveragePooling2D", []),
            ("predictions", "Dense", [w.T.numpy(), b.numpy()]),
        ]
    return layers


def write_keras2_h5(path: Path, model: Xception, top: bool = True) -> Path:
    """Keras 2 ``save_weights``: root ``layer_names``, ``<layer>/<layer>/<var>:0``."""
    layers = keras_layers(model, top)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name, _, _ in layers])
        f.attrs["keras_version"] = b"2.2.4"
        for name, cls, arrays in layers:
            group = f.create_group(name)
            names = [f"{name}/{v}:0" for v in KERAS_VARIABLES.get(cls, ())] if arrays else []
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for n, array in zip(names, arrays, strict=True):
                group.create_dataset(n, data=array)
    return path


def write_keras3_archive(path: Path, model: Xception) -> Path:
    """Keras 3 ``.keras`` of the kitchenware shape: Input -> nested Functional (backbone) ->
    GAP -> Dense(100) -> Dropout -> Dense(6); variables under class-derived keys."""
    sd = model.state_dict()
    inner = keras_layers(model, top=False)
    outer = [
        ("input_layer_1", "InputLayer", []),
        ("xception", "Functional", inner),
        ("global_average_pooling2d", "GlobalAveragePooling2D", []),
        ("dense", "Dense", [sd["classifier.fc1.weight"].T.numpy(), sd["classifier.fc1.bias"]]),
        ("dropout", "Dropout", []),
        ("dense_1", "Dense", [sd["classifier.fc2.weight"].T.numpy(), sd["classifier.fc2.bias"]]),
    ]

    def configs(layers):
        return [
            {
                "class_name": cls,
                "name": name,
                "config": {
                    "name": name,
                    **({"layers": configs(arrays)} if cls == "Functional" else {}),
                },
            }
            for name, cls, arrays in layers
        ]

    def write(f, layers, prefix):
        seen: dict[str, int] = {}
        for _, cls, arrays in layers:
            base = KERAS_KEYS[cls]
            seen[base] = seen.get(base, -1) + 1
            key = f"{prefix}/{base}" + (f"_{seen[base]}" if seen[base] else "")
            if cls == "Functional":
                write(f, arrays, f"{key}/layers")
                continue
            group = f.create_group(f"{key}/vars")
            for i, array in enumerate(arrays):
                group.create_dataset(str(i), data=np.asarray(array))

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write(f, outer, "layers")
        f.create_dataset("optimizer/vars/0", data=np.zeros(3))  # ignored, as by Keras
    config = {
        "class_name": "Functional",
        "config": {"name": "functional", "layers": configs(outer)},
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def timm_state_dict(model: Xception) -> dict[str, torch.Tensor]:
    """The timm ``legacy_xception`` layout, built the way timm's ``Block`` builds ``rep``:
    [ReLU, SeparableConv2d(conv1, pointwise), BatchNorm2d] per separable conv, the leading
    ReLU dropped in timm's block1; timm blocks 1-12 = Keras blocks 2-13. No
    ``num_batches_tracked``, as in Cadene's file (saved before PyTorch 0.4.1)."""
    sd = model.state_dict()
    out = {}

    def put(timm_module, ours):
        for key, tensor in sd.items():
            if key.startswith(ours + ".") and not key.endswith("num_batches_tracked"):
                out[timm_module + key.removeprefix(ours)] = tensor.clone()

    for ours, timm_module in [
        ("block1.conv1", "conv1"),
        ("block1.conv1_bn", "bn1"),
        ("block1.conv2", "conv2"),
        ("block1.conv2_bn", "bn2"),
    ]:
        put(timm_module, ours)
    for j in range(1, 13):
        spec = BLOCKS[f"block{j + 1}"]
        rep = [m for name, _, _ in spec.sepconvs for m in ("relu", name, f"{name}_bn")]
        rep = rep[1:] if j == 1 else rep
        for index, module in enumerate(rep):
            short = f"{spec.name}.{module.removeprefix(spec.name + '_')}"
            if module.endswith("_bn"):
                put(f"block{j}.rep.{index}", short)
            elif module != "relu":
                put(f"block{j}.rep.{index}.conv1", f"{short}.depthwise")
                put(f"block{j}.rep.{index}.pointwise", f"{short}.pointwise")
        if spec.residual == "conv":
            put(f"block{j}.skip", f"{spec.name}.residual")
            put(f"block{j}.skipbn", f"{spec.name}.residual_bn")
    for i in (1, 2):
        put(f"conv{i + 2}.conv1", f"block14.sepconv{i}.depthwise")
        put(f"conv{i + 2}.pointwise", f"block14.sepconv{i}.pointwise")
        put(f"bn{i + 2}", f"block14.sepconv{i}_bn")
    put("fc", "classifier")
    return out


# ---------------------------------------------------------------------------------------
# Layouts load exactly and round-trip through save_safetensors
# ---------------------------------------------------------------------------------------


def check_round_trip(model: Xception, tmp_path: Path) -> None:
    path = save_safetensors(model, tmp_path / "round_trip.safetensors")
    again = load_model(path, device="cpu")
    assert_same_weights(again, model)
    assert again.labels == model.labels
    assert again.source.padding == model.source.padding
    assert again.source.bn_eps == model.source.bn_eps
    assert again.source.input_size == model.source.input_size
    assert again.source.label_set == model.source.label_set


def test_keras2_h5_with_top(tmp_path, imagenet_model):
    path = write_keras2_h5(tmp_path / "xception.h5", imagenet_model)
    model = load_model(path, device="cpu")
    assert_same_weights(model, imagenet_model)
    assert not model.training
    assert model.head_name == "imagenet" and len(model.labels) == 1000
    assert model.source == WeightsSource(
        name="xception.h5",
        file=str(path),
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        input_size=299,
        padding="keras",
        bn_eps=1e-3,
        label_set="imagenet",
        description=model.source.description,
    )
    check_round_trip(model, tmp_path)


def test_keras2_h5_without_top(tmp_path, imagenet_model):
    path = write_keras2_h5(tmp_path / "notop.h5", imagenet_model, top=False)
    model = load_model(path, device="cpu")
    assert model.head_name == "none" and model.labels == [] and model.source.label_set == "none"
    backbone = {k: v for k, v in imagenet_model.state_dict().items() if "classifier" not in k}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in backbone.items())


def test_keras3_archive_with_nested_model(tmp_path, kitchen_model):
    path = write_keras3_archive(tmp_path / "kitchen.keras", kitchen_model)
    model = load_model(path, device="cpu")
    assert_same_weights(model, kitchen_model)
    assert model.labels == ["cup", "fork", "glass", "knife", "plate", "spoon"]
    assert (model.source.input_size, model.source.padding) == (150, "keras")
    check_round_trip(model, tmp_path)


@pytest.mark.parametrize("kind", ["pth", "pth-legacy", "safetensors"])
def test_timm_layout(tmp_path, imagenet_model, kind):
    path = tmp_path / f"xception-timm.{kind.removesuffix('-legacy')}"
    state_dict = timm_state_dict(imagenet_model)
    # conv weights (block1, 34 x depthwise + pointwise, 4 skips) + 40 BNs x 4 + fc weight, bias
    assert len(state_dict) == (2 + 34 * 2 + 4) + (2 + 34 + 4) * 4 + 2
    if kind == "safetensors":
        save_file(state_dict, str(path))
    else:
        # Cadene's file predates PyTorch 1.6's zip format: a plain pickle.
        torch.save(state_dict, path, _use_new_zipfile_serialization=kind == "pth")
    model = load_model(path, device="cpu")
    assert_same_weights(model, imagenet_model)
    # timm evaluates these weights with symmetric pooling and PyTorch's BN epsilon.
    assert (model.source.padding, model.source.bn_eps, model.bn_eps) == ("symmetric", 1e-5, 1e-5)
    assert model.block2.pool.padding == "symmetric"
    check_round_trip(model, tmp_path)


def test_xviz_layout_pth_and_padding_override(tmp_path, imagenet_model):
    path = tmp_path / "ours.pt"
    torch.save(imagenet_model.state_dict(), path)
    model = load_model(path, device="cpu", padding="symmetric")
    assert_same_weights(model, imagenet_model)
    assert model.source.padding == model.padding == "symmetric"


def test_custom_labels_from_metadata(tmp_path, kitchen_model):
    kitchen_model.labels = ["a", "b", "c", "d", "e", "f"]
    kitchen_model.source = None
    try:
        model = load_model(save_safetensors(kitchen_model, tmp_path / "c.safetensors"), "cpu")
    finally:
        kitchen_model.labels = []
    assert model.labels == ["a", "b", "c", "d", "e", "f"]
    assert (model.source.label_set, model.source.input_size) == ("custom", 150)


def test_random_weights_are_explicit():
    model = load_model(None, device="cpu")
    assert model.source.name == "random" and model.source.file == ""
    assert len(model.labels) == 1000 and not model.training


# ---------------------------------------------------------------------------------------
# Strictness and hostile files
# ---------------------------------------------------------------------------------------


def test_every_bad_tensor_is_named(tmp_path, imagenet_model):
    sd = dict(imagenet_model.state_dict())
    sd["block5.sepconv2.pointwise.weight"] = torch.zeros(728, 728, 3, 3)  # wrong shape
    del sd["block13.residual_bn.running_var"]  # missing
    del sd["block1.conv1.weight"]  # missing (and the layout is still recognised)
    sd["block3.sepconv3.depthwise.weight"] = torch.zeros(256, 1, 3, 3)  # unexpected
    path = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    with pytest.raises(WeightsError) as info:
        load_model(path, device="cpu")
    message = str(info.value)
    assert str(path) in message and "4 problem(s)" in message
    for key in (
        "wrong shape block5.sepconv2.pointwise.weight",
        "missing block13.residual_bn.running_var",
        "missing block1.conv1.weight",
        "unexpected block3.sepconv3.depthwise.weight",
    ):
        assert key in message


def test_keras_problems_name_the_keras_layer(tmp_path, kitchen_model):
    path = write_keras3_archive(tmp_path / "k.keras", kitchen_model)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        weights_h5 = archive.read("model.weights.h5")
    buffer = io.BytesIO(weights_h5)
    with h5py.File(buffer, "a") as f:
        # The 3rd SeparableConv2D, whatever its name, is block3_sepconv1 (128 -> 256).
        del f["layers/functional/layers/separable_conv2d_2/vars/1"]
        f["layers/functional/layers/separable_conv2d_2/vars/1"] = np.zeros((1, 1, 128, 7))
        f["layers/stray/vars/0"] = np.zeros(3)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    with pytest.raises(WeightsError) as info:
        load_model(path, device="cpu")
    message = str(info.value)
    assert "wrong shape block3.sepconv1.pointwise.weight (from Keras layer 'block3_sepconv1')" in (
        message
    )
    assert "unexpected Keras layer 'layers/stray/vars'" in message


def small_files(tmp_path: Path) -> dict[str, Path]:
    """One small valid file per supported suffix."""
    tensors = {"block1.conv1.weight": torch.randn(32, 3, 3, 3)}
    paths = {s: tmp_path / f"small{s}" for s in (".pth", ".safetensors", ".h5", ".keras")}
    torch.save(tensors, paths[".pth"])
    save_file(tensors, str(paths[".safetensors"]))
    with h5py.File(paths[".h5"], "w") as f:
        f.attrs["layer_names"] = np.array([b"block1_conv1"])
        f["block1_conv1/block1_conv1/kernel:0"] = np.zeros((3, 3, 3, 32), np.float32)
        f["block1_conv1"].attrs["weight_names"] = np.array([b"block1_conv1/kernel:0"])
    with zipfile.ZipFile(paths[".keras"], "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps({"config": {"layers": []}}))
        archive.writestr("model.weights.h5", paths[".h5"].read_bytes())
    return paths


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".h5", ".keras"])
def test_truncated_file(tmp_path, suffix):
    path = small_files(tmp_path)[suffix]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match=str(path)):
        load_model(path, device="cpu")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".h5", ".keras"])
def test_text_file_with_a_weights_suffix(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("these are not weights\n")
    with pytest.raises(WeightsError, match=str(path)):
        load_model(path, device="cpu")


def test_foreign_state_dict_and_non_state_dict(tmp_path):
    foreign = tmp_path / "resnet.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(WeightsError, match="not an Xception state dict"):
        load_model(foreign, device="cpu")
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        load_model(not_a_dict, device="cpu")


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch", "torch-legacy", "pickle"])
def test_malicious_pickle_is_refused_and_never_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"block1.conv1.weight": _Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch")
    with pytest.raises(WeightsError, match="refused"):
        load_model(path, device="cpu")
    assert not marker.exists()


def test_unknown_name_and_suffix(tmp_path):
    with pytest.raises(WeightsError, match="Unknown weights 'imagenet'"):
        load_model("imagenet", device="cpu")
    odd = tmp_path / "weights.onnx"
    odd.write_bytes(b"\0")
    with pytest.raises(WeightsError, match="unsupported file type"):
        load_model(odd, device="cpu")


def test_known_file_with_wrong_digest_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XVIZ_CACHE", str(tmp_path))
    (tmp_path / "xception_weights_tf_dim_ordering_tf_kernels.h5").write_bytes(b"not it")
    with pytest.raises(WeightsError, match="md5"):
        load_model("keras-imagenet", device="cpu")


# ---------------------------------------------------------------------------------------
# "auto" and the cache
# ---------------------------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache, no environment overrides, no kitchenware package, no network."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("XVIZ_CACHE", str(folder))
    for name in ("XVIZ_WEIGHTS", "XVIZ_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(weights, "kitchenware_file", lambda: None)

    def no_network(url, timeout):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(_download, "urlopen", no_network)
    return folder


def cached(cache: Path, name: str) -> Path:
    cache.mkdir(exist_ok=True)
    path = cache / weights._KNOWN[name].filename
    path.write_bytes(name.encode())
    return path


def serve(monkeypatch, tmp_path: Path, name: str, content: bytes) -> None:
    """Make the known weights ``name`` download from a local file:// URL."""
    source = tmp_path / f"served-{name}"
    source.write_bytes(content)
    known = weights._KNOWN[name]
    digest = hashlib.new(known.pinned.algorithm, content).hexdigest()
    monkeypatch.setitem(
        weights._KNOWN,
        name,
        dataclasses.replace(
            known,
            url=source.as_uri(),
            pinned=_download.PinnedDigest(known.pinned.algorithm, digest),
        ),
    )
    monkeypatch.setattr(_download, "urlopen", urllib.request.urlopen)


def test_auto_prefers_environment(cache, monkeypatch, tmp_path):
    cached(cache, "keras-imagenet")
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"x")
    monkeypatch.setenv("XVIZ_WEIGHTS", str(mine))
    assert locate_weights() == (None, mine)


def test_auto_prefers_cached_keras_then_timm(cache):
    timm = cached(cache, "timm-imagenet")
    assert locate_weights() == ("timm-imagenet", timm)
    keras = cached(cache, "keras-imagenet")
    assert locate_weights() == ("keras-imagenet", keras)


def test_auto_downloads_when_online(cache, monkeypatch, tmp_path):
    serve(monkeypatch, tmp_path, "keras-imagenet", b"keras weights")
    name, path = locate_weights()
    assert (name, path) == ("keras-imagenet", cache / weights._KNOWN[name].filename)
    assert path.read_bytes() == b"keras weights"
    assert os.listdir(cache) == [path.name]


@pytest.mark.parametrize("env", ["XVIZ_OFFLINE", "HF_HUB_OFFLINE"])
def test_auto_offline_skips_downloads_then_kitchenware(cache, monkeypatch, tmp_path, env):
    monkeypatch.setenv(env, "1")

    def forbidden(url, timeout):
        raise AssertionError("no download may be tried offline")

    monkeypatch.setattr(_download, "urlopen", forbidden)
    package_file = tmp_path / "kitchen.keras"
    monkeypatch.setattr(weights, "kitchenware_file", lambda: package_file)
    assert locate_weights() == ("kitchenware", package_file)


def test_auto_failed_download_falls_back_to_kitchenware(cache, monkeypatch, tmp_path):
    package_file = tmp_path / "kitchen.keras"
    monkeypatch.setattr(weights, "kitchenware_file", lambda: package_file)
    assert locate_weights() == ("kitchenware", package_file)


def test_auto_with_nothing_says_how_to_get_weights(cache):
    with pytest.raises(WeightsError) as info:
        load_model(device="cpu")
    message = str(info.value)
    assert "no network in tests" in message
    assert weights.KITCHENWARE_INSTALL in message and "XVIZ_WEIGHTS" in message


def test_known_name_offline_not_cached(cache, monkeypatch):
    monkeypatch.setenv("XVIZ_OFFLINE", "true")
    with pytest.raises(WeightsError, match="downloads are off"):
        locate_weights("timm-imagenet")


# ---------------------------------------------------------------------------------------
# Downloads are atomic
# ---------------------------------------------------------------------------------------


class _BrokenStream:
    """A response that delivers one chunk, then fails with ``error``."""

    def __init__(self, error: BaseException):
        self.error = error
        self.sent = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, n):
        if self.sent:
            raise self.error
        self.sent = True
        return b"partial"


@pytest.mark.parametrize(
    "error",
    [http.client.IncompleteRead(b"", 10), ConnectionResetError("reset"), TimeoutError("slow")],
)
def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch, error):
    monkeypatch.setattr(_download, "urlopen", lambda url, timeout: _BrokenStream(error))
    dest = tmp_path / "cache" / "w.h5"
    with pytest.raises(WeightsError, match="Could not download"):
        _download.download("https://example.invalid/w.h5", dest, _download.PinnedDigest("md5", ""))
    assert os.listdir(dest.parent) == []


def test_download_interrupted_by_the_user_leaves_nothing(tmp_path, monkeypatch):
    stream = _BrokenStream(KeyboardInterrupt())
    monkeypatch.setattr(_download, "urlopen", lambda url, timeout: stream)
    dest = tmp_path / "w.h5"
    with pytest.raises(KeyboardInterrupt):
        _download.download("https://example.invalid/w.h5", dest, _download.PinnedDigest("md5", ""))
    assert os.listdir(tmp_path) == []


def test_download_with_wrong_hash_leaves_nothing(tmp_path):
    source = tmp_path / "served.pth"
    source.write_bytes(b"tampered")
    dest = tmp_path / "cache" / "xception-43020ad28.pth"
    with pytest.raises(WeightsError, match="sha256"):
        _download.download(source.as_uri(), dest, _download.PinnedDigest("sha256", "43020ad28"))
    assert os.listdir(dest.parent) == []


def test_download_verified(tmp_path):
    source = tmp_path / "served.h5"
    source.write_bytes(b"weights")
    dest = tmp_path / "cache" / "w.h5"
    pinned = _download.PinnedDigest("md5", hashlib.md5(b"weights").hexdigest())
    assert _download.download(source.as_uri(), dest, pinned) == dest
    assert dest.read_bytes() == b"weights" and os.listdir(dest.parent) == ["w.h5"]


# ---------------------------------------------------------------------------------------
# The real kitchenware package
# ---------------------------------------------------------------------------------------


@needs_kitchenware
def test_kitchenware_package_loads_completely():
    model = load_model("kitchenware", device="cpu")
    source = model.source
    assert (source.name, source.input_size, source.padding, source.bn_eps) == (
        "kitchenware",
        150,
        "keras",
        1e-3,
    )
    assert source.sha256 == weights._KNOWN["kitchenware"].pinned.digest
    assert model.labels == ["cup", "fork", "glass", "knife", "plate", "spoon"]
    # Every BN statistic came from the file (a fresh BN has mean 0, var 1).
    bn = model.block7.sepconv3_bn
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
