"""Read STEM frames from TIFF, NPY and vendor files into one ``(t, y, x)`` form.

Vendor readers are not safe for distributed reads: read on the client, write the
frames to the result store, and let everything downstream read the store.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pvq_dask.store._errors import InputError, input_error
from pvq_dask.store._rsciio import RSCIIO_SUFFIXES, read_rsciio
from pvq_dask.store._tiff import read_tiff, write_tiff
from pvq_dask.store.provenance import to_jsonable

__all__ = ["Frames", "InputError", "read_image", "write_tiff", "SUPPORTED_SUFFIXES"]

#: File suffixes :func:`read_image` understands.
SUPPORTED_SUFFIXES = (".tif", ".tiff", ".npy", *RSCIIO_SUFFIXES)


@dataclass
class Frames:
    """Frames of one input file.

    Attributes
    ----------
    data : ndarray (t, y, x)
        float32 (float64 when the file holds float64 or wide integers); a single image
        has ``t = 1``.
    pixel_size_nm : float
        Square pixel size in nm (from the file, or the ``pixel_size_nm`` override).
    source : str
        Path of the file.
    reader : str
        ``'tifffile'``, ``'numpy'`` or ``'rsciio.<plugin>'``.
    signal : str or None
        Signal (detector) title for multi-signal vendor files.
    metadata : dict
        JSON-serialisable provenance subset of the vendor metadata, plus
        ``pixel_size_source`` (where the pixel size came from).
    """

    data: np.ndarray
    pixel_size_nm: float
    source: str
    reader: str
    signal: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def n_frames(self):
        return self.data.shape[0]

    @property
    def shape(self):
        """Frame shape ``(y, x)``."""
        return self.data.shape[1:]


def _as_frames(path, data):
    """Validate the array and give it the (t, y, x) float layout."""
    data = np.asanyarray(data)
    if data.dtype == object or data.dtype.kind in "OUSV":
        raise input_error(path, f"holds {data.dtype} data (ragged or non-numeric), "
                                "not a numeric image")
    if np.iscomplexobj(data):
        raise input_error(path, "holds complex values; expected a real-valued image")
    if data.dtype.kind == "b":
        data = data.astype(np.float32)
    if data.ndim < 2:
        raise input_error(path, f"is a {data.ndim}-D array of shape {data.shape}; expected an "
                                "image (y, x) or a stack (t, y, x)")
    if data.ndim > 3:
        raise input_error(path, f"is a {data.ndim}-D array of shape {data.shape}; expected an "
                                "image (y, x) or a stack (t, y, x)")
    if data.ndim == 2:
        data = data[np.newaxis]
    if 0 in data.shape:
        raise input_error(path, f"is empty (shape {data.shape})")
    wide = data.dtype == np.float64 or (data.dtype.kind in "iu" and data.dtype.itemsize > 2)
    data = np.ascontiguousarray(data, dtype=np.float64 if wide else np.float32)
    bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise input_error(path, f"has {bad} non-finite (NaN/inf) pixels")
    return data


def _read_npy(path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise input_error(path, "holds an object (ragged) array, not a numeric "
                                    "image") from exc
        raise input_error(path, f"not a readable .npy file ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise input_error(path, f"not a readable .npy file ({exc})") from exc


def _check_pixel_size(value, source):
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise input_error(source, f"pixel_size_nm {value!r} is not a number") from exc
    if not math.isfinite(value) or value <= 0:
        raise input_error(source, f"pixel_size_nm must be a positive number, got {value}")
    return value


def read_image(path, *, signal=None, pixel_size_nm=None):
    """Read one image or image stack with its pixel size in nm.

    Parameters
    ----------
    path : str or Path
        ``.tif/.tiff`` (tifffile; pixel size from ``pvq synth`` metadata, ImageJ
        metadata, resolution tags or vendor tags), ``.npy`` (no calibration: needs
        ``pixel_size_nm``), or through rosettasciio: Velox/Berkeley ``.emd``,
        ``.dm3/.dm4``, ``.mrc``, ``.ser/.emi``, ``.hspy/.hdf5``.
    signal : str, optional
        Signal (detector) title in multi-signal files, case-insensitive (``'iDPC'``,
        ``'HAADF'``, ``'DF4'`` ...). Default: iDPC if present, else HAADF, else the first
        real 2-D image. Ignored for single-signal formats.
    pixel_size_nm : float, optional
        Overrides the file's calibration (required when the file has none).

    Returns
    -------
    Frames

    Raises
    ------
    InputError
        Missing or unreadable file, unsupported suffix, 1-D/4-D/complex/ragged data,
        non-finite pixels, no calibration without ``pixel_size_nm``, unknown signal.
        The message is one line starting with the path.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.zeros((8, 16)))
    >>> f = read_image(path, pixel_size_nm=0.0168)
    >>> f.data.shape, f.pixel_size_nm, f.reader
    ((1, 8, 16), 0.0168, 'numpy')
    """
    source = str(path)
    path = Path(path)
    override = _check_pixel_size(pixel_size_nm, source)
    if not path.exists():
        raise input_error(source, "no such file")
    if path.is_dir():
        raise input_error(source, "is a directory, not an image file")
    suffix = path.suffix.lower()
    title = None
    if suffix in (".tif", ".tiff"):
        data, size, origin, meta = read_tiff(path)
        reader = "tifffile"
    elif suffix == ".npy":
        data, size, origin, meta, reader = _read_npy(path), None, None, {"format": "npy"}, "numpy"
    elif suffix in RSCIIO_SUFFIXES:
        data, size, reader, title, meta = read_rsciio(path, suffix, signal=signal,
                                                      pixel_size_nm=override)
        origin = "vendor metadata"
    else:
        raise input_error(source, f"unsupported file type {suffix or '(no suffix)'!r}; "
                                  f"supported: {' '.join(SUPPORTED_SUFFIXES)}")
    data = _as_frames(source, data)
    if override is not None:
        if size is not None and override != size:
            meta["file_pixel_size_nm"] = float(size)
        size, origin = override, "pixel_size_nm argument"
    if size is None:
        raise input_error(source, "no pixel-size calibration in the file; pass pixel_size_nm "
                                  "(--pixel-size-nm)")
    meta["pixel_size_source"] = origin
    return Frames(data=data, pixel_size_nm=float(size), source=source, reader=reader,
                  signal=title, metadata=to_jsonable(meta))
