"""Rehearsals on a simulated pair: the drill (one whole incident, measured),
the runbook generator (dry runs of each procedure, written out with the text
``guide`` holds for each step), the nemesis (many incident cycles under random
faults) and its independent checker. Nothing here runs on the real hosts."""
