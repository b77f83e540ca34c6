"""
Sources: I/O that turns what they watch into model objects in the store.

Each source pushes whole objects (upsert/delete with the object's own
modification time) and offers ``when_synced()``; none touches the route
table: the local file (:mod:`gateway.sources.file`), the configuration
service (:mod:`gateway.sources.cloud`) and Kubernetes Ingress.
"""
