"""S2SRED training loop (Self2Self + RED/ADMM) and Monte-Carlo inference, on tensors.

Everything random is drawn from two explicit generators: ``host`` (CPU: crop positions,
flips/rotations) and ``dev`` (on the network's device: Bernoulli masks, dropout), so a run
is a pure function of its seed on CPU and a checkpoint holds all of its state.
"""

import math

import torch

from pvq_dask.kernels.denoise._checkpoint import load_checkpoint, save_checkpoint
from pvq_dask.kernels.denoise.net import S2SNet
from pvq_dask.kernels.denoise.priors import get_prior

__all__ = ["train", "mc_predict", "apply_prior"]

_LOSS_EMA = 0.98  # smoothing of the blind-spot loss used by early stopping


def _transform(t, k, flip):
    t = torch.rot90(t, k, dims=(-2, -1)) if k else t
    return torch.flip(t, dims=(-1,)) if flip else t


def _untransform(t, k, flip):
    t = torch.flip(t, dims=(-1,)) if flip else t
    return torch.rot90(t, -k, dims=(-2, -1)) if k else t


def _mask(shape, keep_prob, gen, device):
    return (torch.rand(shape, generator=gen, device=device) < keep_prob).float()


def _forward(net, y, b, k, flip, prof, device):
    """Network output for visible pixels ``b`` of ``y``, back in y's orientation."""
    yt, bt = _transform(y, k, flip), _transform(b, k, flip)
    if prof.channels_last and device.type == "cuda":
        yt = yt.contiguous(memory_format=torch.channels_last)
        bt = bt.contiguous(memory_format=torch.channels_last)
    if prof.bf16 and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            o = net(yt * bt, bt, generator=net._gen)
    else:
        o = net(yt * bt, bt, generator=net._gen)
    return _untransform(o.float(), k, flip)


def apply_prior(prof, x, sigma):
    """The profile's prior on a (1, 1, H, W) tensor."""
    f = get_prior(prof.prior)
    if prof.prior == "gaussian":
        out = f(x[0, 0], sigma, sigma_px=prof.prior_width_px)
    else:
        out = f(x[0, 0], sigma)
    return out[None, None].to(x.device, x.dtype)


def _crops(y, targets, prof, host):
    """A batch of random crops (or the whole frame) of ``y`` and the matching targets."""
    _, _, h, w = y.shape
    if prof.crop_px is None or (prof.crop_px >= h and prof.crop_px >= w):
        n = prof.batch_size
        return y.expand(n, -1, -1, -1), [t.expand(n, -1, -1, -1) for t in targets], None
    ch, cw = min(prof.crop_px, h), min(prof.crop_px, w)
    top = torch.randint(0, h - ch + 1, (prof.batch_size,), generator=host).tolist()
    left = torch.randint(0, w - cw + 1, (prof.batch_size,), generator=host).tolist()

    def cut(a):
        return torch.cat([a[..., t:t + ch, s:s + cw] for t, s in zip(top, left)])

    return cut(y), [cut(t) for t in targets], (top, left)


@torch.no_grad()
def mc_predict(net, y, prof, gens, device, n_passes, *, moments=True, ref=None):
    """Mean and std of ``n_passes`` stochastic passes (fresh masks, dropout on, the 8
    flips/rotations in turn) over the whole frame ``y`` (1, 1, H, W).

    With ``moments`` also the blind-spot residual: the mean of ``(o - ref)^2`` over the
    pixels each pass did not see (``ref`` defaults to ``y``). Returns ``(mean, std,
    blind_mse)``.
    """
    ref = (y if ref is None else ref).double()
    total = torch.zeros_like(y, dtype=torch.float64)
    total2 = torch.zeros_like(y, dtype=torch.float64)
    blind, n_blind = 0.0, 0.0
    counts = [n_passes // 8 + (t < n_passes % 8) for t in range(8)]
    for t, count in enumerate(counts):
        k, flip = t % 4, t // 4
        while count > 0:
            nb = min(count, prof.mc_batch)
            yb = y.expand(nb, -1, -1, -1)
            b = _mask(yb.shape, prof.keep_prob, gens["dev"], device)
            o = _forward(net, yb, b, k, flip, prof, device).double()
            total += o.sum(0, keepdim=True)
            total2 += (o * o).sum(0, keepdim=True)
            if moments:
                drop = (1.0 - b).double()
                blind += float((drop * (o - ref) ** 2).sum())
                n_blind += float(drop.sum())
            count -= nb
    mean = total / n_passes
    if not moments:
        return mean.float(), None, None
    var = (total2 / n_passes - mean * mean).clamp(min=0.0) * (n_passes / max(n_passes - 1, 1))
    return mean.float(), var.sqrt().float(), blind / max(n_blind, 1.0)


def train(y, prof, *, device, gens, x0, checkpoint_path=None, fp=None, callback=None):
    """Train the S2SRED network on the frame ``y`` (1, 1, H, W) in [0, 1].

    Returns ``(net, red, extra)``: the trained network, the RED state ``{"x", "u", "xbar"}``
    and bookkeeping (steps run, early stop, loss history, resumed step).
    """
    with torch.random.fork_rng(devices=[]):  # weights from the run's seed, not global state
        torch.manual_seed(gens["host"].initial_seed())
        net = S2SNet(y.shape[1], features=prof.features,
                     decoder_features=prof.decoder_features, dropout=prof.dropout).to(device)
    if prof.channels_last and device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    net._gen = gens["dev"]
    opt = torch.optim.Adam(net.parameters(), lr=prof.lr)
    red = {"x": x0.clone(), "u": torch.zeros_like(x0), "xbar": x0.clone()}
    extra = {"step": 0, "done": False, "loss_ema": float("nan"), "best": float("inf"),
             "bad": 0, "stopped_early": False, "history": [], "resumed_from": None}
    state = load_checkpoint(checkpoint_path, fp=fp) if checkpoint_path else None
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        red = {k: v.to(device) for k, v in state["red"].items()}
        for name, g in gens.items():
            g.set_state(state["gens"][name])
        extra = dict(state["extra"])
        extra["resumed_from"] = state["step"]
    step = extra["step"]
    whole = prof.crop_px is None or prof.crop_px >= max(y.shape[-2:])
    while step < prof.n_steps and not extra["done"]:
        targets = [red["x"] - red["u"]] if prof.uses_red else []
        yc, tc, _ = _crops(y, targets, prof, gens["host"])
        k = int(torch.randint(0, 4, (1,), generator=gens["host"]))
        flip = int(torch.randint(0, 2, (1,), generator=gens["host"]))
        b = _mask(yc.shape, prof.keep_prob, gens["dev"], device)
        o = _forward(net, yc, b, k, flip, prof, device)
        drop = 1.0 - b
        loss_s2s = (drop * (o - yc) ** 2).sum() / drop.sum().clamp(min=1.0)
        loss = loss_s2s
        if prof.uses_red:
            wt = drop if prof.coupling == "dropped" else torch.ones_like(drop)
            loss = loss + prof.red_mu * (wt * (o - tc[0]) ** 2).sum() / wt.sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        lval = float(loss_s2s.detach())
        ema = extra["loss_ema"]
        extra["loss_ema"] = lval if math.isnan(ema) else _LOSS_EMA * ema + (1 - _LOSS_EMA) * lval
        if prof.uses_red:
            if whole:
                d = prof.xbar_decay
                red["xbar"] = d * red["xbar"] + (1 - d) * o.detach().mean(0, keepdim=True)
            if step % prof.prior_every == 0:
                if not whole:
                    red["xbar"], _, _ = mc_predict(net, y, prof, gens, device, prof.xbar_passes,
                                                moments=False)
                lam, mu = prof.red_lambda, prof.red_mu
                fx = apply_prior(prof, red["x"], prof.prior_sigma)
                red["x"] = (lam * fx + mu * (red["xbar"] + red["u"])) / (lam + mu)
                red["u"] = red["u"] + red["xbar"] - red["x"]
        if step % prof.es_every == 0:
            extra["history"].append((step, extra["loss_ema"]))
            if prof.es_patience > 0:
                if extra["loss_ema"] < extra["best"] * (1 - prof.es_min_rel):
                    extra["best"], extra["bad"] = extra["loss_ema"], 0
                else:
                    extra["bad"] += 1
                    if extra["bad"] >= prof.es_patience:
                        extra["done"], extra["stopped_early"] = True, True
        extra["step"] = step
        if checkpoint_path and step % prof.checkpoint_every == 0:
            save_checkpoint(checkpoint_path, fp=fp, step=step, done=extra["done"], model=net,
                            optimizer=opt, red=red, gens=gens, extra=extra)
        if callback is not None:
            callback(step, dict(extra))
    extra["done"] = True
    if checkpoint_path:
        save_checkpoint(checkpoint_path, fp=fp, step=step, done=True, model=net,
                        optimizer=opt, red=red, gens=gens, extra=extra)
    return net, red, extra
