"""lvh's built-in kernel drivers: ``make`` (build from source), ``prebuilt`` (a given image) and
``debian`` (a Debian ``linux-image-*`` package), plus the kernel config groups."""
