"""The ``lvh`` command line (click). Subcommands are imported lazily, so ``lvh --help`` is fast."""
