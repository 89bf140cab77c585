"""Study tools beside the pipeline: speed benchmarks against peers, the seed study."""
