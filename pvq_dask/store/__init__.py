"""Store layer: readers, the Zarr/Parquet result store, provenance.

Imports kernels only (never the Dask layer or the interfaces).
"""

from pvq_dask.store._errors import InputError
from pvq_dask.store._ingest import ingest_files
from pvq_dask.store.provenance import collect_provenance, file_sha256
from pvq_dask.store.readers import SUPPORTED_SUFFIXES, Frames, read_image, write_tiff
from pvq_dask.store.result import Result, open_result
from pvq_dask.store.zarr_store import IMAGE_GROUPS, STAGES, ResultStore

__all__ = ["InputError", "Frames", "read_image", "write_tiff", "SUPPORTED_SUFFIXES",
           "ResultStore", "STAGES", "IMAGE_GROUPS", "Result", "open_result",
           "collect_provenance", "file_sha256", "ingest_files"]
