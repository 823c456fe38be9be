"""A simulated Antelope pair (MS, BUS, a witness) for tests, drills and rehearsals.

``simsite.pair.SimPair`` creates, starts and breaks one; ``python -m simsite``
does the same by hand; see README.md in this directory. Nothing is imported
here, so that the stand-in programs start fast.
"""
