"""The fast path: ext4 disks made with ``mke2fs -d`` (``lvh.disk: mkfs``) and a VM-free customizer
(``lvh.customize: chroot``) that works on a rootfs tree, or on an ext4 disk image mounted through
a userspace block export — never an appliance VM."""

from loguru import logger as _logger

_logger.disable(__name__)  # a library stays quiet; the lvh CLI enables its plugins' logs
