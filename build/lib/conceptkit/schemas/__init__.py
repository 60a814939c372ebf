"""Table schemas of a conceptkit run: what the data is.

One module per table; each exposes its pyarrow schema (with ``conceptkit.schema`` and ``conceptkit.version``
in the schema metadata). ``conceptkit.schemas.io`` writes tables atomically under a declared schema and reads them back,
refusing files whose schema differs. This package imports nothing else of conceptkit.
"""
