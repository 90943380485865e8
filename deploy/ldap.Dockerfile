# A demonstration OpenLDAP holding Northwind's directory (examples/directory),
# for deploy/compose.yaml. Not for production: the admin password is the
# example's. Debian's slapd, the same as the test suite runs.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slapd ldap-utils \
 && rm -rf /var/lib/apt/lists/*
COPY examples/directory /opt/northwind
RUN useradd --system --home /var/lib/northwind northwind \
 && mkdir -p /var/lib/northwind && chown northwind /var/lib/northwind
USER northwind
ENV SLAPD_DIR=/var/lib/northwind SLAPD_PORT=3890 SLAPD_HOST=0.0.0.0
EXPOSE 3890
CMD ["/opt/northwind/start-slapd.sh"]
