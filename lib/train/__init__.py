"""Step 3: fine-tuning (open_clip's recipe): launch (torchrun), loop, data, optimiser and schedule, state."""
