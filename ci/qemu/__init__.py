"""An emulated aarch64 device: debootstrap rootfs, Debian kernel + initrd, disk image, qemu-system/user.

Every expensive step is cached under paths.cache_root()/"qemu"/<key>, keyed on its inputs.
"""
