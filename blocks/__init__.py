"""Prefect blocks: the configuration operators edit in the UI."""
from blocks.pair import AntelopePair, AntelopeSite, PairState

__all__ = ["AntelopePair", "AntelopeSite", "PairState"]
