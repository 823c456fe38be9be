"""What runs on a simulated pair to judge the procedures: the nemesis (many
incident cycles under random faults) and its independent checker."""
