"""Hook plugin of lvh_kernel (``lvh.hooks``). The ``lvh kernels`` commands are part of the core
CLI (``lvh.cli.kernels``); nothing cross-cutting is needed here yet."""
