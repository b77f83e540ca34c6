"""Tests for :mod:`gateway.sources.kubernetes` and :mod:`gateway.testing.fakekube`."""
