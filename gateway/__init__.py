"""apimgw: an open, self-hosted API gateway on Twisted."""
