"""Length units of vendor calibrations, normalised to nanometres."""

import math

__all__ = ["length_unit_to_nm", "scale_to_nm", "UncalibratedError", "ReciprocalUnitError"]

_NM_PER_UNIT = {
    "m": 1e9, "meter": 1e9, "metre": 1e9,
    "mm": 1e6, "millimeter": 1e6,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "a": 0.1, "\u00e5": 0.1, "\u212b": 0.1, "angstrom": 0.1, "ang": 0.1,
    "pm": 1e-3, "picometer": 1e-3,
}
_UNCALIBRATED = {"", "px", "pixel", "pixels", "<undefined>", "undefined", "none", "1"}
_ANGULAR = {"rad", "mrad", "urad", "µrad", "deg", "degree", "degrees"}


class UncalibratedError(ValueError):
    """The axis has no length calibration (pixel units or none at all)."""


class ReciprocalUnitError(ValueError):
    """The axis is calibrated in reciprocal-space or angular units, not a length."""


def _clean(units):
    if units is None:
        return ""
    if isinstance(units, bytes):
        units = units.decode("utf-8", "replace")
    # Berkeley EMD writes 'n_m'; others pad with spaces.
    return str(units).strip().replace("_", "").replace(" ", "")


def length_unit_to_nm(units):
    """Nanometres per one ``units`` of length.

    Raises :class:`UncalibratedError` for pixel units or none, :class:`ReciprocalUnitError`
    for reciprocal-space (``1/nm``) or angular (``mrad``) units and ``ValueError`` for
    anything else it does not know.

    Examples
    --------
    >>> length_unit_to_nm("pm"), length_unit_to_nm("Å"), length_unit_to_nm("µm")
    (0.001, 0.1, 1000.0)
    >>> length_unit_to_nm("n_m")
    1.0
    """
    u = _clean(units)
    low = u.lower()
    if low in _UNCALIBRATED:
        raise UncalibratedError(f"no length calibration (units {units!r})")
    if low.startswith("1/") or "^-1" in low or "⁻¹" in low or low in _ANGULAR:
        raise ReciprocalUnitError(f"units {units!r} are reciprocal-space or angular, not a length")
    if u in _NM_PER_UNIT:
        return _NM_PER_UNIT[u]
    if low in _NM_PER_UNIT:
        return _NM_PER_UNIT[low]
    raise ValueError(f"unknown length unit {units!r}")


def scale_to_nm(scale, units):
    """Pixel size in nm from an axis ``scale`` in ``units``; errors as :func:`length_unit_to_nm`.

    Examples
    --------
    >>> round(scale_to_nm(99.62, "pm"), 5)
    0.09962
    """
    factor = length_unit_to_nm(units)
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"pixel size {scale!r} {units} is not a positive number")
    return abs(scale) * factor
