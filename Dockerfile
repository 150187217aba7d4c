# Multi-stage build of the `gptimage2` binary; used by docker-compose.yml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin gptimage2

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/gptimage2 /usr/local/bin/gptimage2
USER 10001
ENTRYPOINT ["gptimage2"]
CMD ["serve"]
