"""Vendor formats through rosettasciio: signal choice by name and axis calibration."""

import importlib
import warnings

import numpy as np

from pvq_dask.store._errors import input_error
from pvq_dask.store._units import ReciprocalUnitError, UncalibratedError, scale_to_nm
from pvq_dask.store._vendor import vendor_subset

__all__ = ["RSCIIO_SUFFIXES", "read_rsciio"]

#: File suffix -> rosettasciio plugin module.
RSCIIO_SUFFIXES = {
    ".emd": "emd", ".dm3": "digitalmicrograph", ".dm4": "digitalmicrograph", ".mrc": "mrc",
    ".ser": "tia", ".emi": "tia", ".hspy": "hspy", ".hdf5": "hspy",
}
#: Default signal preference (case-insensitive titles) when ``signal`` is not given.
_PREFERRED = ("idpc", "haadf")
#: Relative x/y pixel-size difference above which pixels count as anisotropic.
_ANISOTROPY_TOL = 0.01


def _title(sig, index):
    title = (sig.get("metadata") or {}).get("General", {}).get("title")
    return str(title) if title not in (None, "") else f"signal{index}"


def _signal_axes(sig):
    return [a for a in sig["axes"] if not a.get("navigate", False)]


def _is_image(sig):
    nav = [a for a in sig["axes"] if a.get("navigate", False)]
    return len(_signal_axes(sig)) == 2 and len(nav) <= 1


def _choose(path, signals, signal):
    titles = [_title(s, i) for i, s in enumerate(signals)]
    listing = ", ".join(repr(t) for t in titles)
    if signal is not None:
        for sig, title in zip(signals, titles):
            if title.lower() == str(signal).lower():
                if not _is_image(sig):
                    shape = np.shape(sig["data"])
                    raise input_error(path, f"signal {title!r} is not an image or image stack "
                                            f"(shape {shape}); available: {listing}")
                return sig, title
        raise input_error(path, f"no signal named {signal!r}; available: {listing}")
    images = [(s, t) for s, t in zip(signals, titles)
              if _is_image(s) and not np.iscomplexobj(s["data"])]
    if not images:
        raise input_error(path, f"no 2-D image among its signals ({listing})")
    for want in _PREFERRED:
        for sig, title in images:
            if title.lower() == want:
                return sig, title
    return images[0]


def _pixel_size(path, sig):
    y_ax, x_ax = _signal_axes(sig)[-2:]
    sizes = []
    for ax in (y_ax, x_ax):
        try:
            sizes.append(scale_to_nm(ax.get("scale", 1.0), ax.get("units")))
        except UncalibratedError as exc:
            raise input_error(path, f"{exc}; pass pixel_size_nm (--pixel-size-nm)") from exc
        except ReciprocalUnitError as exc:
            raise input_error(path, f"{exc} (a diffraction pattern?); pass pixel_size_nm "
                                    "(--pixel-size-nm) if it really is an image") from exc
        except ValueError as exc:
            raise input_error(path, f"{exc}; pass pixel_size_nm (--pixel-size-nm)") from exc
    y_nm, x_nm = sizes
    if abs(y_nm - x_nm) > _ANISOTROPY_TOL * max(y_nm, x_nm):
        raise input_error(path, f"anisotropic pixels (y {y_nm:.6g} nm, x {x_nm:.6g} nm); "
                                "resample to square pixels or pass pixel_size_nm to override")
    return 0.5 * (y_nm + x_nm), {"scale": [y_ax.get("scale"), x_ax.get("scale")],
                                 "units": [str(y_ax.get("units")), str(x_ax.get("units"))]}


def read_rsciio(path, suffix, *, signal=None, pixel_size_nm=None):
    """``(data, pixel_size_nm, reader, signal_title, metadata)`` from a vendor file."""
    plugin = RSCIIO_SUFFIXES[suffix]
    try:
        module = importlib.import_module(f"rsciio.{plugin}")
    except ImportError as exc:
        raise input_error(path, f"reading {suffix} files needs rosettasciio with h5py "
                                f"(pip install 'pvq_dask[io]'): {exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signals = module.file_reader(str(path))
    except Exception as exc:  # noqa: BLE001 - vendor readers raise anything on bad files
        raise input_error(path, f"rosettasciio.{plugin} could not read it "
                                f"({type(exc).__name__}: {exc})") from exc
    if not signals:
        raise input_error(path, "the file holds no signal")
    sig, title = _choose(path, signals, signal)
    data = np.asarray(sig["data"])
    if np.iscomplexobj(data):
        raise input_error(path, f"signal {title!r} is complex-valued (e.g. a DPC vector field); "
                                "choose a real image such as iDPC or HAADF with signal=")
    meta = vendor_subset(plugin, sig.get("metadata"), sig.get("original_metadata"))
    meta["signal_titles"] = [_title(s, i) for i, s in enumerate(signals)]
    try:
        file_size, calib = _pixel_size(path, sig)
        meta["calibration"] = {**calib, "pixel_size_nm": file_size}
    except ValueError:
        if pixel_size_nm is None:
            raise
        file_size = None
    size = file_size if pixel_size_nm is None else pixel_size_nm
    return data, size, f"rsciio.{plugin}", title, meta
