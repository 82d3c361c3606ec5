"""nanokoel: apps."""
