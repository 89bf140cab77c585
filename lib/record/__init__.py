"""The best-result record: promote a run into best-result-review/, verify it, and the results
page's figures of it."""
