"""CI tooling: the image pipeline and the QEMU hardware-in-the-loop guest (run as `python -m ci...`)."""
