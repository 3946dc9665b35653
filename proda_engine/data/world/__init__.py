"""The embedded default world: CLM5-like forcing, covariates, hidden truth and site layout, derived
deterministically from the committed 0.5-degree base file ``assets/world/base_world_0p5.nc``.

The base file holds real, attributed observations (GLOBE land fraction, ETOPO5 elevation, ERA5
monthly climate, Koppen-Geiger, MODIS IGBP land cover, Natural Earth countries, Miami-model NPP,
HWSD v1.2 topsoil sand/silt/clay/organic carbon; see ``assets/world/SOURCES.md``). The soil
covariates are the HWSD topsoil (counted fallbacks where HWSD has no soil) and properties derived
from it by documented pedotransfer relations (:func:`derive_soil`). Everything else is *synthetic but
physically shaped*: soil temperature profiles, moisture/oxygen/N scalars, active layers, bedrock,
coarse fragments, and the hidden "true" parameters of a twin experiment. ``docs/world.md`` documents
each recipe and says per variable whether it is real, derived or synthetic.

Files written by :func:`build_world` (data-contract formats, ``_FillValue = 1e36`` on non-land cells,
longitudes -180..180, latitude ascending, written atomically):

* ``forcing.nc``: CLM5-history-like ``TSOI``, ``W_SCALAR``, ``O_SCALAR``, ``FPI_vr`` (time, levsoi,
  lat, lon), ``ALTMAX``, ``ALTMAX_LASTYEAR`` (time, lat, lon), ``nbedrock``, ``CELLSAND``, the four
  annual inputs and ``NPP``.
* ``covariates.nc``: 2-D covariates named as in spec section (m), plus ``continent``, ``cell_area``,
  ``land_fraction``.
* ``truth_parameters.nc``: hidden unit-interval parameters ``theta`` (parameter, lat, lon).
* ``sites.csv`` / ``horizons.csv``: a WoSIS-like site layout (no SOC yet; see
  :func:`make_twin_profiles`).

This package never imports :mod:`proda_engine.physics`; the twin step takes the solver as an argument.

Modules (dependencies point up the list; this ``__init__`` re-exports the public names):

* :mod:`.tables` - constants, lookup tables, named regions, the file layout :class:`WorldPaths`
* :mod:`.base` - the base file, land mask, block coarsening, shared helpers (random streams, noise)
* :mod:`.climate` - day length, PET, bucket soil water, BIO1..BIO19, soil temperature
* :mod:`.soils` - HWSD topsoil with fallbacks and the pedotransfer relations
* :mod:`.covariates` - :class:`Surface` (the typed derived fields), ``covariates.nc``
* :mod:`.forcing` - the CLM5-like forcing of the land cells, ``forcing.nc``
* :mod:`.truth` - the hidden true parameters, ``truth_parameters.nc``
* :mod:`.sites` - the WoSIS-like site and horizon sampler
* :mod:`.build` - options, cache key, encodings, :func:`build_world`
* :mod:`.cache` - :func:`ensure_world` and the cache folder
* :mod:`.twin` - twin observations written as a WoSIS 2019 snapshot

Example
-------
>>> paths = build_world("proda_tiny", region="tiny", n_sites=50)   # doctest: +SKIP
>>> xr.open_dataset(paths.forcing)["TSOI"].dims                          # doctest: +SKIP
('time', 'levsoi', 'lat', 'lon')
"""

from proda_engine.data.world.base import (
    global_npp_total,
    land_mask,
    load_base,
)
from proda_engine.data.world.build import (
    build_world,
    world_options,
)
from proda_engine.data.world.cache import (
    ensure_world,
    world_cache_dir,
)
from proda_engine.data.world.climate import (
    bioclim,
    bucket_wetness,
    day_length_hours,
    thornthwaite_pet,
)
from proda_engine.data.world.covariates import (
    CATEGORICAL_COVARIATES,
    COVARIATE_NAMES,
    Surface,
    derive_surface,
)
from proda_engine.data.world.forcing import (
    derive_forcing_cells,
)
from proda_engine.data.world.sites import (
    sample_sites,
)
from proda_engine.data.world.soils import (
    BD_COMPACTION,
    BD_ORGANIC,
    HISTIC_OC_PCT,
    IGBP_PROFILE,
    MIN_CLASS_CELLS,
    NEAREST_SOIL_DEG,
    OM_PER_OC,
    PEAT_OC_RATIO,
    SOC_PROFILE_SHAPES,
    SOIL_SOURCES,
    TEXTURE_DEPTH_SHIFT,
    adams_bulk_density,
    derive_soil,
    saxton_rawls,
    soc_profile_ratio,
    topsoil_from_base,
    usda_texture_class,
)
from proda_engine.data.world.tables import (
    BASE_WORLD,
    BUILDER_VERSION,
    CONTINENT_WEIGHTS,
    COUNTRIES_JSON,
    DAYS_IN_MONTH,
    DEFAULT_SITES,
    ESA_CLASSES,
    FILL,
    GLOBE_LAND_CELLS,
    GRID_NAME,
    HWSD_FIELDS,
    IGBP_TO_ESA,
    INPUT_SPLIT_BY_IGBP,
    MID_MONTH_DOY,
    REGIONS,
    SOIL_DEPTHS_CM,
    USDA_SUBORDERS,
    USDA_TEXTURE,
    VEG_TAU_YR,
    WRB_GROUPS,
    WorldPaths,
    resolve_region,
)
from proda_engine.data.world.truth import (
    TRUTH_DESIGN,
    truth_theta,
)
from proda_engine.data.world.twin import (
    CHEM_PROPS,
    METHODS,
    PHYS_PROPS,
    PROFILE_COLUMNS_2019,
    PROP_SUFFIXES,
    Solver,
    interpolate_soc,
    lognormal_noise,
    make_twin_profiles,
    write_wosis2019,
)

__all__ = [
    "BASE_WORLD",
    "BD_COMPACTION",
    "BD_ORGANIC",
    "BUILDER_VERSION",
    "CATEGORICAL_COVARIATES",
    "CHEM_PROPS",
    "CONTINENT_WEIGHTS",
    "COUNTRIES_JSON",
    "COVARIATE_NAMES",
    "DAYS_IN_MONTH",
    "DEFAULT_SITES",
    "ESA_CLASSES",
    "FILL",
    "GLOBE_LAND_CELLS",
    "GRID_NAME",
    "HISTIC_OC_PCT",
    "HWSD_FIELDS",
    "IGBP_PROFILE",
    "IGBP_TO_ESA",
    "INPUT_SPLIT_BY_IGBP",
    "METHODS",
    "MID_MONTH_DOY",
    "MIN_CLASS_CELLS",
    "NEAREST_SOIL_DEG",
    "OM_PER_OC",
    "PEAT_OC_RATIO",
    "PHYS_PROPS",
    "PROFILE_COLUMNS_2019",
    "PROP_SUFFIXES",
    "REGIONS",
    "SOC_PROFILE_SHAPES",
    "SOIL_DEPTHS_CM",
    "SOIL_SOURCES",
    "TEXTURE_DEPTH_SHIFT",
    "TRUTH_DESIGN",
    "USDA_SUBORDERS",
    "USDA_TEXTURE",
    "VEG_TAU_YR",
    "WRB_GROUPS",
    "Solver",
    "Surface",
    "WorldPaths",
    "adams_bulk_density",
    "bioclim",
    "bucket_wetness",
    "build_world",
    "day_length_hours",
    "derive_forcing_cells",
    "derive_soil",
    "derive_surface",
    "ensure_world",
    "global_npp_total",
    "interpolate_soc",
    "land_mask",
    "load_base",
    "lognormal_noise",
    "make_twin_profiles",
    "resolve_region",
    "sample_sites",
    "saxton_rawls",
    "soc_profile_ratio",
    "thornthwaite_pet",
    "topsoil_from_base",
    "truth_theta",
    "usda_texture_class",
    "world_cache_dir",
    "world_options",
    "write_wosis2019",
]
