"""Research code that no served model uses: the record of what was tried (see README.md)."""
