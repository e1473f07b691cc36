import pytest
import torch

from trainables.backbones import (REGISTRY, WeightsUnavailable, backbone_info, build,
                                  count_params, freeze, imagenet_state_dict, load_imagenet)

CASES = [(n, stem) for n, info in REGISTRY.items() for stem in info.stems]

# Expected (channels, spatial size) after each stage for a 32x32 input.
EXPECTED = {
    ("scratch_cnn", "cifar"): [(32, 16), (64, 8), (128, 4), (256, None)],
    ("resnet18", "cifar"): [(64, 32), (64, 32), (128, 16), (256, 8), (512, 4)],
    ("resnet18", "imagenet"): [(64, 8), (64, 8), (128, 4), (256, 2), (512, 1)],
    ("mobilenet_v2", "cifar"): [(16, 32), (24, 32), (32, 16), (64, 8), (96, 8), (160, 4), (1280, 4)],
    ("mobilenet_v2", "imagenet"): [(16, 16), (24, 8), (32, 4), (64, 2), (96, 2), (160, 1), (1280, 1)],
}


@pytest.mark.parametrize("name,stem", CASES)
def test_stage_table_matches_real_shapes_at_32px(name, stem):
    model = build(name, 7, stem).eval()
    assert model.num_stages == REGISTRY[name].num_stages == len(model.stage_table)
    h = torch.randn(2, 3, 32, 32)
    for stage, module, (ch, size) in zip(model.stage_table, model.stages, EXPECTED[(name, stem)]):
        h = module(h)
        assert h.shape[1] == stage.channels == ch
        if size is None:
            assert h.dim() == 2 and stage.reduction == 0
        else:
            assert h.shape[2:] == (size, size) and stage.reduction == 32 // size
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(KeyError, match="valid backbones: scratch_cnn, mobilenet_v2, resnet18"):
        backbone_info("vgg16")
    with pytest.raises(ValueError, match="no stem 'imagenet'"):
        build("scratch_cnn", 3, "imagenet")


@pytest.mark.parametrize("name,stem", CASES)
def test_freeze_every_depth_gradients_flow_only_to_unfrozen(name, stem):
    n = REGISTRY[name].num_stages
    for depth in sorted({0, 1, n // 2, n}):
        model = build(name, 4, stem)
        freeze(model, depth)
        model.train()
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        for i, stage in enumerate(model.stages):
            for p in stage.parameters():
                if i < depth:
                    assert not p.requires_grad and p.grad is None, (name, depth, i)
                else:
                    assert p.requires_grad and p.grad is not None, (name, depth, i)
        assert all(p.grad is not None for p in model.head.parameters())
        trainable, total = count_params(model)
        expected = sum(p.numel() for s in model.stages[depth:] for p in s.parameters()) + \
            sum(p.numel() for p in model.head.parameters())
        assert trainable == expected and total == sum(p.numel() for p in model.parameters())


def test_frozen_batchnorm_keeps_its_statistics():
    model = build("resnet18", 3, "cifar")
    freeze(model, 2)
    model.train()
    frozen_bn = model.stages[0][1]
    live_bn = [m for m in model.stages[2].modules() if isinstance(m, torch.nn.BatchNorm2d)][0]
    before_frozen = frozen_bn.running_mean.clone()
    before_live = live_bn.running_mean.clone()
    model(torch.randn(8, 3, 32, 32) * 3 + 1)
    assert torch.equal(frozen_bn.running_mean, before_frozen) and not frozen_bn.training
    assert not torch.equal(live_bn.running_mean, before_live) and live_bn.training


def test_freeze_rejects_out_of_range_depth():
    model = build("scratch_cnn", 3)
    with pytest.raises(ValueError, match=r"frozen_depth=5 is out of range for scratch_cnn: must be an integer in \[0, 4\]"):
        freeze(model, 5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_imagenet_weights_from_a_local_file(tmp_path, name):
    """The ImageNet path with a weights file the test saves itself (no download here)."""
    from torchvision import models

    ref = getattr(models, name)(weights=None)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_()
    f = tmp_path / f"{name}.pth"
    torch.save(ref.state_dict(), f)
    model = build(name, 5, "imagenet")
    load_imagenet(model, imagenet_state_dict(name, str(f)))
    first_ref = next(iter(ref.parameters()))
    assert torch.equal(next(iter(model.stages[0].parameters())), first_ref)
    # the rest of the network matches too: same outputs before the classifier
    ref.eval(), model.eval()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x).mean((2, 3))
    if name == "resnet18":
        ref.fc = torch.nn.Identity()
        assert torch.allclose(ref(x), feats, atol=1e-4)
    else:
        assert torch.allclose(ref.features(x).mean((2, 3)), feats, atol=1e-4)


def test_imagenet_weights_errors(tmp_path):
    with pytest.raises(WeightsUnavailable, match="not found: .*missing.pth"):
        imagenet_state_dict("resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsUnavailable, match="scratch_cnn.*no ImageNet weights"):
        imagenet_state_dict("scratch_cnn")
    from torchvision import models
    torch.save(models.resnet18(weights=None).state_dict(), tmp_path / "r.pth")
    with pytest.raises(WeightsUnavailable, match="do not fit resnet18"):
        load_imagenet(build("resnet18", 3, "cifar"), imagenet_state_dict("resnet18", str(tmp_path / "r.pth")))
