"""inference: the BN-folded, channels-last copy predicts what the model predicts."""

import torch

from xviz.engine.inference import inference_copy, logits, predict
from xviz.model.xception import Xception


def test_inference_copy_matches_the_model_and_follows_weight_changes():
    torch.manual_seed(0)
    model = Xception(head="kitchenware").eval()
    with torch.no_grad():  # larger BN statistics than the defaults, so folding matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
    # 150: the pools see even sides (72, 36, 18) and an odd one (9).
    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(logits(model, x), expected, rtol=1e-4, atol=1e-5)
    assert inference_copy(model) is inference_copy(model)
    with torch.no_grad():
        model.block5.sepconv1.pointwise.weight.mul_(2)
        changed = model(x)
    torch.testing.assert_close(logits(model, x), changed, rtol=1e-4, atol=1e-5)
    model.block6.use_residual = False
    try:
        with torch.no_grad():
            torch.testing.assert_close(logits(model, x), model(x), rtol=1e-4, atol=1e-5)
    finally:
        model.block6.use_residual = True
    top = predict(model, x[:1], size=150, top_k=3)
    assert [p.index for p in top] == logits(model, x[:1])[0].argsort(descending=True)[:3].tolist()
