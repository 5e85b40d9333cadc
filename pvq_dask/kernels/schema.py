"""Column names, species codes and units shared by every layer.

The atoms and octahedra tables follow design.md section 4. Kernels return plain
``dict[str, numpy.ndarray]`` or :class:`pandas.DataFrame` objects with exactly these
column names; the store layer writes them to Parquet unchanged.
"""

__all__ = [
    "SPECIES",
    "SPECIES_CODE",
    "ATOM_COLUMNS",
    "OCTAHEDRA_COLUMNS",
    "CELL_COLUMNS",
    "REGIONS",
]

#: Species labels in the public tables, in code order.
SPECIES = ("Pb", "X", "Cs", "unassigned")
#: label -> small integer code used inside kernels.
SPECIES_CODE = {name: code for code, name in enumerate(SPECIES)}

#: Atoms table (one row per fitted column).
ATOM_COLUMNS = (
    "frame", "atom_id", "x_px", "y_px", "x_nm", "y_nm", "sigma_x_px", "sigma_y_px",
    "amplitude", "background", "pos_err_px", "fit_ok", "species", "species_conf",
)

#: Octahedra table (one row per Pb-centred PbX6 octahedron).
OCTAHEDRA_COLUMNS = (
    "frame", "oct_id", "pb_atom_id", "x_px", "y_px",
    "theta1_deg", "theta2_deg", "theta3_deg",
    "theta1_err_deg", "theta2_err_deg", "theta3_err_deg",
    "phi1_deg", "phi2_deg", "phi3_deg", "phi4_deg",
    "sigma1_nm", "sigma2_nm", "sigma3_nm", "sigma4_nm",
    "L1_nm", "L2_nm", "L1_err_nm", "L2_err_nm",
    "rotation_sense", "surface_distance_uc", "region", "i", "j",
)

#: Cells table (one row per Pb at the lower-left corner of a pseudo-cubic cell).
CELL_COLUMNS = (
    "frame", "i", "j", "x_px", "y_px",
    "C1_nm", "C2_nm", "C3_nm", "P1_nm", "P2_nm",
    "C1_err_nm", "C2_err_nm", "P1_err_nm", "P2_err_nm", "a_nm", "b_nm",
)

#: Region labels of an octahedron.
REGIONS = ("core", "shell", "edge_excluded")
