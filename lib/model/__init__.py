"""open_clip models: construction from a name and a weights source, checkpoints, devices, encoding."""
