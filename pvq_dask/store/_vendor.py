"""Provenance subset of vendor metadata (Velox, Berkeley EMD, DigitalMicrograph, TIA, MRC).

Only a few acquisition facts are kept (microscope, voltage, detector, dwell time,
magnification, date); the full vendor tree stays in the input file.
"""

import datetime as _dt

from pvq_dask.store.provenance import to_jsonable

__all__ = ["vendor_subset"]


def _get(tree, *keys):
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _num(value, factor=1.0):
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        out = float(str(value).strip().rstrip("xX").strip()) * factor
    except ValueError:
        return None
    return out


def _text(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip().strip("\u2028").strip()
    return text or None


def _velox(om):
    out = {}
    maker, cls = _text(_get(om, "Instrument", "Manufacturer")), _text(
        _get(om, "Instrument", "InstrumentClass"))
    out["microscope"] = " ".join(v for v in (maker, cls) if v) or None
    out["instrument_id"] = _text(_get(om, "Instrument", "InstrumentId"))
    out["software"] = _text(_get(om, "Instrument", "ControlSoftwareVersion"))
    out["voltage_kV"] = _num(_get(om, "Optics", "AccelerationVoltage"), 1e-3)
    out["magnification"] = _num(_get(om, "CustomProperties", "StemMagnification", "value"))
    out["dwell_time_s"] = _num(_get(om, "Scan", "DwellTime"))
    out["frame_time_s"] = _num(_get(om, "Scan", "FrameTime"))
    out["camera_length_m"] = _num(_get(om, "Optics", "CameraLength"))
    out["convergence_mrad"] = _num(_get(om, "Optics", "BeamConvergence"), 1e3)
    out["beam_current_A"] = _num(_get(om, "Optics", "LastMeasuredScreenCurrent"))
    out["detector"] = _text(_get(om, "BinaryResult", "Detector"))
    lo = _num(_get(om, "DetectorMetadata", "CollectionAngleRange", "begin"), 1e3)
    hi = _num(_get(om, "DetectorMetadata", "CollectionAngleRange", "end"), 1e3)
    if lo is not None and hi is not None:
        out["collection_angles_mrad"] = [lo, hi]
    epoch = _num(_get(om, "Acquisition", "AcquisitionStartDatetime", "DateTime"))
    if epoch:
        out["acquired_utc"] = _dt.datetime.fromtimestamp(epoch, _dt.UTC).isoformat()
    return out


def _berkeley(om):
    mic = om.get("microscope", {})
    return {
        "microscope": _text(mic.get("name")),
        "voltage_kV": _num(mic.get("high tension"), 1e-3),
        "magnification": _num(mic.get("magnification")),
        "dwell_time_s": _num(mic.get("dwell time")),
        "camera_length_m": _num(mic.get("camera length")),
        "convergence_mrad": _num(mic.get("convergence angle"), 1e3),
        "sample": _text(_get(om, "sample", "sample name")),
    }


def _dm_image_tags(om, title):
    groups = _get(om, "ImageList") or {}
    tagged = [g for g in groups.values() if isinstance(g, dict) and "ImageTags" in g]
    for g in tagged:
        if title is not None and _text(g.get("Name")) == title:
            return g["ImageTags"]
    return tagged[-1]["ImageTags"] if tagged else {}


def _dm(om, title):
    tags = _dm_image_tags(om, title)
    info = tags.get("Microscope Info", {})
    name = _text(info.get("Name")) or _text(_get(tags, "Session Info", "Microscope"))
    scan = tags.get("DigiScan", {})
    detector = _text(_get(tags, "QuickSaved", "Temp-Tags", "Detector"))
    date = _text(_get(tags, "DataBar", "Acquisition Date"))
    time = _text(_get(tags, "DataBar", "Acquisition Time"))
    return {
        "microscope": None if name in (None, "Unknown", "[]") else name,
        "voltage_kV": _num(info.get("Voltage"), 1e-3),
        "magnification": _num(info.get("Indicated Magnification")),
        "mode": _text(info.get("Operation Mode")),
        "dwell_time_s": _num(scan.get("Sample Time"), 1e-6),
        "detector": detector,
        "acquired": " ".join(v for v in (date, time) if v) or _text(scan.get("TimeStamp")),
        "software": _text(_get(tags, "GMS Version", "Saved")),
    }


def _tia(om):
    desc = _get(om, "ObjectInfo", "ExperimentalDescription") or {}
    acq = _get(om, "ObjectInfo", "AcquireInfo") or {}
    return {
        "microscope": _text(desc.get("Microscope")),
        "voltage_kV": _num(desc.get("High tension_kV")),
        "magnification": _num(desc.get("Magnification_x")),
        "camera_length_m": _num(desc.get("Camera length_m")),
        "mode": _text(desc.get("Mode")),
        "dwell_time_s": _num(acq.get("DwellTimePath")),
        "frame_time_s": _num(acq.get("FrameTime")),
        "detector": _text(_get(om, "ObjectInfo", "DetectorName")),
        "acquired": _text(_get(om, "ObjectInfo", "AcquireDate")),
    }


def _mapped(md):
    """The rosettasciio-mapped (HyperSpy) metadata, whatever the format."""
    tem = _get(md, "Acquisition_instrument", "TEM") or {}
    detector = _get(tem, "Detector")
    return {
        "microscope": _text(tem.get("microscope")),
        "voltage_kV": _num(tem.get("beam_energy")),
        "magnification": _num(tem.get("magnification")),
        "camera_length_m": _num(tem.get("camera_length"), 1e-3),
        "convergence_mrad": _num(tem.get("convergence_angle")),
        "dwell_time_s": _num(_get(detector, "dwell_time") if isinstance(detector, dict) else None),
        "detector": _text(detector) if isinstance(detector, str) else None,
        "date": _text(_get(md, "General", "date")),
        "time": _text(_get(md, "General", "time")),
        "title": _text(_get(md, "General", "title")),
        "original_filename": _text(_get(md, "General", "original_filename")),
    }


def vendor_subset(fmt, metadata=None, original_metadata=None):
    """Acquisition facts from a rosettasciio signal's metadata trees, JSON-serialisable.

    Parameters
    ----------
    fmt : str
        Reader name (``'emd'``, ``'digitalmicrograph'``, ``'tia'``, ``'mrc'``, ...).
    metadata, original_metadata : dict
        The signal's mapped and original metadata.

    Returns
    -------
    dict
        Only the keys found (e.g. ``microscope``, ``voltage_kV``, ``detector``,
        ``dwell_time_s``, ``magnification``, ``date``), plus ``format``.

    Examples
    --------
    >>> om = {"Optics": {"AccelerationVoltage": "300000"}, "Instrument": {"InstrumentClass":
    ...       "Titan"}, "Scan": {"DwellTime": "2.5e-06"}}
    >>> vendor_subset("emd", {}, om)
    {'microscope': 'Titan', 'voltage_kV': 300.0, 'dwell_time_s': 2.5e-06, 'format': 'emd'}
    """
    md, om = metadata or {}, original_metadata or {}
    found = _mapped(md)
    if "Optics" in om or "Instrument" in om:
        specific = _velox(om)
    elif "microscope" in om:
        specific = _berkeley(om)
    elif "ImageList" in om:
        specific = _dm(om, found.get("title"))
    elif "ObjectInfo" in om:
        specific = _tia(om)
    else:
        specific = {}
    for key, value in specific.items():
        if value is not None:
            found[key] = value
    found = {k: v for k, v in found.items() if v is not None}
    found["format"] = fmt
    return to_jsonable(found)
