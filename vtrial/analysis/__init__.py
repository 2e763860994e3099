"""Layer 1, analysis: numpy, pandas and matplotlib only (no JAX solves, no files).

- `summaries`: per-arm summaries (streaming), endpoint tables;
- `quantiles`: the mergeable quantile sketch for populations too large to keep;
- `report`: figures (returned, never saved here).
"""
