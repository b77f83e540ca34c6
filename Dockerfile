# apimgw container image: `twistd -n apimgw` as an unprivileged user.
#
#   docker build -t apimgw .
#   docker run --rm -p 8080:8080 -p 127.0.0.1:8082:8082 apimgw
#
# The settings come from the environment (see docs/deployment.md); the twistd
# options after the image name override them, e.g.
#   docker run apimgw --config /apim/local/gateway.yaml
#
# .ci/dockerfile-steps.sh runs the pip and plugin-cache steps below outside a
# container; keep those steps as plain `RUN` lines of `pip ...`/`python ...`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can check it and
# the manifests in k8s/ can name it.
RUN groupadd --system --gid 10001 apim \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/apim --create-home \
        --shell /usr/sbin/nologin apim

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir .

# Build twisted's plugin cache (site-packages/twisted/plugins/dropin.cache)
# now, as root: at run time the user cannot write there, and twistd would
# rescan and warn on every start. Run from / so that the source tree in /src
# is not on sys.path.
WORKDIR /
RUN python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"

# The backup of the cloud configuration (config.backup.path). Created and
# chowned before VOLUME: changes after it would be discarded.
RUN mkdir -p /apim/config && chown 10001:10001 /apim/config
VOLUME ["/apim/config"]

USER 10001:10001
WORKDIR /home/apim

# HTTP, HTTPS, admin (metrics, health, config dump).
EXPOSE 8080 8081 8082

# The admin port listens on every interface of the container, so that probes
# and Prometheus reach it (outside a container the gateway's default is
# loopback only). Keep it off public networks: publish it to the host only
# (docker run -p 127.0.0.1:8082:8082), or give /config a token with
# GATEWAY_ADMIN_TOKEN (see docs/operations.md).
ENV GATEWAY_LISTEN_ADMIN=tcp:8082

ENTRYPOINT ["twistd", "-n", "--pidfile=", "apimgw"]
