"""Column names every reader agrees on (a light module: the CLI's parsers import it).

A file with several of these columns is indexed by the first one present, whichever command
reads it (`train`, `retrain`, the registry's pyfunc).
"""
TIME_COLUMNS = ("time", "date", "timestamp", "ds")
