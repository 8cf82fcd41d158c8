"""ESP32-S3 host-offload: framed serial protocol, host bridge, esptool flashing, firmware project."""
