"""Guest-side files of lvh_qemu (the init script of lvh's initramfs)."""
