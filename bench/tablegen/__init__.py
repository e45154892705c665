"""Learning-curve tables made by real training (``bench/make_table.py``)."""
