"""ablation: each change moves what it should and nothing upstream; the model is restored."""

import numpy as np
import pytest
import torch

from xviz.engine.analysis import MAP_NAMES, analyze, map_modules
from xviz.engine.hooks import Capture, hook_count
from xviz.errors import AnalysisError
from xviz.methods.ablation import KINDS, VALID_BLOCKS, Ablation, ablate, ablated
from xviz.model.xception import BLOCKS, SeparableConv2d, Xception

SIZE = 71


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1


def snapshot(model: Xception) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "residual": [getattr(b, "use_residual", None) for b in model.blocks.values()],
        "training": [m.training for m in model.modules()],
    }


def assert_restored(model: Xception, before: dict) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for key, value in after["state"].items():
        assert torch.equal(value, before["state"][key]), key
    assert after["residual"] == before["residual"]
    assert after["training"] == before["training"]
    assert hook_count(model) == 0


def unchanged_upstream(result, first_changed: str) -> None:
    upstream = MAP_NAMES[: MAP_NAMES.index(first_changed)]
    assert all(result.map_change[name] == 0 for name in upstream if name in result.map_change)
    assert result.map_change[first_changed] > 0


def test_relu_between_depthwise_and_pointwise(model, x):
    before = snapshot(model)
    result = ablate(model, x, Ablation.relu_between(["block5", "block6"]), size=SIZE)
    assert_restored(model, before)
    unchanged_upstream(result, "block5_sepconv1.depthwise")  # captured after the inserted ReLU
    assert result.watched == "block5_sepconv1.pointwise"
    assert result.map_change["block6_sepconv3.pointwise"] > 0 and result.kl_divergence > 0
    assert result.original_map.shape == result.ablated_map.shape == (728, 5, 5)
    assert not np.array_equal(result.original_map.data, result.ablated_map.data)


def test_relu_between_makes_the_depthwise_output_non_negative(model, x):
    modules = map_modules(model)
    names = ("block2_sepconv1.depthwise", "block2_sepconv2.depthwise")
    relu = Ablation.relu_between("block2")
    with torch.no_grad(), ablated(model, relu), Capture({n: modules[n] for n in names}) as cap:
        model(x)
    assert all(t.min() >= 0 for t in cap.outputs.values())
    with torch.no_grad(), Capture({"dw": modules["block2_sepconv1.depthwise"]}) as plain:
        model(x)
    assert plain.outputs["dw"].min() < 0  # the unablated network has negative values there
    torch.testing.assert_close(cap.outputs["block2_sepconv1.depthwise"], plain.outputs["dw"].relu())


def test_drop_residual_leaves_the_branch_alone(model, x):
    with torch.no_grad(), Capture(model.blocks) as plain:
        model(x)
    with (
        torch.no_grad(),
        ablated(model, Ablation.drop_residual("block5")),
        Capture(model.blocks) as cut,
    ):
        model(x)
    assert all(b.use_residual for b in model.blocks.values() if hasattr(b, "use_residual"))
    # block5's residual is the identity: its output without it is output - input.
    torch.testing.assert_close(
        cut.outputs["block5"],
        plain.outputs["block5"] - plain.outputs["block4"],
        atol=1e-6,
        rtol=1e-5,
    )
    torch.testing.assert_close(cut.outputs["block4"], plain.outputs["block4"], rtol=0, atol=0)
    result = ablate(model, x, Ablation.drop_residual("block5"), size=SIZE)
    unchanged_upstream(result, "block5")
    assert result.watched == "block5" and result.block_change["block4"] == 0


def test_drop_residual_of_a_conv_residual_block_subtracts_its_residual_branch(model, x):
    """Blocks 2, 3, 4, 13 add a 1x1 conv + BN of the block input: without it, the output
    is the block output minus that branch, and the residual conv does not run at all."""
    with (
        torch.no_grad(),
        Capture(model.blocks) as plain,
        Capture({"bn": model.block3.residual_bn}) as branch,
    ):
        model(x)
    result = ablate(model, x, Ablation.drop_residual("block3"), size=SIZE)
    unchanged_upstream(result, "block3")
    assert "block3_residual" not in result.map_change
    with (
        torch.no_grad(),
        ablated(model, Ablation.drop_residual("block3")),
        Capture(model.blocks) as cut,
    ):
        model(x)
    torch.testing.assert_close(
        cut.outputs["block3"], plain.outputs["block3"] - branch.outputs["bn"], atol=1e-5, rtol=1e-5
    )
    assert result.block_change["block3"] > 0


def test_zero_channel_zeroes_exactly_that_channel(model, x):
    result = ablate(model, x, Ablation.zero_channel("block5_sepconv2.depthwise", 17), size=SIZE)
    unchanged_upstream(result, "block5_sepconv2.depthwise")
    original, changed = result.original_map.array(), result.ablated_map.array()
    assert np.all(changed[17] == 0) and np.any(original[17] != 0)
    others = np.arange(728) != 17
    np.testing.assert_array_equal(changed[others], original[others])


def test_prediction_comparison_and_kl(model, x):
    a = analyze(model, x, target=11, size=SIZE)
    result = ablate(
        model, a, [Ablation.drop_residual(["block5", "block6"]), Ablation.zero_channel("block4", 0)]
    )
    p = result.original_probabilities.astype(np.float64)
    q = result.ablated_probabilities.astype(np.float64)
    np.testing.assert_allclose(result.kl_divergence, np.sum(p * np.log(p / q)), rtol=1e-3)
    np.testing.assert_allclose(p, a.probabilities, rtol=1e-4)
    assert result.target == 11 and len(result.original) == len(result.ablated) == 5
    assert result.target_probability_change == pytest.approx(q[11] - p[11])
    assert result.original[0].index == a.top[0].index
    assert result.top1_changed == (result.ablated[0].index != result.original[0].index)
    assert result.map_change["block4"] > 0 and result.block_change["block3"] == 0


def test_model_is_restored_after_an_exception_inside(model, x):
    before = snapshot(model)
    both = [
        Ablation.relu_between("block7"),
        Ablation.drop_residual("block7"),
        Ablation.zero_channel("block7", 3),
    ]
    with pytest.raises(RuntimeError, match="inside"), ablated(model, both):
        assert not model.block7.use_residual and hook_count(model) > 0
        raise RuntimeError("inside")
    assert_restored(model, before)
    with pytest.raises(RuntimeError), ablated(model, both):
        model(torch.zeros(1, 2, SIZE, SIZE))  # wrong channel count: fails in the forward pass
    assert_restored(model, before)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Ablation.relu_between("block1"),
        lambda: Ablation.drop_residual("block14"),
        lambda: Ablation.zero_channel("block5", 728),
        lambda: Ablation.zero_channel("block5_sepconv9.depthwise", 0),
        lambda: Ablation("transplant"),
    ],
)
def test_invalid_ablations_are_analysis_errors(make):
    with pytest.raises(AnalysisError):
        make()


def test_valid_blocks_are_the_blocks_that_have_what_the_change_needs(model, x):
    """Independently of the block specs: a block takes relu_between if it holds a separable
    conv, and drop_residual if switching its residual off changes its output."""
    separable = [
        name
        for name, block in model.blocks.items()
        if any(isinstance(m, SeparableConv2d) for m in block.modules())
    ]
    assert list(VALID_BLOCKS["relu_between"]) == separable
    with torch.no_grad(), Capture(model.blocks) as plain:
        model(x)
    inputs = dict(zip(list(model.blocks)[1:], list(plain.outputs.values())[:-1], strict=True))
    with_residual = []
    for name, block_input in inputs.items():
        block = model.blocks[name]
        with torch.no_grad():
            block.use_residual = False
            try:
                cut = block(block_input)
            finally:
                block.use_residual = True
        if not torch.equal(cut, plain.outputs[name]):
            with_residual.append(name)
    assert list(VALID_BLOCKS["drop_residual"]) == with_residual
    assert VALID_BLOCKS["zero_channel"] == ()
    assert set(VALID_BLOCKS) == set(KINDS)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Ablation.drop_residual(["block5", "block14"]), "block14' has no residual"),
        (lambda: Ablation.relu_between("block1"), "block1' has no separable convolution"),
        (lambda: Ablation.drop_residual("block99"), "block99' is not a block of Xception"),
        (lambda: Ablation.drop_residual([["block5"]]), "is not a block of Xception"),
        (lambda: Ablation.relu_between("x" * 500), r"… \(502 characters\) is not a block"),
    ],
)
def test_invalid_blocks_say_what_is_wrong_and_what_is_allowed(make, message):
    with pytest.raises(AnalysisError, match=message) as info:
        make()
    assert "only" in str(info.value) and len(str(info.value)) < 200


def test_changed_blocks_name_where_each_change_is_made():
    assert Ablation.relu_between(["block5", "block9"]).changed_blocks == ("block5", "block9")
    assert Ablation.drop_residual("block13").changed_blocks == ("block13",)
    for map_name, block in [
        ("block1_conv2", "block1"),
        ("block2_residual", "block2"),
        ("block11_sepconv3.pointwise", "block11"),
        ("block14", "block14"),
    ]:
        assert Ablation.zero_channel(map_name, 0).changed_blocks == (block,)


@pytest.mark.parametrize("block", ["block2", "block13"])
def test_dropping_a_conv_residual_reports_every_block_and_its_map(model, x, block):
    result = ablate(model, x, Ablation.drop_residual(block), size=SIZE)
    assert list(result.block_change) == list(BLOCKS)
    assert result.watched == block and f"{block}_residual" not in result.map_change
    assert result.block_change[block] > 0
    assert result.original_map.shape == result.ablated_map.shape
