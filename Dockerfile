# Builds the worker, producer, gateway and chatbufctl image (see docker-compose.yml).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/worker ./cmd/worker && \
    CGO_ENABLED=0 go build -trimpath -o /out/producer ./cmd/producer && \
    CGO_ENABLED=0 go build -trimpath -o /out/gateway ./cmd/gateway && \
    CGO_ENABLED=0 go build -trimpath -o /out/chatbufctl ./cmd/chatbufctl

FROM alpine:3.22
RUN adduser -D -u 10001 chatbuf
COPY --from=build /out/worker /out/producer /out/gateway /out/chatbufctl /usr/local/bin/
USER chatbuf
EXPOSE 9464 1733
ENTRYPOINT ["/usr/local/bin/worker"]
