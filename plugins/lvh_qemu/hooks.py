"""Hook plugin of lvh_qemu (``lvh.hooks: lvh-qemu``). The runners call ``lvh_kernel_cmdline`` and
``lvh_qemu_args``; this plugin contributes nothing itself and stays light to import."""
