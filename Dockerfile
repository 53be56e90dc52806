# statusd: multi-stage build, static binary, distroless non-root final image.
#   docker build -t statusbroadcaster/statusd .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/statusd ./cmd/statusd

# distroless/static: no shell, no package manager, CA certificates and
# tzdata only; the nonroot tag runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/statusd /statusd
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/statusd"]
