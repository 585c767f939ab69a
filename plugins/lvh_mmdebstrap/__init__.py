"""lvh.rootfs driver ``mmdebstrap``: a Debian root filesystem from a mirror."""

from loguru import logger as _logger

_logger.disable(__name__)  # a library stays quiet; the lvh CLI enables its plugins' logs
