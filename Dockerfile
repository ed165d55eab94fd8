# syntax=docker/dockerfile:1
# One Dockerfile, one image per adapter, chosen by the ADAPTER build argument:
#
#   docker build --build-arg ADAPTER=ocm-source -t ghcr.io/inventory-bridge/ocm-source:0.1.0 .
#
# Why one image per adapter rather than one image with all five binaries: every adapter is
# deployed on its own (its own chart, ServiceAccount and RBAC), so each image carries only the
# binary it runs — smaller, scanned and patched per adapter, and a chart can never start a binary
# its RBAC was not written for. The build stays shared: one workspace, one Dockerfile.
#
# Runtime: `scratch` with one static (musl) binary and the CA bundle, user 65532 — nothing else to
# patch or pin. The build image is pinned by version; pin its digest too in the release pipeline.
# Exec credential plugins (sinks) are mounted from a volume and must be static binaries as well.

ARG ADAPTER=ocm-source

FROM docker.io/library/rust:1.95.0-bookworm AS build
ARG ADAPTER
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock. Only the one binary is built.
RUN case "$ADAPTER" in \
      ocm-source|capi-source|sveltos-sink|argocd-sink|flux-sink) ;; \
      *) echo "ADAPTER must be one of ocm-source capi-source sveltos-sink argocd-sink flux-sink" >&2; exit 1 ;; \
    esac \
 && target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$target" -p "$ADAPTER" --bin "$ADAPTER" \
 && install -D -m 0555 "target/$target/release/$ADAPTER" /out/adapter

FROM scratch
ARG ADAPTER
LABEL org.opencontainers.image.source="https://github.com/inventory-bridge/inventory-bridge" \
      org.opencontainers.image.title="inventory-bridge ${ADAPTER}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/adapter /adapter
# Numeric, so Kubernetes can check runAsNonRoot; the charts run as the same user.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/adapter"]
