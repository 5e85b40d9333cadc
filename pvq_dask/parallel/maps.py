"""Metric maps of every analysed frame, written to ``store.zarr/maps``."""

import numpy as np

__all__ = ["build_maps"]


def build_maps(store_path, config):
    """Rasterise each frame's octahedra and cells onto one nm grid and store the Dataset.

    Frames without a network get all-NaN maps (and stay not-done for ``maps``).
    """
    from pvq_dask.kernels.maps import map_grid, metric_maps
    from pvq_dask.store import ResultStore
    from pvq_dask.store.maps import maps_to_dataset

    store = ResultStore.open(store_path, mode="r+")
    ps, shape = store.pixel_size_nm, store.shape
    done = store.done("network")
    octs_all = store.read_table("octahedra")
    cells_all = store.read_table("cells")
    u, v = map_grid(shape, pixel_size_nm=ps, step_nm=config.map_step_nm)
    per_frame, ok = [], []
    for t in range(store.n_frames):
        octs = octs_all[octs_all["frame"] == t] if len(octs_all) else octs_all
        cells = cells_all[cells_all["frame"] == t] if len(cells_all) else None
        usable = (octs["region"] != "edge_excluded").sum() if len(octs) else 0
        if done[t] and usable >= 2:
            per_frame.append(metric_maps(octs, cells, pixel_size_nm=ps, shape=shape,
                                         step_nm=config.map_step_nm))
            ok.append(t)
        else:
            per_frame.append({"u_nm": u, "v_nm": v})
    ds = maps_to_dataset(per_frame, t=np.arange(store.n_frames),
                         attrs={"shell_width_uc": int(config.shell_width_uc)})
    store.write_maps(ds)
    for t in ok:
        store.set_done("maps", t)
    return ds
