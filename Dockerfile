# One image for every role: the wardengate server (control plane, gateway, or both), wgctl (used by
# the preStop drain hook) and the operator.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wardengate -p wardengate-operator \
 && install -D -t /out target/release/wardengate target/release/wgctl target/release/wardengate-operator

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 65532 --home /var/lib/wardengate --create-home wardengate
COPY --from=build /out/ /usr/local/bin/
USER 65532
EXPOSE 8443 8444
ENTRYPOINT ["/usr/local/bin/wardengate"]
CMD ["serve", "--role", "all"]
