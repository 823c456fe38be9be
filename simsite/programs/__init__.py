"""Stand-ins for the Antelope programs the flows run, one module per program.

Each has ``main(argv) -> int`` and is started through a small script in the
site's ``bin/`` (see ``simsite.build``), from whose path it finds its site.
"""
