"""Readers: round trips, calibrations, real vendor files, and every bad-input case."""

import numpy as np
import pytest
import tifffile

from pvq_dask.kernels.calibration import lattice_calibration_check
from pvq_dask.store import InputError, read_image, write_tiff
from pvq_dask.store._units import length_unit_to_nm

#: Relative agreement of pixel sizes read back from files (float32 TIFF tags, JSON).
PIXEL_SIZE_RTOL = 1e-6
#: Calibration check on an ideal synthetic lattice: relative error of the corrected size.
SYNTH_CALIBRATION_RTOL = 0.002
#: Calibration check on real SrTiO3 HAADF: relative error of the measured cell.
REAL_CALIBRATION_RTOL = 0.01
#: SrTiO3 cell of openncem/16_STOimage.emi in px, measured independently in real space
#: (autocorrelation peaks up to 5th order: 40.05-40.10 px along x, 40.33-40.48 px along y).
#: The README's "(100) = 39.3 px" is one FFT bin coarse (1 bin ~ 4 % at 26 bins).
STO_CELL_PX = 40.25


def _lattice(n, a_px, rot_deg, *, sigma_px=2.0, noise=0.3, rng):
    th = np.deg2rad(rot_deg)
    a1 = a_px * np.array([np.cos(th), np.sin(th)])
    a2 = a_px * np.array([-np.sin(th), np.cos(th)])
    m = int(n / a_px) + 3
    ii, jj = np.mgrid[-m:m + 1, -m:m + 1]
    pts = n / 2 + ii.reshape(-1, 1) * a1 + jj.reshape(-1, 1) * a2
    yy, xx = np.mgrid[0:n, 0:n]
    img = np.zeros((n, n))
    for x, y in pts[(np.abs(pts - n / 2) < n / 2 + 10).all(axis=1)]:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma_px ** 2))
    return img + rng.normal(0.0, noise, img.shape)


# -- round trips ----------------------------------------------------------------------------

def test_tiff_single_round_trip(frame_tiff):
    path, data, ps = frame_tiff
    f = read_image(path)
    assert f.data.shape == (1, *data.shape) and f.data.dtype == np.float32
    np.testing.assert_array_equal(f.data[0], data)
    assert f.pixel_size_nm == pytest.approx(ps, rel=PIXEL_SIZE_RTOL)
    assert f.reader == "tifffile" and f.metadata["pixel_size_source"] == "pvq metadata"


def test_tiff_stack_round_trip(tmp_path, rng):
    data = rng.normal(size=(3, 40, 50)).astype(np.float32)
    write_tiff(tmp_path / "s.tif", data, pixel_size_nm=0.02)
    f = read_image(tmp_path / "s.tif")
    np.testing.assert_array_equal(f.data, data)
    assert f.n_frames == 3 and f.shape == (40, 50)


def test_tiff_resolution_tags_and_imagej(tmp_path):
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    # 0.05 nm/px as centimetre resolution tags, no description.
    tifffile.imwrite(tmp_path / "res.tif", data, resolution=(2e8, 2e8),
                     resolutionunit="CENTIMETER")
    f = read_image(tmp_path / "res.tif")
    assert f.pixel_size_nm == pytest.approx(0.05, rel=PIXEL_SIZE_RTOL)
    assert f.metadata["pixel_size_source"] == "TIFF resolution tags"
    np.testing.assert_array_equal(f.data[0], data)
    # ImageJ: 25 px per nm.
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(25.0, 25.0),
                     metadata={"unit": "nm"})
    g = read_image(tmp_path / "ij.tif")
    assert g.pixel_size_nm == pytest.approx(0.04, rel=PIXEL_SIZE_RTOL)
    assert g.metadata["pixel_size_source"] == "ImageJ metadata"


def test_tiff_default_dpi_is_not_a_calibration(tmp_path):
    tifffile.imwrite(tmp_path / "dpi.tif", np.zeros((16, 16), np.uint8), resolution=(72, 72),
                     resolutionunit="INCH")
    with pytest.raises(InputError, match="no pixel-size calibration"):
        read_image(tmp_path / "dpi.tif")


def test_npy_single_and_stack(tmp_path, rng):
    one = rng.normal(size=(20, 30))
    np.save(tmp_path / "one.npy", one)
    f = read_image(tmp_path / "one.npy", pixel_size_nm=0.0168)
    assert f.data.shape == (1, 20, 30) and f.data.dtype == np.float64
    np.testing.assert_array_equal(f.data[0], one)
    stack = rng.integers(0, 1000, size=(4, 20, 30)).astype(np.uint16)
    np.save(tmp_path / "stack.npy", stack)
    g = read_image(tmp_path / "stack.npy", pixel_size_nm=0.0168)
    assert g.data.shape == (4, 20, 30) and g.data.dtype == np.float32
    np.testing.assert_array_equal(g.data, stack)


def test_pixel_size_override_wins_and_is_recorded(frame_tiff):
    path, _, ps = frame_tiff
    f = read_image(path, pixel_size_nm=0.02)
    assert f.pixel_size_nm == 0.02
    assert f.metadata["file_pixel_size_nm"] == pytest.approx(ps, rel=PIXEL_SIZE_RTOL)


@pytest.mark.parametrize("units, nm", [("pm", 1e-3), ("A", 0.1), ("Å", 0.1), ("nm", 1.0),
                                       ("µm", 1e3), ("um", 1e3), ("n_m", 1.0), ("m", 1e9)])
def test_length_units(units, nm):
    assert length_unit_to_nm(units) == pytest.approx(nm)


@pytest.mark.parametrize("units", ["1/nm", "nm^-1", "mrad"])
def test_reciprocal_units_rejected(units):
    with pytest.raises(ValueError, match="reciprocal"):
        length_unit_to_nm(units)


# -- bad input: one-line InputError naming the file -----------------------------------------

def _bad_inputs(tmp_path):
    np.save(tmp_path / "line.npy", np.zeros(10))
    np.save(tmp_path / "cplx.npy", np.zeros((8, 8), complex))
    np.save(tmp_path / "ragged.npy", np.array([np.zeros(3), np.zeros(4)], dtype=object),
            allow_pickle=True)
    np.save(tmp_path / "nan.npy", np.full((8, 8), np.nan))
    np.save(tmp_path / "four.npy", np.zeros((2, 2, 8, 8)))
    np.save(tmp_path / "nocal.npy", np.zeros((8, 8)))
    (tmp_path / "corrupt.tif").write_bytes(b"II*\x00" + b"garbage" * 20)
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "x.xyz").write_bytes(b"1")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 8, 3), np.uint8))
    return [("missing.tif", 0.1, "no such file"), ("line.npy", 0.1, "1-D array"),
            ("cplx.npy", 0.1, "complex"), ("ragged.npy", 0.1, "ragged"),
            ("nan.npy", 0.1, "non-finite"), ("four.npy", 0.1, "4-D array"),
            ("nocal.npy", None, "no pixel-size calibration"),
            ("corrupt.tif", 0.1, "not a readable TIFF"), ("empty.tif", 0.1, "not a readable TIFF"),
            ("x.xyz", 0.1, "unsupported file type"), ("rgb.tif", 0.1, "colour TIFF"),
            ("nocal.npy", -1.0, "positive")]


def test_bad_inputs_give_one_line_errors(tmp_path):
    for name, ps, reason in _bad_inputs(tmp_path):
        with pytest.raises(InputError) as info:
            read_image(tmp_path / name, pixel_size_nm=ps)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(str(tmp_path / name)), msg
        assert reason in msg, msg


# -- lattice calibration --------------------------------------------------------------------

@pytest.mark.parametrize("a_px, rot_deg, error", [(20.3, 7.0, 0.06), (37.0, -3.0, -0.05),
                                                  (16.7, 30.0, 0.0)])
def test_lattice_calibration_recovers_pixel_size(rng, a_px, rot_deg, error):
    true_ps = 0.01
    img = _lattice(384, a_px, rot_deg, rng=rng)
    cal = lattice_calibration_check(img, true_ps * (1 + error), a_pc_nm=a_px * true_ps)
    assert cal.corrected_pixel_size_nm == pytest.approx(true_ps, rel=SYNTH_CALIBRATION_RTOL)
    assert cal.scale_error == pytest.approx(error, abs=SYNTH_CALIBRATION_RTOL)
    assert cal.rotation_deg == pytest.approx(rot_deg % 90, abs=0.5)


def test_lattice_calibration_on_synthetic_cspbi3():
    from pvq_dask.kernels.synth import SynthParams, synthesize_frame

    f = synthesize_frame(SynthParams.preset("coreshell", shape=(384, 384), dot_size_nm=5.0),
                         rng=1)
    pb = f.atoms[f.atoms.species == "Pb"]
    # Mean Pb-Pb spacing of the truth lattice along i.
    step = pb.groupby("j").apply(lambda g: np.polyfit(g.i, g[["x_px", "y_px"]].to_numpy(), 1)[0],
                                 include_groups=False)
    a_px = float(np.mean([np.hypot(*v) for v in step]))
    cal = lattice_calibration_check(f.image, 0.0168 * 1.05, a_pc_nm=a_px * 0.0168)
    assert cal.corrected_pixel_size_nm == pytest.approx(0.0168, rel=SYNTH_CALIBRATION_RTOL)


def test_lattice_calibration_rejects_no_lattice(rng):
    with pytest.raises(ValueError, match="lattice"):
        lattice_calibration_check(rng.normal(size=(256, 256)), 0.01, a_pc_nm=0.2)


# -- real vendor files (skip without ../shared/data/real) -----------------------------------

@pytest.mark.realdata
def test_velox_multi_signal_choice(real_data):
    path = real_data / "rosettasciio" / "fei_example_dpc_titles.emd"
    f = read_image(path)
    assert f.signal == "iDPC" and f.data.shape == (1, 2, 2)
    assert f.pixel_size_nm == pytest.approx(0.0996199, rel=1e-5)  # stored as pm
    assert f.metadata["voltage_kV"] == 300.0
    assert read_image(path, signal="df4-a").signal == "DF4-A"
    with pytest.raises(InputError, match="complex"):
        read_image(path, signal="DPC")
    with pytest.raises(InputError, match="available: .*'iDPC'"):
        read_image(path, signal="ABF")
    four = read_image(real_data / "openncem" / "STEM HAADF-DF4-DF2-BF Diffraction Micro.emd")
    assert four.signal == "HAADF" and four.pixel_size_nm == pytest.approx(87.3708, rel=1e-5)


@pytest.mark.realdata
@pytest.mark.parametrize("rel, shape, ps_nm, reader", [
    ("temul/example_Se_implanted_MoS2.dm3", (1, 1024, 1024), 0.0126953, "digitalmicrograph"),
    ("rosettasciio/multi_signal.dm3", (1, 512, 512), 0.0177516, "digitalmicrograph"),
    ("openncem/16_STOimage.emi", (1, 1024, 1024), 0.0100127, "tia"),
    ("rosettasciio/03_Scanning Preview.emi", (5, 128, 128), 0.384352, "tia"),
    ("rosettasciio/HAADFscan.mrc", (1, 16, 16), 5.67913, "mrc"),
    ("rosettasciio/fei_example_tem_stack.emd", (2, 3, 3), 0.00817288, "emd"),
    ("openncem/Acquisition_18.emd", (1, 1024, 1024), 0.0122465, "emd"),
    ("rosettasciio/test_loading_image_saved_with_DM.tif", (1, 68, 68), 168.675, None),
])
def test_real_vendor_files(real_data, rel, shape, ps_nm, reader):
    f = read_image(real_data / rel)
    assert f.data.shape == shape
    assert f.pixel_size_nm == pytest.approx(ps_nm, rel=1e-5)
    if reader:
        assert f.reader == f"rsciio.{reader}"


@pytest.mark.realdata
def test_real_metadata_subset(real_data):
    f = read_image(real_data / "openncem" / "16_STOimage.emi")
    assert f.metadata["microscope"].startswith("TitanCubed")
    assert f.metadata["voltage_kV"] == 80.0 and f.metadata["magnification"] == 13.5e6
    import json

    json.dumps(f.metadata)  # JSON-serialisable


@pytest.mark.realdata
def test_real_uncalibrated_and_anisotropic(real_data):
    with pytest.raises(InputError, match="no length calibration"):
        read_image(real_data / "scifireaders" / "SI-Survey_Image.dm3")
    assert read_image(real_data / "scifireaders" / "SI-Survey_Image.dm3",
                      pixel_size_nm=0.018).pixel_size_nm == 0.018
    with pytest.raises(InputError, match="anisotropic"):
        read_image(real_data / "openncem" / "dmTest_float32_nonSquare_diffPixelSize.dm4")


@pytest.mark.realdata
def test_real_srtio3_calibration_check(real_data):
    f = read_image(real_data / "openncem" / "16_STOimage.emi")
    cal = lattice_calibration_check(f.data[0], f.pixel_size_nm, a_pc_nm=0.3905)
    assert cal.spacing_px == pytest.approx(STO_CELL_PX, rel=REAL_CALIBRATION_RTOL)
    assert cal.corrected_pixel_size_nm == pytest.approx(0.3905 / STO_CELL_PX,
                                                        rel=REAL_CALIBRATION_RTOL)
    assert cal.scale_error > 0.02  # the stored calibration is a few per cent high
