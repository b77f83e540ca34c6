"""Tests of :mod:`gateway.jwt`."""
