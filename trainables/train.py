"""Training loops, optimiser/schedule and compute accounting: flat and readable.

Optimiser (``optimizer`` in the spec): SGD with Nesterov momentum by default (Adam/AdamW
available), weight decay on every trainable parameter. Schedule: linear warm-up from 0 for
``warmup_epochs``, then cosine decay to 0 at the end of the stage's *maximum* epochs (so a trial
stopped early saw exactly the schedule a completed one saw up to that point); or constant.
The learning rate is stepped every batch.
"""
from __future__ import annotations

import contextlib
import copy
import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from trainables.data import DeviceData


def describe_device(device: torch.device, threads: int) -> str:
    """The device's name for benchmark and provenance lines: the GPU model, or the CPU model
    (from /proc/cpuinfo) and the torch thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {threads} threads"


def pick_device() -> torch.device:
    """The trial's device, from torch (a fake or absent Ray GPU id must not decide it)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast on GPU; plain fp32 on CPU (CPU bf16 is slower for these convs)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return model.to(device, memory_format=torch.channels_last)
    return model.to(device)


def make_optimizer(model: nn.Module, opt, lr: float) -> torch.optim.Optimizer:
    """Only parameters with requires_grad (set by ``freeze``) are optimised: frozen ones carry
    no optimiser state, so checkpoints stay small."""
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=opt.momentum, nesterov=opt.momentum > 0,
                               weight_decay=opt.weight_decay)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(opt.momentum, 0.999),
                                weight_decay=opt.weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=(opt.momentum, 0.999),
                             weight_decay=opt.weight_decay)


def make_schedule(optimizer, opt, steps_per_epoch: int, max_epochs: int):
    total = max(1, steps_per_epoch * max_epochs)
    warm = int(opt.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if opt.schedule == "constant":
            return 1.0
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(model, data: DeviceData, optimizer, schedule, *, batch_size: int,
                    generator: torch.Generator, label_smoothing: float = 0.0,
                    aug_generator: torch.Generator | None = None) -> float:
    """One pass over ``data`` (shuffled by ``generator``, augmented on the device with draws
    from ``aug_generator``, default ``generator``). Returns the mean loss.

    ``data`` is a ``DeviceData`` (images; ``model`` the whole network) or a
    ``features.FeatureData`` (cached frozen-prefix outputs; ``model`` a ``features.Suffix``).

    The loss is summed on the device and read once at the end: no ``.item()`` per step, so the
    host never waits on the device inside the loop."""
    model.train()
    device = data.device
    loss_sum = torch.zeros((), device=device)
    n = 0
    for xb, yb in data.batches(batch_size, shuffle=True, augment=True, generator=generator,
                               drop_last=True, aug_generator=aug_generator):
        if device.type == "cuda" and xb.dim() == 4:  # cached features may be flat vectors
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            loss = nn.functional.cross_entropy(model(xb), yb, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_sum += loss.detach() * len(yb)
        n += len(yb)
    return (loss_sum / max(1, n)).item()


# Images per inference batch of ``evaluate`` (validation and test passes), by device type. On
# a CPU core small batches stay in cache: scratch_cnn's test pass over 2,500 CIFAR images took
# 6.2 s at 512 and 3.3-4.5 s at 32-64 (1 thread, the project's 2-core CPU); a GPU wants big ones.
# Inference is per image (BatchNorm uses its running statistics), so accuracies do not depend
# on it.
EVAL_BATCH = {"cuda": 512, "cpu": 64}


@torch.no_grad()
def evaluate(model, data: DeviceData, *, batch_size: int | None = None):
    """(accuracy, mean loss, predictions) on ``data`` (DeviceData or FeatureData), unaugmented;
    ``batch_size`` None: ``EVAL_BATCH`` of the data's device type."""
    model.eval()
    device = data.device
    batch_size = batch_size or EVAL_BATCH.get(device.type, EVAL_BATCH["cuda"])
    loss_sum = torch.zeros((), device=device)
    preds = []
    for xb, yb in data.batches(batch_size, shuffle=False, augment=False):
        if device.type == "cuda" and xb.dim() == 4:  # cached features may be flat vectors
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            logits = model(xb)
        loss_sum += nn.functional.cross_entropy(logits.float(), yb, reduction="sum")
        preds.append(logits.argmax(1))
    pred = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=device)
    acc = (pred == data.y).float().mean().item() if len(pred) else float("nan")
    return acc, (loss_sum / max(1, len(data))).item(), pred


def classification_report(pred: torch.Tensor, y: torch.Tensor, class_names: list[str]) -> dict:
    """Accuracy, macro precision/recall/F1, per-class metrics and the confusion matrix
    (rows: true class, columns: predicted)."""
    k = len(class_names)
    cm = torch.bincount(y.cpu() * k + pred.cpu(), minlength=k * k).reshape(k, k).double()
    tp = cm.diag()
    precision = torch.where(cm.sum(0) > 0, tp / cm.sum(0).clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(cm.sum(1) > 0, tp / cm.sum(1).clamp(min=1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                     torch.zeros_like(tp))
    return {
        "acc": (tp.sum() / cm.sum()).item(),
        "precision_macro": precision.mean().item(),
        "recall_macro": recall.mean().item(),
        "f1_macro": f1.mean().item(),
        "confusion": cm.long().tolist(),
        "per_class": {c: {"precision": precision[i].item(), "recall": recall[i].item(),
                          "f1": f1[i].item(), "support": int(cm[i].sum().item())}
                      for i, c in enumerate(class_names)},
    }


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                         transposed, _output_padding, groups, output_mask, out_shape, **_):
    """torch's formula for ``aten.convolution_backward``, with the weight-gradient term divided
    by ``groups``: torch counts it as a dense C_in x C_out convolution, which overstates a
    depthwise conv (MobileNetV2) by its channel count (960x for a 960-channel layer).
    grad_input = conv_transpose(grad_out, weight) is already right (weight holds C_in/groups)."""
    from torch.utils.flop_counter import conv_flop_count

    def t(shape):  # swap batch and channel dims: weight grad as a conv over the batch
        return [shape[1], shape[0], *shape[2:]]

    n = 0
    if output_mask[0]:
        n += conv_flop_count(list(grad_out_shape), list(w_shape), list(out_shape[0]), not transposed)
    if output_mask[1]:
        gw = list(out_shape[1])
        a, b = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        n += conv_flop_count(t(a), t(b), t(gw), transposed=False) // groups
    return n


FLOP_FORMULAS = {torch.ops.aten.convolution_backward: _conv_backward_flops}


def structure_key(model: nn.Module, *extra) -> tuple:
    """What FLOPs depend on: the module classes, every parameter's name, shape and
    requires_grad (frozen depth), and ``extra`` (input shape, classes, device). Not weights."""
    return (type(model).__name__, tuple(type(m).__name__ for m in model.modules()),
            tuple((n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()),
            *extra)


_FLOPS_CACHE: dict = {}  # per worker process: a reused Tune actor probes each structure once


def step_flops(model: nn.Module, input_shape: tuple[int, ...], num_classes: int,
               device: torch.device) -> tuple[float, float]:
    """FLOPs per image of one training step and of one inference, counted by torch's
    ``FlopCounterMode`` on a copy of the real model in its real frozen state.

        train_flops/image = (F_fwd(all stages, head) + F_bwd(trainable part)) / B
        eval_flops/image  = F_fwd / B

    The forward runs through every stage; the backward only where gradients flow (frozen
    stages run under ``no_grad``, so autograd records nothing for them; the first trainable
    stage computes weight gradients but no input gradient). A multiply-add counts as 2 FLOPs;
    FlopCounterMode counts matmuls and convolutions (not BatchNorm, activations or the
    optimiser update, which are a few % for these networks). An epoch of training on N images
    costs ``N * train_flops/image`` (``epoch_flops``).

    Cached per process by ``structure_key`` (FLOPs do not depend on the weights), and run under
    ``torch.random.fork_rng``: probing draws nothing from the caller's random streams, so a trial
    gets the same dropout draws whether its worker probed this structure before or not."""
    key = structure_key(model, tuple(input_shape), num_classes, device.type)
    if key not in _FLOPS_CACHE:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            _FLOPS_CACHE[key] = _probe_flops(model, input_shape, device)
    return _FLOPS_CACHE[key]


def _probe_flops(model: nn.Module, input_shape, device) -> tuple[float, float]:
    probe = copy.deepcopy(model).to(device)  # BN statistics of the real model stay untouched
    probe.train()
    b = 2
    x = torch.randn(b, *input_shape, device=device)
    y = torch.zeros(b, dtype=torch.long, device=device)
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as fwd_counter:
        with torch.no_grad():
            probe.eval()
            probe(x)
    probe.train()
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as train_counter:
        loss = nn.functional.cross_entropy(probe(x), y)
        loss.backward()
    return train_counter.get_total_flops() / b, fwd_counter.get_total_flops() / b


def epoch_flops(images: int, train_flops_per_image: float) -> float:
    """Training FLOPs of one epoch over ``images`` images (validation passes are not counted)."""
    return images * train_flops_per_image
