"""Analytical models of the engine: event counts per descriptor and energy (:mod:`.energy`)."""
