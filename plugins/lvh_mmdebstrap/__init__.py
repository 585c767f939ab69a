"""lvh.rootfs driver ``mmdebstrap``: a Debian root filesystem from a mirror."""
