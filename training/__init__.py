"""Data preparation and training for spectrodiff (inference lives in the `spectrodiff` package)."""
