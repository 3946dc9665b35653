"""Data layer: readers, the data catalog and writers (data contract, ``/docs``).

Readers return xarray/pandas objects with ``units`` attributes and never compute model physics;
this package never imports :mod:`proda_engine.physics`.

Public entry points:

* :func:`read_forcing`, :func:`validate_forcing` - CLM5-history-style forcing -> normalised Dataset
* :func:`read_forcing_series` - a multi-year forcing series -> :class:`ForcingSeries` (one year at a time)
* :func:`read_profiles`, :func:`write_tidy_csv` - WoSIS 2019 / 2023 / tidy CSV -> :class:`ProfileSet`
* :func:`read_covariates` - netCDF / GeoTIFF covariate grids with a ``valid`` mask
* :func:`sample_nearest_valid` - values at the nearest valid grid cell of each site
* :func:`load_catalog` - ``data_catalog.yaml`` -> :class:`Catalog` (``Catalog.open(name)``)
* :func:`read_parameter_file`, :func:`align_theta_to_grid`, :func:`write_parameter_file` - parameter files
* :func:`write_netcdf_atomic`, :func:`write_text_atomic`, :class:`RunFolder` - atomic writers, run folders
"""

from proda_engine.data.catalog import Catalog, Source, cache_dir, load_catalog
from proda_engine.data.covariates import read_covariates
from proda_engine.data.errors import (
    CatalogError,
    CovariateError,
    DataError,
    ForcingError,
    ParameterFileError,
    ProfileError,
)
from proda_engine.data.forcing import (
    DEFAULT_NPP_SPLIT,
    ForcingSeries,
    read_forcing,
    read_forcing_series,
    validate_forcing,
)
from proda_engine.data.parameter_files import (
    align_theta_to_grid,
    parameter_file_attrs,
    read_parameter_file,
    resolve_closure,
    write_parameter_file,
)
from proda_engine.data.profiles import ProfileSet, SkipReport, read_profiles, write_tidy_csv
from proda_engine.data.sampling import normalise_latlon, sample_nearest_valid
from proda_engine.data.writers import RunFolder, atomic_write, sha256_file, write_netcdf_atomic, write_text_atomic

__all__ = [
    "DEFAULT_NPP_SPLIT",
    "Catalog",
    "CatalogError",
    "CovariateError",
    "DataError",
    "ForcingError",
    "ForcingSeries",
    "ParameterFileError",
    "ProfileError",
    "ProfileSet",
    "RunFolder",
    "SkipReport",
    "Source",
    "align_theta_to_grid",
    "atomic_write",
    "cache_dir",
    "load_catalog",
    "normalise_latlon",
    "parameter_file_attrs",
    "read_covariates",
    "read_forcing",
    "read_forcing_series",
    "read_parameter_file",
    "read_profiles",
    "resolve_closure",
    "sample_nearest_valid",
    "sha256_file",
    "validate_forcing",
    "write_netcdf_atomic",
    "write_parameter_file",
    "write_text_atomic",
    "write_tidy_csv",
]
