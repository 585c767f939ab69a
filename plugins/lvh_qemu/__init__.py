"""lvh's QEMU runners: ``qemu`` (the pc/q35 machine) and ``microvm`` (QEMU's microvm machine)."""
