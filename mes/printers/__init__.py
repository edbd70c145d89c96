"""Printer clients behind one async interface, and the normalised printer status."""
