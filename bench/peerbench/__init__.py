"""Reference HPO libraries on the project's learning-curve tables (``bench/peers.py``)."""
