"""
Sources: I/O that turns what they watch into model objects in the store.

Each source pushes whole objects (upsert/delete with the object's own
modification time) and offers ``when_synced()``; none touches the route
table. Present now: the local file (:mod:`gateway.sources.file`).
Kubernetes Ingress and the configuration service arrive as later modules.
"""
