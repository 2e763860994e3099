"""Input and output: configs, datasets, atomic writers."""
