"""Figures (matplotlib, Agg backend): drawing kept apart from computing.

Products and the evaluation return Datasets and tables; these functions draw them and write PNG
files through the project's one atomic writer. This package may import :mod:`proda_engine.products`;
products never import it (checked by ``tests/test_architecture.py``), and nothing else in the engine
imports matplotlib.

* :func:`plot_evaluation` - held-out scatter per method and parameter recovery (``proda evaluate``)
* :func:`plot_reference`, :func:`write_reference_figure` - difference maps against a reference SOC map
  (``proda map --reference``)
* :func:`plot_explained_variation` - component control: explained variation against the global stock
* :func:`plot_plus1pct`, :func:`plot_curves`, :func:`write_sensitivity_figures` - marginal sensitivity
  (``proda sensitivity``)
* :func:`save_figure` - save and close a figure atomically
"""

from proda_engine.plot._save import save_figure
from proda_engine.plot.attribution import plot_explained_variation
from proda_engine.plot.evaluation import plot_evaluation
from proda_engine.plot.reference import plot_reference, write_reference_figure
from proda_engine.plot.sensitivity import plot_curves, plot_plus1pct, write_sensitivity_figures

__all__ = [
    "plot_curves",
    "plot_evaluation",
    "plot_explained_variation",
    "plot_plus1pct",
    "plot_reference",
    "save_figure",
    "write_reference_figure",
    "write_sensitivity_figures",
]
