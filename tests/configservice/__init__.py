"""Tests of the configuration service (``configservice``, ``twistd apimgw-config``)."""
