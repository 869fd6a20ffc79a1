"""magorder's test suite."""
