"""Step 1: the organisers' files read strictly, images checked and padded, prepared tables written."""
