"""nanokoel: evaluation."""
