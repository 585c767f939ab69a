"""lvh's built-in kernel drivers: ``make`` (build from source), ``prebuilt`` (a given image) and
``debian`` (a Debian ``linux-image-*`` package), plus the kernel config groups."""

from loguru import logger

# Like lvh itself: silent as a library; the CLI enables the loaded plugins' logs.
logger.disable("lvh_kernel")
