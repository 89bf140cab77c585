"""Step 2: attribute augmentation (A3R), the zero-shot completion of car captions, and its checks."""
