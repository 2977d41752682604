# Two images from one Dockerfile (see the README, "Images"):
#   docker build --target gateway  -t ghcr.io/wardengate/wardengate:0.1.0 .
#   docker build --target operator -t ghcr.io/wardengate/wardengate-operator:0.1.0 .
# `gateway` holds the server (`wardengate`: control plane, gateway or both) and `wgctl` (the
# preStop drain hook); `operator` holds `wardengate-operator`. Both are built in one stage so a
# build of either target reuses the other's compilation. Checked without a container engine by
# operator/tests/images.rs against config/manager and every rendered example.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wardengate -p wardengate-operator

# What both images share: CA certificates and an unprivileged user (uid 65532, as the manifests'
# securityContext says).
FROM debian:bookworm-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --home /var/lib/wardengate --create-home wardengate
USER 65532

FROM runtime AS operator
COPY --from=build /src/target/release/wardengate-operator /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/wardengate-operator"]
CMD ["run"]

# Last, so a plain `docker build .` gives the gateway image.
FROM runtime AS gateway
COPY --from=build /src/target/release/wardengate /src/target/release/wgctl /usr/local/bin/
EXPOSE 8443 8444
ENTRYPOINT ["/usr/local/bin/wardengate"]
CMD ["serve"]
