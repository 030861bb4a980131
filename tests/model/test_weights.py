"""Loading weights: every file layout, strictness, hostile files, auto-selection, downloads.

The Keras and timm files are written here from a random model with their own inverse
mappings (written from the formats' descriptions and the public loaders of the real files,
not from xviz.model._formats), so that a transposition or a mix-up of layers shows as a difference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import json
import logging
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

from xviz.errors import WeightsError
from xviz.model import _download, weights
from xviz.model.labels import imagenet_labels
from xviz.model.weights import WeightsSource, load_model, locate_weights, save_safetensors
from xviz.model.xception import BLOCK_SPECS, BLOCKS, Xception

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


def statistics_model() -> Xception:
    """An ImageNet-head model with default conv weights and distinct, non-trivial BN
    statistics (gamma, beta, mean, variance all random per channel), whose logits stay
    finite, so that a mix-up of two same-shape BNs shows in the logits."""
    torch.manual_seed(1)
    model = Xception("imagenet").eval()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if not key.startswith("block") or not tensor.is_floating_point():
                continue
            if key.endswith("bn.weight"):
                tensor.uniform_(0.5, 1.5)
            elif key.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif key.endswith(("bn.bias", "running_mean")):
                tensor.normal_(0.0, 0.2)
        model.classifier.weight.normal_(0.0, 0.05)
    return model


@pytest.fixture(scope="module")
def stats_model() -> Xception:
    return statistics_model()


def logits(model: Xception) -> torch.Tensor:
    """The model's logits on two fixed random images, 150x150."""
    images = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(7)) * 2 - 1
    with torch.no_grad():
        return model(images)


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


# Keras 1 class -> the prefix of its automatic names (keras 1.x keras/engine/topology.py
# Layer.__init__: the class name lowercased, then a per-class counter).
KERAS1_PREFIX = {
    "Convolution2D": "convolution2d",
    "SeparableConvolution2D": "separableconvolution2d",
    "BatchNormalization": "batchnormalization",
    "Dense": "dense",
}


def keras1_table() -> list[tuple[str, str, str]]:
    """``(automatic name, Keras 1 class, xviz module)`` of every layer with weights, in the
    order Keras 1's Xception creates them (fchollet/deep-learning-models xception.py): block1's
    two convs with their BNs; then per block its residual 1x1 conv and BN (blocks 2, 3, 4,
    13), created before the block's separable convs, each of which is followed by its BN; the
    Dense last, which is ``dense_2`` in the official file."""
    modules = [
        ("Convolution2D", "block1.conv1"),
        ("BatchNormalization", "block1.conv1_bn"),
        ("Convolution2D", "block1.conv2"),
        ("BatchNormalization", "block1.conv2_bn"),
    ]
    for spec in BLOCK_SPECS[1:]:
        if spec.residual == "conv":
            modules += [
                ("Convolution2D", f"{spec.name}.residual"),
                ("BatchNormalization", f"{spec.name}.residual_bn"),
            ]
        for name, _, _ in spec.sepconvs:
            short = f"{spec.name}.{name.removeprefix(spec.name + '_')}"
            modules += [("SeparableConvolution2D", short), ("BatchNormalization", f"{short}_bn")]
    counters = {"Dense": 1}  # the official file's Dense is dense_2
    table = []
    for cls, module in [*modules, ("Dense", "classifier")]:
        counters[cls] = counters.get(cls, 0) + 1
        table.append((f"{KERAS1_PREFIX[cls]}_{counters[cls]}", cls, module))
    return table


def keras1_arrays(model: Xception, cls: str, module: str) -> dict[str, np.ndarray]:
    """One layer's Keras 1 variables by name suffix, channels-last (tf dim ordering)."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    if cls == "Convolution2D":
        return {"W": sd[f"{module}.weight"].permute(2, 3, 1, 0).numpy()}
    if cls == "SeparableConvolution2D":
        return {
            "depthwise_kernel": sd[f"{module}.depthwise.weight"].permute(2, 3, 0, 1).numpy(),
            "pointwise_kernel": sd[f"{module}.pointwise.weight"].permute(2, 3, 1, 0).numpy(),
        }
    if cls == "BatchNormalization":
        return {
            "gamma": sd[f"{module}.weight"].numpy(),
            "beta": sd[f"{module}.bias"].numpy(),
            "running_mean": sd[f"{module}.running_mean"].numpy(),
            "running_std": sd[f"{module}.running_var"].numpy(),  # Keras 1 keeps the variance here
        }
    return {"W": sd[f"{module}.weight"].T.numpy(), "b": sd[f"{module}.bias"].numpy()}


KERAS1_ORDERS = ("created", "alphabetical", "shuffled")


def write_keras1_h5(
    path: Path,
    model: Xception,
    order: str = "created",
    swap: tuple[str, str] | None = None,
) -> Path:
    """The official ImageNet file's layout, as public loaders of that file read it
    (kazuto1011/pytorch-ported-models models/classification/xception.py, AbhishekRS4/
    pretrained_models frozen/xception.py): root ``layer_names`` listing every layer, weighted
    or not (Keras 1 saves them all); each weighted layer's variables flat in its group,
    ``convolution2d_1/convolution2d_1_W:0``, in Keras 1's order (trainable, then the running
    statistics); no ``keras_version`` attribute (Keras 2 then reads the file as Keras 1).

    ``order`` of ``layer_names``: ``"created"`` (weighted layers interleaved with activations
    and merges), ``"alphabetical"`` (as HDF5 lists groups), ``"shuffled"`` (seeded; the BN
    variables listed in reverse too). ``swap`` writes two layers' weights under each other's
    names.
    """
    table = keras1_table()
    arrays = {name: keras1_arrays(model, cls, module) for name, cls, module in table}
    if swap:
        a, b = swap
        arrays[a], arrays[b] = arrays[b], arrays[a]
    names = ["input_1"]
    for i, (name, _, _) in enumerate(table, start=1):
        names += [name, f"activation_{i}"] if name.startswith("batch") else [name]
    names += [f"merge_{i}" for i in range(1, 13)]
    if order == "alphabetical":
        names.sort()
    elif order == "shuffled":
        names = [names[i] for i in np.random.default_rng(5).permutation(len(names))]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            group = f.create_group(name)
            variables = list(arrays.get(name, {}))
            if order == "shuffled" and name.startswith("batch"):
                variables.reverse()
            weight_names = [f"{name}_{v}:0" for v in variables]
            group.attrs["weight_names"] = np.array([n.encode() for n in weight_names], dtype="S")
            for v, weight_name in zip(variables, weight_names, strict=True):
                group.create_dataset(weight_name, data=arrays[name][v])
    return path


# timm's own model definition, timm/models/xception.py (``legacy_xception``; huggingface/
# pytorch-image-models aa4b5850, 2026-08), the same module tree as Cadene's pretrainedmodels
# xception.py: Xception registers conv1, bn1, conv2, bn2, block1..block12, conv3, bn3, conv4,
# bn4, fc. Block(in, out, reps, strides, start_with_relu, grow_first) registers skip + skipbn
# (when out != in or strides != 1) *before* rep; rep is [ReLU, SeparableConv2d (conv1 =
# depthwise, pointwise), BatchNorm2d] per separable conv, without the first ReLU when
# start_with_relu=False; grow_first=False widens at the last separable conv. The weights
# (xception-43020ad28.pth) load with no filter function, so their keys are these names.
TIMM_BLOCKS = [
    (64, 128, 2, 2, False, True),
    (128, 256, 2, 2, True, True),
    (256, 728, 2, 2, True, True),
    *[(728, 728, 3, 1, True, True)] * 8,
    (728, 1024, 2, 2, True, False),
]


def timm_reference_keys() -> list[tuple[str, tuple[int, ...]]]:
    """``(key, shape)`` of timm's legacy_xception state dict in module order, without
    ``num_batches_tracked``."""
    keys: list[tuple[str, tuple[int, ...]]] = []

    def bn(name: str, c: int) -> None:
        keys.extend(
            (f"{name}.{v}", (c,)) for v in ("weight", "bias", "running_mean", "running_var")
        )

    def sep(name: str, c_in: int, c_out: int) -> None:
        keys.extend(
            [
                (f"{name}.conv1.weight", (c_in, 1, 3, 3)),
                (f"{name}.pointwise.weight", (c_out, c_in, 1, 1)),
            ]
        )

    keys.append(("conv1.weight", (32, 3, 3, 3)))
    bn("bn1", 32)
    keys.append(("conv2.weight", (64, 32, 3, 3)))
    bn("bn2", 64)
    for j, (c_in, c_out, reps, strides, start_with_relu, grow_first) in enumerate(TIMM_BLOCKS, 1):
        if c_out != c_in or strides != 1:
            keys.append((f"block{j}.skip.weight", (c_out, c_in, 1, 1)))
            bn(f"block{j}.skipbn", c_out)
        rep: list[tuple[str, int, int]] = []
        for i in range(reps):
            if grow_first:
                inc, outc = (c_in if i == 0 else c_out), c_out
            else:
                inc, outc = c_in, (c_in if i < reps - 1 else c_out)
            rep += [("relu", 0, 0), ("sep", inc, outc), ("bn", outc, outc)]
        for index, (module, inc, outc) in enumerate(rep if start_with_relu else rep[1:]):
            if module == "sep":
                sep(f"block{j}.rep.{index}", inc, outc)
            elif module == "bn":
                bn(f"block{j}.rep.{index}", outc)
    sep("conv3", 1024, 1536)
    bn("bn3", 1536)
    sep("conv4", 1536, 2048)
    bn("bn4", 2048)
    keys += [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))]
    return keys


def timm_state_dict(model: Xception) -> dict[str, torch.Tensor]:
    """The timm ``legacy_xception`` layout (see ``TIMM_BLOCKS``), keys in timm's module
    order: timm blocks 1-12 = Keras blocks 2-13, timm's conv3/conv4 = block14's separable
    convs. No ``num_batches_tracked``, as in Cadene's file (saved before PyTorch 0.4.1)."""
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
        if spec.residual == "conv":
            put(f"block{j}.skip", f"{spec.name}.residual")
            put(f"block{j}.skipbn", f"{spec.name}.residual_bn")
        rep = [m for name, _, _ in spec.sepconvs for m in ("relu", name, f"{name}_bn")]
        rep = rep[1:] if j == 1 else rep
        for index, module in enumerate(rep):
            short = f"{spec.name}.{module.removeprefix(spec.name + '_')}"
            if module.endswith("_bn"):
                put(f"block{j}.rep.{index}", short)
            elif module != "relu":
                put(f"block{j}.rep.{index}.conv1", f"{short}.depthwise")
                put(f"block{j}.rep.{index}.pointwise", f"{short}.pointwise")
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


def test_keras1_names_are_those_public_loaders_read(stats_model):
    # As kazuto1011/pytorch-ported-models (load_from_keras) and AbhishekRS4/pretrained_models
    # (frozen/xception.py) read the official file.
    table = {name: module for name, _, module in keras1_table()}
    assert len(table) == 6 + 34 + 40 + 1
    assert table["convolution2d_1"] == "block1.conv1"
    assert table["batchnormalization_2"] == "block1.conv2_bn"
    assert table["convolution2d_3"] == "block2.residual"
    assert table["batchnormalization_3"] == "block2.residual_bn"
    assert table["separableconvolution2d_1"] == "block2.sepconv1"
    assert table["batchnormalization_4"] == "block2.sepconv1_bn"
    assert table["batchnormalization_5"] == "block2.sepconv2_bn"
    assert table["convolution2d_4"] == "block3.residual"
    assert table["batchnormalization_6"] == "block3.residual_bn"
    assert table["separableconvolution2d_7"] == "block5.sepconv1"
    assert table["batchnormalization_12"] == "block5.sepconv1_bn"
    assert table["convolution2d_6"] == "block13.residual"
    assert table["batchnormalization_36"] == "block13.residual_bn"
    assert table["separableconvolution2d_31"] == "block13.sepconv1"
    assert table["batchnormalization_37"] == "block13.sepconv1_bn"
    assert table["batchnormalization_40"] == "block14.sepconv2_bn"
    assert table["separableconvolution2d_34"] == "block14.sepconv2"
    assert table["dense_2"] == "classifier"


@pytest.mark.parametrize("order", KERAS1_ORDERS)
def test_keras1_official_layout_loads_exactly(tmp_path, stats_model, order):
    path = write_keras1_h5(
        tmp_path / "xception_weights_tf_dim_ordering_tf_kernels.h5", stats_model, order
    )
    model = load_model(path, device="cpu")
    assert_same_weights(model, stats_model)
    assert torch.equal(logits(model), logits(stats_model))
    assert model.head_name == "imagenet" and len(model.labels) == 1000
    assert (model.source.padding, model.source.bn_eps, model.source.input_size) == (
        "keras",
        1e-3,
        299,
    )


@pytest.mark.parametrize(
    "pair",
    [
        ("batchnormalization_3", "batchnormalization_4"),  # block2: residual / sepconv1, 128
        ("batchnormalization_36", "batchnormalization_38"),  # block13: residual / sepconv2, 1024
    ],
)
def test_keras1_same_shape_layers_are_told_apart_by_number(tmp_path, stats_model, pair):
    """Two BNs of one width, written under each other's names, load without a shape error
    and change the logits: only the numbers tell them apart, and the fixture shows a mix-up."""
    path = write_keras1_h5(tmp_path / "swapped.h5", stats_model, "shuffled", swap=pair)
    model = load_model(path, device="cpu")
    table = {name: module for name, _, module in keras1_table()}
    first, second = (table[name] for name in pair)
    got = model.state_dict()
    want = stats_model.state_dict()
    assert torch.equal(got[f"{first}.running_var"], want[f"{second}.running_var"])
    assert not torch.allclose(logits(model), logits(stats_model), atol=1e-4)


def test_keras1_without_top_and_with_a_missing_layer(tmp_path, stats_model):
    path = write_keras1_h5(tmp_path / "notop.h5", stats_model)
    with h5py.File(path, "a") as f:
        names = [n for n in f.attrs["layer_names"] if n != b"dense_2"]
        f.attrs["layer_names"] = np.array(names)
    model = load_model(path, device="cpu")
    assert model.head_name == "none"
    assert torch.equal(
        model.block13.residual_bn.running_var, stats_model.block13.residual_bn.running_var
    )
    with h5py.File(path, "a") as f:
        names = [n for n in f.attrs["layer_names"] if n != b"batchnormalization_5"]
        f.attrs["layer_names"] = np.array(names)
    with pytest.raises(WeightsError, match=r"Keras 1 file has 39 bn layer\(s\)"):
        load_model(path, device="cpu")


def test_timm_fixture_has_timms_own_keys_in_timms_order(imagenet_model):
    state_dict = timm_state_dict(imagenet_model)
    assert [(k, tuple(v.shape)) for k, v in state_dict.items()] == timm_reference_keys()


@pytest.mark.parametrize("kind", ["pth", "pth-legacy", "safetensors"])
def test_timm_layout(tmp_path, imagenet_model, kind):
    path = tmp_path / f"xception-timm.{kind.removesuffix('-legacy')}"
    state_dict = timm_state_dict(imagenet_model)
    # conv weights (block1, 34 x depthwise + pointwise, 4 skips) + 40 BNs x 4 + fc weight, bias
    assert len(state_dict) == (2 + 34 * 2 + 4) + (2 + 34 + 4) * 4 + 2
    if kind == "pth":
        # A state dict saved by PyTorch >= 0.4.1 also holds BN step counters (the source
        # model's are 0).
        for key in [k for k in state_dict if k.endswith("running_var")]:
            state_dict[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
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


def pin(monkeypatch, name: str, path: Path, url: str | None = None) -> None:
    """Pin the known weights ``name`` to the digest of ``path`` (a file the test wrote), and
    to ``url`` if given."""
    known = weights._KNOWN[name]
    digest = hashlib.new(known.pinned.algorithm, path.read_bytes()).hexdigest()
    pinned = _download.PinnedDigest(known.pinned.algorithm, digest)
    monkeypatch.setitem(
        weights._KNOWN, name, dataclasses.replace(known, url=url or known.url, pinned=pinned)
    )


def serve(monkeypatch, tmp_path: Path, name: str, content: bytes) -> None:
    """Make the known weights ``name`` download from a local file:// URL."""
    source = tmp_path / f"served-{name}"
    source.write_bytes(content)
    pin(monkeypatch, name, source, url=source.as_uri())
    monkeypatch.setattr(_download, "urlopen", urllib.request.urlopen)


def install_kitchenware(monkeypatch, tmp_path: Path, model: Xception) -> Path:
    """A kitchenware package file written from ``model``, pinned and found by "auto"."""
    path = write_keras3_archive(tmp_path / weights.KITCHENWARE_FILE, model)
    pin(monkeypatch, "kitchenware", path)
    monkeypatch.setattr(weights, "kitchenware_file", lambda: path)
    return path


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


def test_auto_loads_the_official_keras1_file_from_the_cache(cache, monkeypatch, stats_model):
    cache.mkdir()
    path = cache / weights._KNOWN["keras-imagenet"].filename
    write_keras1_h5(path, stats_model, "shuffled")
    pin(monkeypatch, "keras-imagenet", path)
    model = load_model(device="cpu")
    assert (model.source.name, model.source.file) == ("keras-imagenet", str(path))
    assert model.source.note == "found in the cache"
    assert_same_weights(model, stats_model)
    assert model.labels == list(imagenet_labels())


def test_auto_sets_a_corrupt_cached_download_aside_and_says_so(
    cache, monkeypatch, tmp_path, kitchen_model, caplog
):
    corrupt = cached(cache, "keras-imagenet")  # not the file its md5 pins
    install_kitchenware(monkeypatch, tmp_path, kitchen_model)
    with caplog.at_level(logging.INFO, logger="xviz"):
        model = load_model(device="cpu")
    assert model.source.name == "kitchenware"
    note = model.source.note
    assert note.startswith("from the installed package") and note.endswith("(see the log)")
    assert "the cached keras-imagenet file was corrupt (moved aside)" in note
    # Moved aside, it is downloaded afresh (which fails here: no network).
    assert "the keras-imagenet download failed" in note
    assert not corrupt.exists()
    (aside,) = cache.iterdir()
    assert aside.name.startswith(f"{corrupt.name}.corrupt-")
    assert aside.read_bytes() == b"keras-imagenet"
    failed = [r.getMessage() for r in caplog.records if "failed to load" in r.getMessage()]
    assert len(failed) == 1 and "\n" not in failed[0]
    assert str(corrupt) in failed[0] and "md5" in failed[0] and aside.name in failed[0]
    # The next start never reads it again.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="xviz"):
        again = load_model(device="cpu")
    assert again.source.name == "kitchenware" and "corrupt" not in again.source.note
    assert not [r for r in caplog.records if "failed to load" in r.getMessage()]


def test_auto_keeps_a_genuine_file_that_does_not_load(
    cache, monkeypatch, tmp_path, imagenet_model, caplog
):
    """A file with the pinned digest that does not load is not a corrupt download: it is
    kept, not downloaded again, and the next source is loaded."""
    cache.mkdir()
    keras = write_keras2_h5(
        cache / weights._KNOWN["keras-imagenet"].filename, imagenet_model, top=False
    )
    pin(monkeypatch, "keras-imagenet", keras)
    timm = cache / weights._KNOWN["timm-imagenet"].filename
    torch.save(timm_state_dict(imagenet_model), timm)
    pin(monkeypatch, "timm-imagenet", timm)
    with caplog.at_level(logging.WARNING, logger="xviz"):
        model = load_model(device="cpu")
    assert model.source.name == "timm-imagenet"
    assert model.source.note == (
        "found in the cache, because the keras-imagenet file failed to load (see the log)"
    )
    assert_same_weights(model, imagenet_model)
    assert keras.exists() and len(list(cache.iterdir())) == 2
    (line,) = [r.getMessage() for r in caplog.records]
    assert "keras-imagenet" in line and str(keras) in line and "'none' head" in line


def test_auto_from_environment_says_so(cache, monkeypatch, tmp_path, imagenet_model):
    path = tmp_path / "mine.pt"
    torch.save(imagenet_model.state_dict(), path)
    monkeypatch.setenv("XVIZ_WEIGHTS", str(path))
    assert load_model(device="cpu").source.note == "set by $XVIZ_WEIGHTS"
    assert load_model(path, device="cpu").source.note == ""


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


def test_download_logs_progress_every_tenth(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(_download, "CHUNK_BYTES", 1000)  # 103 chunks
    content = bytes(range(256)) * 400
    source = tmp_path / "served.h5"
    source.write_bytes(content)
    pinned = _download.PinnedDigest("md5", hashlib.md5(content).hexdigest())
    with caplog.at_level(logging.INFO, logger="xviz"):
        _download.download(source.as_uri(), tmp_path / "cache" / "w.h5", pinned)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().endswith("%)")]
    assert [int(m.rsplit("(", 1)[1].removesuffix("%)")) for m in progress] == list(
        range(10, 101, 10)
    )
    assert progress[-1] == "downloading w.h5: 0.1 of 0.1 MB (100%)"


def test_download_of_unknown_size_logs_megabytes(tmp_path, monkeypatch, caplog):
    chunks = iter([b"x" * 1000] * 10)

    class Stream(io.BytesIO):  # no headers: the server did not say how large
        def read(self, n=-1):
            return next(chunks, b"")

    monkeypatch.setattr(_download, "urlopen", lambda url, timeout: Stream())
    monkeypatch.setattr(_download, "PROGRESS_BYTES", 3000)
    pinned = _download.PinnedDigest("md5", hashlib.md5(b"x" * 10000).hexdigest())
    with caplog.at_level(logging.INFO, logger="xviz"):
        _download.download("https://example.invalid/w.h5", tmp_path / "w.h5", pinned)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().endswith(" MB")]
    assert progress == ["downloading w.h5: 0.0 MB"] * 3  # at 3000, 6000, 9000 bytes


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


def test_a_keras_archive_that_would_inflate_too_far_is_refused_unread(tmp_path, monkeypatch):
    """A zip bomb: model.weights.h5 declares 640 MB of zeros, compressed to 3 MB."""
    from xviz.model._formats import MAX_WEIGHTS_BYTES

    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("config.json", '{"class_name": "Functional", "config": {"layers": []}}')
        with z.open("model.weights.h5", "w", force_zip64=True) as member:
            chunk = bytes(64 * 2**20)
            for _ in range(MAX_WEIGHTS_BYTES // len(chunk) + 2):  # just over the limit
                member.write(chunk)
    assert path.stat().st_size < 4 * 2**20
    read = zipfile.ZipFile.read
    inflated: list[str] = []

    def spy(self, name, *args, **kwargs):
        inflated.append(name)
        return read(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "read", spy)
    with pytest.raises(WeightsError, match=r"model.weights.h5 would inflate to 640 MB"):
        load_model(path)
    assert "model.weights.h5" not in inflated  # refused from the size it declares
