"""Thin Prefect flows over the library. Prefect, Dask and the plots are the `flows` extra:
a scoring-only install is told so here, not by a traceback from the first flow's import."""

import importlib.util

from pipeline.core.errors import missing_extra

if importlib.util.find_spec("prefect") is None:
    raise ModuleNotFoundError(str(missing_extra(ModuleNotFoundError(name="prefect"))), name="prefect")
