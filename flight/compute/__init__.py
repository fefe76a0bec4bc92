"""On-board compute: models, inference and training jobs on the board."""
