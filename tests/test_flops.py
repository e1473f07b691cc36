"""FLOP counting on a tiny model with a hand-computed answer."""
import torch
from torch import nn

from trainables.backbones import GlobalPoolHead, Stage, StagedModel, freeze
from trainables.train import epoch_flops, step_flops


def tiny(d_in=4, d_hidden=8, d_out=3):
    stages = [(Stage("fc1", d_hidden, 0), nn.Sequential(nn.Linear(d_in, d_hidden), nn.ReLU())),
              (Stage("fc2", d_hidden, 0), nn.Sequential(nn.Linear(d_hidden, d_hidden), nn.ReLU()))]
    return StagedModel("tiny", stages, GlobalPoolHead(d_hidden, d_out, 0.0), 0.0)


def test_flops_by_frozen_depth_match_hand_count():
    # Per image, a Linear(i, o) forward is 2*i*o FLOPs; its backward is 2*i*o for the weight
    # gradient plus 2*i*o for the input gradient (only if something before it needs gradients).
    f1, f2, f3 = 2 * 4 * 8, 2 * 8 * 8, 2 * 8 * 3
    fwd = f1 + f2 + f3
    expected_train = {
        0: fwd + f1 + 2 * f2 + 2 * f3,  # fc1: weight grad only (the input needs no gradient)
        1: fwd + f2 + 2 * f3,           # fc1 frozen: no backward; fc2 weight grad only
        2: fwd + f3,                    # linear probe: only the head's weight gradient
    }
    for depth, want in expected_train.items():
        m = tiny()
        freeze(m, depth)
        train, evaluation = step_flops(m, (4,), 3, torch.device("cpu"))
        assert evaluation == fwd
        assert train == want, (depth, train, want)
    assert epoch_flops(1000, expected_train[2]) == 1000 * expected_train[2]


def test_step_flops_leaves_model_untouched():
    from trainables.backbones import build
    m = build("scratch_cnn", 3)
    freeze(m, 1)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    step_flops(m, (3, 32, 32), 3, torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(p.grad is None for p in m.parameters())


def test_depthwise_conv_backward_counted_per_group():
    """torch's formula counts a grouped conv's weight gradient as dense (C_in x C_out);
    step_flops' FLOP_FORMULAS divide it by groups (MobileNetV2's depthwise convs)."""
    from torch.utils.flop_counter import FlopCounterMode

    from trainables.train import FLOP_FORMULAS

    for groups in (1, 8):
        conv = nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=False)
        x = torch.randn(1, 8, 4, 4, requires_grad=True)
        per_pass = 2 * 16 * 8 * (8 // groups) * 9  # positions x C_out x C_in/groups x k*k, x2
        with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as c:
            conv(x).sum().backward()
        assert c.get_total_flops() == 3 * per_pass, groups  # forward, input grad, weight grad
