"""S2SRED checkpoints: model, optimiser, RED state, step and generator states.

Written atomically (temporary file + rename) so an interrupted write never leaves a broken
checkpoint; a fingerprint of the input, the profile and the seed guards against resuming a
different run.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["fingerprint", "save_checkpoint", "load_checkpoint"]

_VERSION = 1


def fingerprint(image, profile_dict, seed):
    """Hex digest of the normalised input, the settings and the seed."""
    h = hashlib.sha256()
    arr = np.ascontiguousarray(image, dtype=np.float32)
    h.update(str(arr.shape).encode())
    h.update(arr.tobytes())
    h.update(json.dumps(profile_dict, sort_keys=True, default=str).encode())
    h.update(str(seed).encode())
    return h.hexdigest()


def save_checkpoint(path, *, fp, step, done, model, optimizer, red, gens, extra):
    """Write one checkpoint to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "version": _VERSION, "fingerprint": fp, "step": int(step), "done": bool(done),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "red": {k: v.detach().cpu().clone() for k, v in red.items()},
        "gens": {k: g.get_state().clone() for k, g in gens.items()},
        "extra": dict(extra),
    }
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, *, fp):
    """The checkpoint at ``path`` (None if absent); ValueError if it is another run's."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"cannot read S2SRED checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != _VERSION:
        raise ValueError(f"{path} is not an S2SRED checkpoint of version {_VERSION}")
    if state["fingerprint"] != fp:
        raise ValueError(
            f"checkpoint {path} belongs to another run (different image, profile or seed); "
            "delete it or pass another checkpoint_path")
    return state
