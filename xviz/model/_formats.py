"""Weight files of other layouts -> xviz state dicts (``block2.sepconv1.depthwise.weight``).

Readers (file -> Keras layers):
    read_keras_h5        Keras 1 and Keras 2 HDF5 (``layer_names`` / ``weight_names``); the
                         official ImageNet file ``xception_weights_tf_dim_ordering_tf_kernels.h5``
                         is Keras 1 (see "Keras 1 HDF5" below)
    read_keras_archive   Keras 3 ``.keras`` zip (``config.json`` + ``model.weights.h5``)
Converters (-> ``Converted``: the state dict, where each tensor came from, what did not fit):
    keras_to_xviz        Keras layers (Keras 1 automatic names, or Keras 2/3 named layers)
    timm_to_xviz         timm / Cadene ``legacy_xception`` state dict

Converters never raise on a tensor that does not fit: they collect the problem, so that
``weights.py`` can check everything against the model and name every problem in one error.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from xviz.errors import WeightsError
from xviz.model.xception import BLOCK_SPECS


@dataclass(frozen=True)
class KerasLayer:
    """One Keras layer that holds variables.

    ``name`` is its Keras name (``block2_sepconv1``, or an automatic one such as
    ``conv2d_3``); ``kind`` is ``"conv"``, ``"sepconv"``, ``"bn"``, ``"dense"``, or ``""``
    when its variables fit none of those; ``arrays`` are in Keras' variable order.
    """

    name: str
    kind: str
    arrays: tuple[np.ndarray, ...]


@dataclass
class Converted:
    """An xviz-layout state dict, the origin of each tensor (for messages), and the problems."""

    state_dict: dict[str, torch.Tensor]
    origins: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Keras: variable layouts
# ---------------------------------------------------------------------------------------

# The array ranks of each kind of layer Xception has, in Keras' variable order.
_KIND_BY_RANKS: dict[tuple[int, ...], str] = {
    (4,): "conv",  # kernel
    (4, 4): "sepconv",  # depthwise_kernel, pointwise_kernel
    (1, 1, 1, 1): "bn",  # gamma, beta, moving_mean, moving_variance
    (2, 1): "dense",  # kernel, bias
}
_KIND_BY_CLASS: dict[str, str] = {
    "Conv2D": "conv",
    "SeparableConv2D": "sepconv",
    "BatchNormalization": "bn",
    "Dense": "dense",
}


def _conv_kernel(a: np.ndarray) -> torch.Tensor:
    # Conv2D kernel and pointwise_kernel: (kh, kw, in, out) -> (out, in, kh, kw)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(3, 2, 0, 1)))


def _depthwise_kernel(a: np.ndarray) -> torch.Tensor:
    # depthwise_kernel: (kh, kw, in, 1) -> (in, 1, kh, kw), one filter per input channel
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 3, 0, 1)))


def _dense_kernel(a: np.ndarray) -> torch.Tensor:
    # Dense kernel: (in, out) -> nn.Linear weight (out, in)
    return torch.from_numpy(np.ascontiguousarray(a.T))


def _as_is(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


# kind -> (xviz parameter suffix, conversion) per Keras variable, in Keras' order.
_KERAS_VARIABLES = {
    "conv": (("weight", _conv_kernel),),
    "sepconv": (("depthwise.weight", _depthwise_kernel), ("pointwise.weight", _conv_kernel)),
    "bn": (
        ("weight", _as_is),  # gamma
        ("bias", _as_is),  # beta
        ("running_mean", _as_is),  # moving_mean
        ("running_var", _as_is),  # moving_variance
    ),
    "dense": (("weight", _dense_kernel), ("bias", _as_is)),
}
# Keras names every layer of Xception except the 4 residual convs and their BNs.
_NAMED_LAYER = re.compile(r"(block\d+)_(\w+)")
_RESIDUAL_BLOCKS = tuple(spec.name for spec in BLOCK_SPECS if spec.residual == "conv")
# The Dense layers in order: one is the ImageNet head, two are the kitchenware head.
_HEADS_BY_DENSE_COUNT = {1: ("classifier",), 2: ("classifier.fc1", "classifier.fc2")}


def _shapes(arrays: tuple[np.ndarray, ...]) -> str:
    return ", ".join(str(tuple(a.shape)) for a in arrays)


def keras_to_xviz(layers: list[KerasLayer]) -> Converted:
    """Keras layers -> xviz state dict.

    A file whose layers carry Keras 1 automatic names (``convolution2d_3``, the official
    ImageNet file) maps by the number in each name (``_keras1_to_xviz``). Otherwise, with the
    layers in network order: named layers map by name (``block2_sepconv1`` ->
    ``block2.sepconv1``); the unnamed residual convs and BNs map by order of appearance to
    blocks 2, 3, 4, 13, never by their automatic names, which depend on the session that
    built the model; Dense layers map by order to the head: 1 -> the ImageNet classifier,
    2 -> the kitchenware ``fc1``, ``fc2``.
    """
    if any(_KERAS1_AUTOMATIC.fullmatch(layer.name) for layer in layers):
        return _keras1_to_xviz(layers)
    denses = sum(layer.kind == "dense" for layer in layers)
    unnamed = {
        "conv": [f"{block}.residual" for block in _RESIDUAL_BLOCKS],
        "bn": [f"{block}.residual_bn" for block in _RESIDUAL_BLOCKS],
        "dense": list(_HEADS_BY_DENSE_COUNT.get(denses, ())),
    }
    out = Converted({})
    for layer in layers:
        if not _fits_its_kind(layer, out):
            continue
        named = _NAMED_LAYER.fullmatch(layer.name)
        if named and layer.kind != "dense":
            prefix = f"{named[1]}.{named[2]}"
        elif unnamed.get(layer.kind):
            prefix = unnamed[layer.kind].pop(0)
        else:
            out.problems.append(
                f"unexpected Keras layer {layer.name!r} ({layer.kind}, {_shapes(layer.arrays)}): "
                "Xception has no further layer of that kind to give it to"
            )
            continue
        _put(out, prefix, layer)
    return out


def _fits_its_kind(layer: KerasLayer, out: Converted) -> bool:
    """True if ``layer``'s arrays have the ranks of its kind; else the problem is noted."""
    if layer.kind and _KIND_BY_RANKS.get(tuple(a.ndim for a in layer.arrays)) == layer.kind:
        return True
    out.problems.append(
        f"unexpected Keras layer {layer.name!r}: arrays {_shapes(layer.arrays)} "
        "fit no layer of Xception"
    )
    return False


def _put(out: Converted, prefix: str, layer: KerasLayer) -> None:
    """Convert ``layer``'s arrays (Keras variable order) into ``out`` under ``prefix``."""
    for (suffix, convert), array in zip(_KERAS_VARIABLES[layer.kind], layer.arrays, strict=True):
        key = f"{prefix}.{suffix}"
        out.state_dict[key] = convert(array)
        out.origins[key] = f"Keras layer {layer.name!r}"


# ---------------------------------------------------------------------------------------
# Keras 1 HDF5: the official ImageNet file
# ---------------------------------------------------------------------------------------
#
# ``xception_weights_tf_dim_ordering_tf_kernels.h5`` (md5 0a58e3b7...) was written by Keras 1
# from a model whose layers had automatic names. Public loaders of that very file read it so:
# kazuto1011/pytorch-ported-models models/classification/xception.py (``load_from_keras``)
# and AbhishekRS4/pretrained_models frozen/xception.py (``weights_key=...``):
# - layers ``convolution2d_1..6``, ``separableconvolution2d_1..34``,
#   ``batchnormalization_1..40`` and one Dense, ``dense_2``;
# - each layer's weights flat in its group: ``convolution2d_1/convolution2d_1_W:0``,
#   ``separableconvolution2d_1_depthwise_kernel:0`` / ``_pointwise_kernel:0``,
#   ``batchnormalization_4_gamma:0`` / ``_beta:0`` / ``_running_mean:0`` / ``_running_std:0``,
#   ``dense_2_W:0`` / ``dense_2_b:0``; kernels already channels-last (tf dim ordering), the
#   layouts Keras 2 uses: Keras 2's own Keras 1 converter (keras/engine/saving.py
#   ``preprocess_weights_for_loading``) leaves channels-last Conv2D kernels and every
#   BatchNormalization weight as they are;
# - ``running_std`` holds the moving *variance*: Keras 1's BatchNormalization passes it as
#   the variance to ``K.batch_normalization`` and updates it with the batch variance from
#   ``K.normalize_batch_in_training``; Keras 2's converter loads it into ``moving_variance``
#   unchanged, and the TF port above feeds it to ``tf.nn.batch_normalization(variance=...)``.
#
# Keras 1 names a layer ``<class name lowercased>_<K.get_uid(prefix)>`` (keras 1.x
# keras/engine/topology.py ``Layer.__init__``): the number counts that class's layers in the
# order the session created them; it can start above 1 (``dense_2``), so each kind is mapped by
# the rank of its numbers, never by the order of ``layer_names`` and never by shape (block2's
# residual BN and both its separable-conv BNs have 128 channels). The creation order is that
# of Keras 1's Xception (fchollet/deep-learning-models xception.py, the source of this file's
# release): block1's two convs, then for each block with a residual conv, that 1x1 conv and its
# BN *before* the block's separable convs, each separable conv followed by its BN. So
# convolution2d_3 + batchnormalization_3 = block2's residual, batchnormalization_4/5 =
# block2_sepconv1/2_bn, ..., convolution2d_6 + batchnormalization_36 = block13's residual,
# batchnormalization_37..40 = block13/14's separable-conv BNs, as both loaders above map them.

_KERAS1_AUTOMATIC = re.compile(r"(convolution2d|separableconvolution2d|batchnormalization)_\d+")
_KERAS1_NAME = re.compile(r"(convolution2d|separableconvolution2d|batchnormalization|dense)_(\d+)")
_KIND_BY_KERAS1_CLASS = {
    "convolution2d": "conv",
    "separableconvolution2d": "sepconv",
    "batchnormalization": "bn",
    "dense": "dense",
}
# Keras 1 variable name suffixes per kind, in the order of _KERAS_VARIABLES.
_KERAS1_VARIABLES = {
    "conv": ("W",),
    "sepconv": ("depthwise_kernel", "pointwise_kernel"),
    "bn": ("gamma", "beta", "running_mean", "running_std"),
    "dense": ("W", "b"),
}


def _keras1_creation_order() -> dict[str, tuple[str, ...]]:
    """kind -> xviz module prefixes in the order Keras 1's Xception creates those layers."""
    convs = ["block1.conv1", "block1.conv2"]
    bns = ["block1.conv1_bn", "block1.conv2_bn"]
    sepconvs = []
    for spec in BLOCK_SPECS[1:]:
        if spec.residual == "conv":
            convs.append(f"{spec.name}.residual")
            bns.append(f"{spec.name}.residual_bn")
        for name, _, _ in spec.sepconvs:
            prefix = f"{spec.name}.{name.removeprefix(spec.name + '_')}"
            sepconvs.append(prefix)
            bns.append(f"{prefix}_bn")
    assert (len(convs), len(sepconvs), len(bns)) == (6, 34, 40)
    return {
        "conv": tuple(convs),
        "sepconv": tuple(sepconvs),
        "bn": tuple(bns),
        "dense": ("classifier",),
    }


KERAS1_CREATION_ORDER: dict[str, tuple[str, ...]] = _keras1_creation_order()


def _keras1_to_xviz(layers: list[KerasLayer]) -> Converted:
    """Layers with Keras 1 automatic names -> xviz state dict, each kind by rank of number."""
    out = Converted({})
    numbered: dict[str, list[tuple[int, KerasLayer]]] = {kind: [] for kind in _KERAS1_VARIABLES}
    for layer in layers:
        match = _KERAS1_NAME.fullmatch(layer.name)
        if match is None:
            out.problems.append(
                f"unexpected Keras layer {layer.name!r} ({_shapes(layer.arrays)}) in a Keras 1 "
                "file of automatically named layers"
            )
        elif _fits_its_kind(layer, out):
            numbered[layer.kind].append((int(match[2]), layer))
    for kind, prefixes in KERAS1_CREATION_ORDER.items():
        found = [layer for _, layer in sorted(numbered[kind], key=lambda pair: pair[0])]
        if kind == "dense" and not found:
            continue  # a file without the classifier ("notop")
        if len(found) != len(prefixes):
            names = ", ".join(layer.name for layer in found) or "none"
            out.problems.append(
                f"Keras 1 file has {len(found)} {kind} layer(s) ({names}), Xception has "
                f"{len(prefixes)}: their numbers cannot be matched to Xception's layers"
            )
            continue
        for prefix, layer in zip(prefixes, found, strict=True):
            _put(out, prefix, layer)
    return out


# ---------------------------------------------------------------------------------------
# Keras 2 HDF5
# ---------------------------------------------------------------------------------------


def _strings(values) -> list[str]:
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_keras_h5(path: Path) -> list[KerasLayer]:
    """A Keras 1 or 2 HDF5 weights file (``save_weights`` or a whole-model ``save``) -> its
    layers, in ``layer_names`` order.

    A nested model (a layer that is itself a model) is one group whose ``weight_names``
    read ``<inner layer>/<variable>``: its inner layers are split out, in order. A Keras 1
    layer's variables (``<layer>_<variable>:0``, no folder) are put in Keras' variable order
    by their names.
    """
    try:
        with h5py.File(path, "r") as f:
            # A whole-model save keeps the weights under "model_weights".
            root = f.get("model_weights", f)
            if "layer_names" not in root.attrs:
                hint = (
                    " It looks like a Keras 3 '.weights.h5', which names no layers: "
                    "save the whole model as '.keras' instead."
                    if "layers" in root
                    else ""
                )
                raise WeightsError(
                    f"{path} is HDF5 but not a Keras weights file (no 'layer_names').{hint}"
                )
            return list(_h5_layers(root))
    except (OSError, KeyError, ValueError) as e:
        raise WeightsError(f"{path} cannot be read as a Keras HDF5 weights file: {e}") from e


def _h5_layers(root: h5py.Group) -> Iterator[KerasLayer]:
    for layer_name in _strings(root.attrs["layer_names"]):
        group = root[layer_name]
        weight_names = _strings(group.attrs.get("weight_names", []))
        if weight_names and all(
            "/" not in n and n.startswith(f"{layer_name}_") for n in weight_names
        ):
            yield _keras1_layer(group, layer_name, weight_names)
            continue
        # "<layer>/<var>:0" (Keras 2) or "<model>/<layer>/<var>:0" (a nested model).
        owners = [posixpath.basename(posixpath.dirname(n)) for n in weight_names]
        nested = len(set(owners)) > 1
        start = 0
        for end in range(1, len(weight_names) + 1):
            if end == len(weight_names) or owners[end] != owners[start]:
                arrays = tuple(np.asarray(group[n]) for n in weight_names[start:end])
                kind = _KIND_BY_RANKS.get(tuple(a.ndim for a in arrays), "")
                yield KerasLayer(owners[start] if nested else layer_name, kind, arrays)
                start = end


def _keras1_layer(group: h5py.Group, layer_name: str, weight_names: list[str]) -> KerasLayer:
    """A Keras 1 layer, its flat variables (``<layer>_<variable>:0``) put in Keras' variable
    order by their names; kind ``""`` (reported) when the names are not those of its kind."""
    arrays = {
        n.removeprefix(f"{layer_name}_").removesuffix(":0"): np.asarray(group[n])
        for n in weight_names
    }
    automatic = _KERAS1_NAME.fullmatch(layer_name)
    kind = (
        _KIND_BY_KERAS1_CLASS[automatic[1]]
        if automatic
        else _KIND_BY_RANKS.get(tuple(a.ndim for a in arrays.values()), "")
    )
    variables = _KERAS1_VARIABLES.get(kind, ())
    if sorted(arrays) != sorted(variables):
        return KerasLayer(layer_name, "", tuple(arrays.values()))
    return KerasLayer(layer_name, kind, tuple(arrays[v] for v in variables))


# ---------------------------------------------------------------------------------------
# Keras 3 .keras archive
# ---------------------------------------------------------------------------------------


def _snake_case(name: str) -> str:
    # keras.src.utils.naming.to_snake_case: "SeparableConv2D" -> "separable_conv2d"
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# An Xception's float32 weights are 92 MB, its config.json tens of kB: an archive whose members
# declare far more is refused before a byte is inflated (a zip bomb inflates to gigabytes).
MAX_WEIGHTS_BYTES = 512 * 2**20
MAX_CONFIG_BYTES = 16 * 2**20


def _member(archive: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    """The bytes of member ``name``, refused if it declares more than ``limit``.

    ``ZipExtFile`` never returns more than the size the member declares (and checks the CRC),
    so a member that lies about its size cannot inflate past ``limit`` either.
    """
    size = archive.getinfo(name).file_size
    if size > limit:
        raise WeightsError(
            f"{path}: its {name} would inflate to {size / 2**20:,.0f} MB, more than an "
            f"Xception's file can hold ({limit / 2**20:.0f} MB): it is not read."
        )
    return archive.read(name)


def read_keras_archive(path: Path) -> list[KerasLayer]:
    """A Keras 3 ``.keras`` archive -> its layers in ``config.json`` order, nested models inlined.

    ``model.weights.h5`` keeps each layer's variables under ``layers/<key>/vars/<i>`` where
    the key is derived from the layer's class, with a per-class counter, in the order of the
    model's layers (keras.src.saving.saving_lib ``_save_container_state``): the 3rd
    SeparableConv2D is ``separable_conv2d_2`` whatever its name. A nested model's layers sit
    under ``layers/<its key>/layers/``. Variables that no layer of ``config.json`` claims come
    back as layers of kind ``""``, so that they are reported.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(_member(archive, "config.json", MAX_CONFIG_BYTES, path))
            weights = io.BytesIO(_member(archive, "model.weights.h5", MAX_WEIGHTS_BYTES, path))
        with h5py.File(weights, "r") as f:
            layer_configs = config.get("config", {}).get("layers")
            if not isinstance(layer_configs, list):
                raise WeightsError(
                    f"{path}: config.json describes a {config.get('class_name')!r}, not a "
                    "Functional or Sequential model with a list of layers."
                )
            claimed: set[str] = set()
            layers = list(_archive_layers(layer_configs, f, "layers", claimed))
            groups: list[str] = []
            f["layers"].visit(groups.append)
            unclaimed = [f"layers/{name}" for name in groups if posixpath.basename(name) == "vars"]
            layers += [
                _vars_layer(f[name], name, "")
                for name in unclaimed
                if name not in claimed and len(f[name])
            ]
            return layers
    except (OSError, KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        # json.JSONDecodeError is a ValueError; a missing zip member is a KeyError; a
        # config.json of another structure fails as TypeError or AttributeError.
        raise WeightsError(f"{path} cannot be read as a Keras 3 '.keras' archive: {e}") from e


def _archive_layers(
    layer_configs: list[dict],
    f: h5py.File,
    prefix: str,
    claimed: set[str],
) -> Iterator[KerasLayer]:
    counters: dict[str, int] = {}
    for layer in layer_configs:
        class_name = layer["class_name"]
        base = _snake_case(class_name)
        count = counters.get(base, -1) + 1
        counters[base] = count
        key = f"{prefix}/{base}" if count == 0 else f"{prefix}/{base}_{count}"
        inner = layer.get("config", {}).get("layers")
        if isinstance(inner, list):
            yield from _archive_layers(inner, f, f"{key}/layers", claimed)
            continue
        vars_path = f"{key}/vars"
        if vars_path in f and len(f[vars_path]):
            claimed.add(vars_path)
            name = layer.get("config", {}).get("name", key)
            yield _vars_layer(f[vars_path], name, _KIND_BY_CLASS.get(class_name, ""))


def _vars_layer(group: h5py.Group, name: str, kind: str) -> KerasLayer:
    return KerasLayer(name, kind, tuple(np.asarray(group[str(i)]) for i in range(len(group))))


# ---------------------------------------------------------------------------------------
# timm / Cadene
# ---------------------------------------------------------------------------------------


def _timm_modules() -> dict[str, str]:
    """timm ``legacy_xception`` module name -> xviz module name.

    timm's ``Block`` builds ``rep`` as [ReLU, SeparableConv2d, BatchNorm2d] per separable
    conv and drops the leading ReLU when ``start_with_relu=False`` (its block1 = Keras
    block2), so the separable convs sit at rep indices 0, 3 there and 1, 4, 7 elsewhere, each
    followed by its BN. timm blocks 1-12 are Keras blocks 2-13; Keras block14 is timm's
    ``conv3``/``bn3``/``conv4``/``bn4``. SeparableConv2d's depthwise conv is named ``conv1``.
    """
    modules = {
        "conv1": "block1.conv1",
        "bn1": "block1.conv1_bn",
        "conv2": "block1.conv2",
        "bn2": "block1.conv2_bn",
    }
    for spec in BLOCK_SPECS[1:13]:
        timm_block = f"block{spec.index - 1}"
        first = 0 if spec.name == "block2" else 1
        for i, (name, _, _) in enumerate(spec.sepconvs):
            rep = f"{timm_block}.rep.{first + 3 * i}"
            ours = f"{spec.name}.{name.removeprefix(spec.name + '_')}"
            modules[f"{rep}.conv1"] = f"{ours}.depthwise"
            modules[f"{rep}.pointwise"] = f"{ours}.pointwise"
            modules[f"{timm_block}.rep.{first + 3 * i + 1}"] = f"{ours}_bn"
        if spec.residual == "conv":
            modules[f"{timm_block}.skip"] = f"{spec.name}.residual"
            modules[f"{timm_block}.skipbn"] = f"{spec.name}.residual_bn"
    for i, timm_index in enumerate((3, 4), start=1):
        modules[f"conv{timm_index}.conv1"] = f"block14.sepconv{i}.depthwise"
        modules[f"conv{timm_index}.pointwise"] = f"block14.sepconv{i}.pointwise"
        modules[f"bn{timm_index}"] = f"block14.sepconv{i}_bn"
    modules["fc"] = "classifier"
    # block1: 2 convs + 2 BNs; 34 separable convs x (depthwise, pointwise, BN); 4 x (skip,
    # skipbn); fc.
    assert len(modules) == 4 + 34 * 3 + 4 * 2 + 1, len(modules)
    return modules


TIMM_TO_XVIZ: dict[str, str] = _timm_modules()


def timm_to_xviz(state_dict: Mapping[str, torch.Tensor]) -> Converted:
    """timm / Cadene ``legacy_xception`` state dict -> xviz state dict.

    Both are PyTorch layouts: tensors are renamed, never transposed.
    """
    out = Converted({})
    for key, tensor in state_dict.items():
        module, _, param = key.rpartition(".")
        ours = TIMM_TO_XVIZ.get(module)
        if ours is None:
            out.problems.append(f"unexpected timm tensor {key} {tuple(tensor.shape)}")
            continue
        out.state_dict[f"{ours}.{param}"] = tensor
        out.origins[f"{ours}.{param}"] = f"timm {key}"
    return out
