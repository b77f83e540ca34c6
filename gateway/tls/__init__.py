"""
Certificates and the SNI selector, built once per generation (the TLS
termination issue fills this package; until then HTTPS listeners take a
strports ``ssl:`` description with one certificate).
"""
