"""`smolrgpt demo`: the main job on built-in data (see runner.py for its phases)."""
