"""The HTTP edge of magorder: schemas, dependencies, routes and error responses."""
