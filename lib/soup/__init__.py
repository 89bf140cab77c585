"""Weight averaging after training: model soups and WiSE-FT (`python -m lib.soup`)."""
