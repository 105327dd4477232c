"""The one builder: configs, a model source and data -> a trainee, for one run or K.

Each member's model is built as its run alone builds it (the global generator seeded with its
seed, the model built, then its init scheme), so member k of a population starts bit-exactly
where run k alone starts. One run trains its own module (single.SingleModule); K runs are stacked
(stacked.StackedModules), or refused as Unstackable where vmap cannot map the module or the runs
resolved to fp16 (a gradient scaler skips a whole step on an overflow: one per run); the caller
then trains them one at a time.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from .. import distributed
from ..config import RunConfig
from ..data import ImageDataset
from ..data.loader import DeviceLoader, Normalization
from ..models.source import ModelSource
from ..optim import build_optimizer, build_scheduler, init_weights
from ..runtime import autocast_dtype, check_compile, use_channels_last
from .batches import MemberBatches
from .loop import Member
from .losses import Loss
from .single import SingleModule
from .stacked import StackedModules, Unstackable
from .trainee import TraineeBase


def build_member(source: ModelSource, cfg: RunConfig, data: ImageDataset, *, alone: bool = True) -> nn.Module:
    """The model run `cfg` starts from, bit for bit (an instance given for one run: itself)."""
    torch.manual_seed(cfg.seed)
    net = source.build(data.input_shape, data.num_classes, cfg.model_overrides(), copy_instance=not alone)
    init_weights(net, cfg.init)
    return net


def build_trainee(cfgs: Sequence[RunConfig], source: ModelSource, data: ImageDataset, norm: Normalization,
                  device: torch.device, loss: Optional[Callable[..., Any]] = None) -> TraineeBase:
    """K >= 1 runs ready to train from their first step (a checkpoint may then move them on)."""
    loss_of = Loss(loss or cfgs[0].loss, [c.label_smoothing for c in cfgs])
    nets = [build_member(source, cfg, data, alone=len(cfgs) == 1) for cfg in cfgs]
    members = [Member(cfg=cfg) for cfg in cfgs]
    dtype = autocast_dtype(cfgs[0].precision, device, nets[0])
    if len(cfgs) == 1:
        return _single(members[0], nets[0], data, norm, device, loss_of, dtype)
    if dtype == torch.float16:  # precision auto may measure fp16 fastest on a GPU without bf16
        raise Unstackable("fp16 runs train one at a time (a gradient scaler per run)")
    cfg = cfgs[0]
    nets = [net.to(device) for net in nets]
    base = DeviceLoader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, augment=cfg.augment,
                        translate=cfg.translate, device=device, norm=norm)
    val = DeviceLoader(data.test if cfg.validates_on_test else data.val, cfg.eval_batch_size, device=device, norm=norm)
    trainee = StackedModules(members, nets, MemberBatches(base, [c.seed for c in cfgs]), val, loss_of, dtype)
    trainee.check()
    return trainee


def _single(member: Member, net: nn.Module, data: ImageDataset, norm: Normalization, device: torch.device,
            loss: Loss, dtype: Optional[torch.dtype]) -> SingleModule:
    cfg, ctx = member.cfg, distributed.context()
    channels_last = cfg.channels_last if cfg.channels_last is not None else use_channels_last(device, net)
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    model = distributed.wrap(net, ctx, device)
    if cfg.compile:
        check_compile(device)  # one line naming the missing compiler, not an Inductor traceback
        model = torch.compile(model)
    loader_args = dict(device=device, norm=norm, channels_last=channels_last)
    train_loader = DeviceLoader(data.train, distributed.local_batch_size(cfg.batch_size, ctx), shuffle=True,
                                seed=cfg.seed, augment=cfg.augment, translate=cfg.translate, rank=ctx.rank,
                                world_size=ctx.world_size, **loader_args)
    # val_size=0: no validation split; the test set is watched each epoch (labelled as such)
    val_loader = DeviceLoader(data.test if cfg.validates_on_test else data.val, cfg.eval_batch_size, **loader_args)
    optimizer = build_optimizer(net, cfg, fused=device.type == "cuda")
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    return SingleModule(member, net, model, optimizer, scheduler, train_loader, val_loader, loss, dtype,
                        grad_scaler(dtype, device))


def grad_scaler(dtype: Optional[torch.dtype], device: torch.device) -> Optional[torch.amp.GradScaler]:
    """fp16 autocast's gradient scaler (float16 gradients underflow without it); None otherwise."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


def test_loader(trainee: TraineeBase, data: ImageDataset) -> DeviceLoader:
    """The test split as the trainee's own loaders hold data (device, normalisation, layout)."""
    first = trainee.training_loader()
    return DeviceLoader(data.test, trainee.members[0].cfg.eval_batch_size, device=first.device, norm=first.norm,
                        channels_last=first.channels_last)
