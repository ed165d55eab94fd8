# syntax=docker/dockerfile:1
# One Dockerfile, one image per adapter, chosen by the ADAPTER build argument:
#
#   docker build --build-arg ADAPTER=ocm-source -t ghcr.io/inventory-bridge/ocm-source:0.1.0 .
#
# Why one image per adapter rather than one image with all five binaries: every adapter is
# deployed on its own (its own chart, ServiceAccount and RBAC), so each image carries only the
# binary it runs — smaller, scanned and patched per adapter, and a chart can never start a binary
# its RBAC was not written for. The build is shared: one workspace, one Dockerfile.
#
# Base images are pinned by version; pin them by digest too (@sha256:...) in the release
# pipeline, which can resolve digests (this repository is built offline).

ARG ADAPTER=ocm-source

FROM docker.io/library/rust:1.95.0-bookworm AS build
ARG ADAPTER
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions of Cargo.lock. Only the one binary is built.
RUN case "$ADAPTER" in \
      ocm-source|capi-source|sveltos-sink|argocd-sink|flux-sink) ;; \
      *) echo "ADAPTER must be one of ocm-source capi-source sveltos-sink argocd-sink flux-sink" >&2; exit 1 ;; \
    esac \
 && cargo build --release --locked -p "$ADAPTER" --bin "$ADAPTER" \
 && install -D -m 0555 "target/release/$ADAPTER" /out/adapter

# Distroless "cc": glibc and libgcc only; no shell, no package manager. User 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
ARG ADAPTER
LABEL org.opencontainers.image.source="https://github.com/inventory-bridge/inventory-bridge" \
      org.opencontainers.image.title="inventory-bridge ${ADAPTER}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/adapter /usr/local/bin/adapter
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/adapter"]
