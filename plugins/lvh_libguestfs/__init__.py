"""Upstream's way: disks made with ``guestfish`` (``lvh.disk: guestfish``) and customized with
``virt-customize`` (``lvh.customize: virt-customize``), both through the libguestfs appliance VM."""
