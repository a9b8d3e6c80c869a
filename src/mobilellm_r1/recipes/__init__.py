"""Shipped YAML recipes: `data/` (mixtures per phase) and, later, training stages per size."""
