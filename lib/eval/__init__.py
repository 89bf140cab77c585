"""Step 4: retrieval (cached gallery embeddings, top-k), the organisers' metric, the submission."""
