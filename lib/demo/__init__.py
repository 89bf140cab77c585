"""The demo profile's stand-ins: a synthetic competition dataset (exact formats) and its foundation model."""
