"""Upstream's way: disks made with ``guestfish`` (``lvh.disk: guestfish``) and customized with
``virt-customize`` (``lvh.customize: virt-customize``), both through the libguestfs appliance VM."""

from loguru import logger as _logger

_logger.disable(__name__)  # a library stays quiet; the lvh CLI enables its plugins' logs
