"""Assemble frames and truth tables from the lattice, renderer and noise model."""

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from pvq_dask.kernels.metrics import cell_metrics, octahedra_metrics
from pvq_dask.kernels.network import OctahedralNetwork
from pvq_dask.kernels.synth._lattice import build_lattice, jitter_arrays
from pvq_dask.kernels.synth._noise import add_noise, dose_per_pixel
from pvq_dask.kernels.synth._outline import make_outline
from pvq_dask.kernels.synth._render import background, column_weights, render_columns

__all__ = ["SynthFrame", "synthesize_frame", "synthesize_series"]

_NOMINAL_DOSE = 220.0  # count scale of noise-free frames


@dataclass
class SynthFrame:
    """One synthetic frame and its exact truth.

    Attributes
    ----------
    image : ndarray (H, W)
        Noisy frame in electron counts (equal to ``clean`` when the dose is None).
    clean : ndarray (H, W)
        Expected counts (the Poisson mean) without any noise.
    atoms, octahedra, cells : pandas.DataFrame
        Truth tables; octahedra and cells are computed from the truth positions with
        the same metrics code that scores fitted columns.
    network : OctahedralNetwork
        Truth connectivity (atom indices are rows of ``atoms``).
    """

    image: np.ndarray
    clean: np.ndarray
    atoms: pd.DataFrame
    octahedra: pd.DataFrame
    cells: pd.DataFrame
    network: OctahedralNetwork
    pixel_size_nm: float
    read_noise_counts: float
    params: object
    frame: int = 0

    @property
    def xy(self):
        return self.atoms[["x_px", "y_px"]].to_numpy()


def _region_means(octs):
    inner = octs["surface_distance_uc"].to_numpy()
    out = {}
    for key, col in (("1", "theta1_deg"), ("2", "theta2_deg")):
        v = octs[col].to_numpy()
        out["c" + key] = v[inner >= 3].mean() if (inner >= 3).any() else np.nan
        out["s" + key] = v[inner < 3].mean() if (inner < 3).any() else np.nan
    return out


def _assemble(params, lat, centre_px, shift_fn):
    """Atom table, network and truth metrics from a lattice dict (nm) and a pixel mapping."""
    ps = params.pixel_size_nm
    n_pb, n_x, n_cs = len(lat["pb_xy"]), len(lat["x_xy"]), len(lat["cs_xy"])
    xy_nm = np.concatenate([lat["pb_xy"], lat["x_xy"], lat["cs_xy"]])
    xy = centre_px + xy_nm / ps
    xy = shift_fn(xy)
    species = np.array(["Pb"] * n_pb + ["X"] * n_x + ["Cs"] * n_cs, dtype=object)
    ij = np.concatenate([lat["pb_ij"].astype(float), lat["x_ij"],
                         lat["cs_ij"].astype(float) + 0.5])
    x_bonds = np.where(lat["x_bonds"] >= 0, lat["x_bonds"] + n_pb, -1)
    net = OctahedralNetwork(pb=np.arange(n_pb), ij=lat["pb_ij"], x_bonds=x_bonds,
                            cs=n_pb + n_x + np.arange(n_cs), cs_ij=lat["cs_ij"])
    return xy, xy_nm, species, ij, net


def _truth_tables(params, xy, net, frame):
    octs = pd.DataFrame(octahedra_metrics(xy, net, pixel_size_nm=params.pixel_size_nm,
                                          shell_width_uc=params.shell_width_uc))
    octs.insert(0, "frame", frame)
    cells = pd.DataFrame(cell_metrics(xy, net, pixel_size_nm=params.pixel_size_nm))
    cells.insert(0, "frame", frame)
    return octs, cells


def _structure(params, rng):
    """Outline, jitter and tilt plateaus (matched so region means equal the request)."""
    sdf = make_outline(params, rng)
    jitter = jitter_arrays(params, rng)
    if params.static_disorder_nm > 0:
        # drawn once per particle (shared by a series), without touching the default stream
        jitter["disorder_seed"] = int(rng.integers(2**63))
    request = {"c1": params.core_theta1_deg, "c2": params.core_theta2_deg,
               "s1": params.shell_theta1_deg, "s2": params.shell_theta2_deg}
    plateau = dict(request)
    if params.match_region_means and params.segregation_center_nm is None:
        for _ in range(6):
            lat = build_lattice(params, sdf, jitter=jitter, plateau=plateau)
            _, _, _, _, net = _assemble(params, lat, np.zeros(2), lambda v: v)
            xy = np.concatenate([lat["pb_xy"], lat["x_xy"], lat["cs_xy"]])
            octs, _ = _truth_tables(replace(params, pixel_size_nm=1.0), xy, net, 0)
            got = _region_means(octs)
            err = {k: request[k] - got[k] for k in request if np.isfinite(got[k])}
            if all(abs(e) < 1e-4 for e in err.values()):
                break
            for k, e in err.items():
                plateau[k] += e
    return sdf, jitter, plateau


def _render_frame(params, sdf, jitter, plateau, rng, frame, shift):
    h, w = params.shape
    ps = params.pixel_size_nm
    delta = params.shell_tilt_rate_deg_per_frame * frame
    lat = build_lattice(params, sdf, jitter=jitter, plateau=plateau,
                        frame_shell_delta_deg=delta)
    centre = np.array([(w - 1) / 2, (h - 1) / 2]) + np.asarray(params.center_offset_nm) / ps
    vx, vy = params.intra_frame_drift_px

    def shift_fn(xy):
        out = xy + shift
        rowfrac = out[:, 1] / h
        out[:, 0] += vx * rowfrac + params.scan_distortion_px * np.sin(
            2 * np.pi * out[:, 1] / params.scan_distortion_period_px)
        out[:, 1] += vy * rowfrac
        return out

    xy, xy_nm, species, ij, net = _assemble(params, lat, centre, shift_fn)
    if "disorder_seed" in jitter:
        xy = xy + np.random.default_rng(jitter["disorder_seed"]).normal(
            0.0, params.static_disorder_nm / ps, xy.shape)
    # Column strength: composition x local thickness (thinner towards the outline).
    depth_nm = np.clip(-sdf(xy_nm), 0.0, None)
    thick = params.edge_thickness_frac + (1 - params.edge_thickness_frac) * (
        1 - np.exp(-depth_nm / params.thickness_decay_nm))
    n_pb, n_x = len(lat["pb_xy"]), len(lat["x_xy"])
    rel = np.empty(len(xy))
    pb_br = np.nanmean(np.where(lat["x_bonds"] >= 0,
                                lat["x_br"][np.maximum(lat["x_bonds"], 0)], np.nan), axis=1)
    rel[:n_pb] = [column_weights(params.contrast, br_fraction=b)["Pb"] for b in pb_br]
    wx = column_weights(params.contrast, br_fraction=0.0)["X"]
    wbr = column_weights(params.contrast, br_fraction=1.0)["X"]
    rel[n_pb:n_pb + n_x] = (1 - lat["x_br"]) * wx + lat["x_br"] * wbr
    rel[n_pb + n_x:] = column_weights(params.contrast, br_fraction=0.0)["Cs"]
    rel *= thick
    sig_px = np.full(len(xy), params.column_sigma_nm / ps)
    sig_px[n_pb:] *= params.light_sigma_factor

    yy, xx = np.mgrid[0:h, 0:w]
    pix_nm = (np.c_[xx.ravel(), yy.ravel()] - centre - shift) * ps
    bg = background(params, sdf(pix_nm).reshape(h, w), rng)
    dose = params.dose_e_per_A2 if params.dose_e_per_A2 is not None else _NOMINAL_DOSE
    scale = dose_per_pixel(dose, ps) * params.gain
    clean = scale * (bg + render_columns((h, w), xy, rel, sig_px))
    image = clean.copy() if params.dose_e_per_A2 is None else add_noise(clean, params, rng)

    margin = 4.5 * sig_px
    inside = ((xy[:, 0] >= margin) & (xy[:, 0] <= w - 1 - margin)
              & (xy[:, 1] >= margin) & (xy[:, 1] <= h - 1 - margin))
    atoms = pd.DataFrame({
        "frame": frame, "atom_id": np.arange(len(xy)), "x_px": xy[:, 0], "y_px": xy[:, 1],
        "x_nm": xy[:, 0] * ps, "y_nm": xy[:, 1] * ps, "species": species,
        "i": ij[:, 0], "j": ij[:, 1], "amplitude": scale * rel, "sigma_px": sig_px,
        "inside": inside,
    })
    octs, cells = _truth_tables(params, xy, net, frame)
    read = params.read_noise_counts if params.dose_e_per_A2 is not None else 0.0
    return SynthFrame(image=image, clean=clean, atoms=atoms, octahedra=octs, cells=cells,
                      network=net, pixel_size_nm=ps, read_noise_counts=read, params=params,
                      frame=frame)


def synthesize_frame(params=None, *, rng=None):
    """One synthetic CsPbX3 dot frame in the [001] Pbnm projection, with exact truth.

    Parameters
    ----------
    params : SynthParams, optional
        Defaults to the paper's CsPbI3 core/shell dot (``SynthParams.preset("coreshell")``).
    rng : numpy.random.Generator or int, optional
        Seeds everything (outline, jitter, carbon texture, noise): same seed, same frame.

    Returns
    -------
    SynthFrame

    Examples
    --------
    >>> from pvq_dask.kernels.synth import SynthParams
    >>> f = synthesize_frame(SynthParams.preset("clean", shape=(256, 256), dot_size_nm=3.0),
    ...                      rng=0)
    >>> f.image.shape, sorted(set(f.atoms.species))
    ((256, 256), ['Cs', 'Pb', 'X'])
    """
    from pvq_dask.kernels.synth._params import SynthParams

    params = SynthParams() if params is None else params
    rng = np.random.default_rng(rng)
    sdf, jitter, plateau = _structure(params, rng)
    return _render_frame(params, sdf, jitter, plateau, rng, 0, np.zeros(2))


def synthesize_series(params=None, *, rng=None):
    """An in-situ series of ``params.n_frames`` frames of one particle.

    The particle drifts between frames (``drift_px_per_frame`` plus a random walk of
    ``drift_jitter_px``) and within each frame (``intra_frame_drift_px`` across the scan);
    its shell tilt changes by ``shell_tilt_rate_deg_per_frame`` per frame. Noise is fresh
    in every frame; the structure (outline, bond jitter) is shared.

    Returns
    -------
    list of SynthFrame
        ``frame`` is set on every truth table.

    Examples
    --------
    >>> from pvq_dask.kernels.synth import SynthParams
    >>> p = SynthParams.preset("series", shape=(192, 192), dot_size_nm=2.0, n_frames=2)
    >>> [f.frame for f in synthesize_series(p, rng=1)]
    [0, 1]
    """
    from pvq_dask.kernels.synth._params import SynthParams

    params = SynthParams.preset("series") if params is None else params
    rng = np.random.default_rng(rng)
    sdf, jitter, plateau = _structure(params, rng)
    frames, shift = [], np.zeros(2)
    for t in range(params.n_frames):
        if t:
            shift = shift + np.asarray(params.drift_px_per_frame) + (
                params.drift_jitter_px * rng.standard_normal(2))
        frames.append(_render_frame(params, sdf, jitter, plateau, rng, t, shift.copy()))
    return frames
