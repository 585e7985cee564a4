# Builds the worker and producer images (see docker-compose.yml).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/worker ./cmd/worker && \
    CGO_ENABLED=0 go build -trimpath -o /out/producer ./cmd/producer

FROM alpine:3.22
RUN adduser -D -u 10001 chatbuf
COPY --from=build /out/worker /out/producer /usr/local/bin/
USER chatbuf
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/worker"]
