"""nvinfer facts: its config files (``[property]`` / ``[class-attrs-*]``, YAML), the key table that maps
them to Python values, and its crop / letterbox geometry. Pure Python + numpy; imported by everything else."""
