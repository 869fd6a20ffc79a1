"""The ``magorder`` command line: screening CSV files of candidate compounds.

The screening itself is the core's (`app.core.screening`); this is its arguments and files.
"""
