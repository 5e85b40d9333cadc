"""TIFF reading (tifffile) and the calibration sources TIFF files carry."""

import json
import logging
import warnings

import numpy as np

from pvq_dask.store._errors import input_error
from pvq_dask.store._units import scale_to_nm

__all__ = ["read_tiff", "write_tiff"]

#: Above this a TIFF resolution tag is a print/display default (e.g. 72 dpi), not a
#: microscope calibration.
_MAX_PLAUSIBLE_PIXEL_NM = 1000.0
_MINISWHITE, _MINISBLACK = 0, 1
_NM_PER_RESUNIT = {2: 2.54e7, 3: 1e7, 4: 1e6, 5: 1e3}  # INCH, CENTIMETER, MILLIMETER, MICROMETER


def write_tiff(path, data, *, pixel_size_nm, metadata=None):
    """Write float32 frames ``(y, x)`` or ``(t, y, x)`` with the pixel size stored twice.

    The pixel size goes into tifffile's JSON description (``pixel_size_nm``, read first by
    :func:`pvq_dask.store.read_image`) and into XResolution/ResolutionUnit (centimetre) so
    other programs see the scale too.
    """
    import tifffile

    meta = {"pixel_size_nm": float(pixel_size_nm), "unit": "nm", **(metadata or {})}
    px_per_cm = 1e7 / float(pixel_size_nm)
    tifffile.imwrite(path, np.asarray(data, dtype=np.float32), metadata=meta,
                     photometric="minisblack",
                     resolution=(px_per_cm, px_per_cm), resolutionunit="CENTIMETER")


def _shaped_pixel_size(tif):
    for meta in tif.shaped_metadata or ():
        if isinstance(meta, dict) and "pixel_size_nm" in meta:
            return float(meta["pixel_size_nm"]), "pvq metadata", meta
    return None, None, None


def _resolution_pixel_size(page, unit_nm=None):
    tags = page.tags
    if "XResolution" not in tags:
        return None
    num, den = tags["XResolution"].value
    if not num or not den:
        return None
    px_per_unit = num / den
    if unit_nm is None:
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        unit_nm = _NM_PER_RESUNIT.get(unit)
        if unit_nm is None:
            return None
    size = unit_nm / px_per_unit
    return size if 0 < size < _MAX_PLAUSIBLE_PIXEL_NM else None


def _imagej_pixel_size(tif):
    meta = tif.imagej_metadata
    if not meta or "unit" not in meta:
        return None
    unit = str(meta["unit"]).replace("\\u00B5", "\u00b5")
    try:
        unit_nm = scale_to_nm(1.0, unit)
    except ValueError:
        return None
    return _resolution_pixel_size(tif.pages[0], unit_nm=unit_nm)


def _rsciio_pixel_size(path):
    """Vendor TIFF tags (DigitalMicrograph, FEI, Zeiss...) through rosettasciio, if present."""
    try:
        from rsciio.tiff import file_reader
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = file_reader(str(path))[0]["axes"]
        x = [a for a in axes if not a.get("navigate", False)][-1]
        size = scale_to_nm(x["scale"], x.get("units"))
    except Exception:  # noqa: BLE001 - any failure means "no vendor calibration"
        return None
    return size if size < _MAX_PLAUSIBLE_PIXEL_NM else None


def _description_subset(tif):
    page = tif.pages[0]
    out = {"format": "tiff"}
    for tag, key in (("Software", "software"), ("DateTime", "date"), ("Make", "microscope"),
                     ("Model", "model"), ("Artist", "operator")):
        if tag in page.tags:
            out[key] = str(page.tags[tag].value).strip()[:200]
    return out


def read_tiff(path):
    """``(data, pixel_size_nm or None, calibration_source, metadata)`` of a TIFF file."""
    import tifffile

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # its warnings would break our one-line errors
    try:
        with tifffile.TiffFile(path) as tif:
            if not len(tif.pages) or not tif.series:
                raise input_error(path, "not a readable TIFF file (no image pages)")
            series = tif.series[0]
            photometric = int(tif.pages[0].photometric)
            if photometric not in (_MINISWHITE, _MINISBLACK):
                raise input_error(path, f"colour TIFF (photometric {photometric}, axes "
                                        f"{series.axes!r}); convert it to one grey channel "
                                        "first")
            data = series.asarray()
            meta = _description_subset(tif)
            size, source, shaped = _shaped_pixel_size(tif)
            if shaped is not None:
                meta["pvq"] = {k: v for k, v in shaped.items() if k != "shape"}
            if size is None and (size := _imagej_pixel_size(tif)) is not None:
                source = "ImageJ metadata"
            if size is None and (size := _resolution_pixel_size(tif.pages[0])) is not None:
                source = "TIFF resolution tags"
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError,
            json.JSONDecodeError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(str(path)):
            raise
        raise input_error(path, f"not a readable TIFF file ({type(exc).__name__}: {exc})") from exc
    finally:
        logger.setLevel(level)
    if size is None and (size := _rsciio_pixel_size(path)) is not None:
        source = "vendor TIFF tags (rosettasciio)"
    return data, size, source, meta
