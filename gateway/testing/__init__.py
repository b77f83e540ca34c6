"""
Shipped test helpers: an in-memory source, a gateway process runner and
small real backends. They are used by our own suite and are tested there.
"""
