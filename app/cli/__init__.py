"""The ``magorder`` command line: screening CSV files of candidate compounds."""
