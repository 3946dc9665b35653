"""PRODA engine: process-guided deep learning of the CLM5 soil-carbon matrix model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("proda-engine")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
