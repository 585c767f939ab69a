"""lvh-plugin-ubuntu: Ubuntu root filesystems for lvh, and a hook plugin for Ubuntu guests.

A third-party lvh plugin, shipped as its own distribution. It registers:

- ``lvh.rootfs: ubuntu`` → :class:`lvh_plugin_ubuntu.rootfs.UbuntuProvider`
- ``lvh.hooks: lvh-plugin-ubuntu`` → :mod:`lvh_plugin_ubuntu.hooks`

It imports only ``lvh.api`` from lvh.
"""

__version__ = "0.1.0"
