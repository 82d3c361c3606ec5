"""nanokoel: data."""
