"""lvh: build throw-away Linux VM images and kernels, and boot them fast."""

from loguru import logger as _logger

__version__ = "0.1.0"

# A library stays quiet: only the CLI adds sinks and enables lvh's (and its plugins') logging.
_logger.disable("lvh")
