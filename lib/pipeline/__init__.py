"""Running a pipeline: the notebooks in order into a run (make reproduce), the checks before any long
work, the figures the notebooks show, and the one place that wires training to evaluation."""
