# One image holds both binaries: /manager (the operator, the entrypoint) and
# /relay (run by RelayPool pods with command ["/relay"]). Static binaries on
# an empty base, non-root, so the pods meet the "restricted" Pod Security
# Standard with a read-only root filesystem.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
COPY hack/stubs/ hack/stubs/
RUN go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY internal/ internal/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/manager ./cmd/manager && \
    CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/relay ./cmd/relay

FROM scratch
# CA roots: the relay verifies smarthost and MTA-STS certificates.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/manager /manager
COPY --from=build /out/relay /relay
USER 65532:65532
ENTRYPOINT ["/manager"]
