# syntax=docker/dockerfile:1
# Build: docker build -t concord .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN cargo build --release --locked --bin concord

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/concord --create-home concord
COPY --from=build /src/target/release/concord /usr/local/bin/concord
COPY config /etc/concord/config
COPY connectors /etc/concord/connectors
COPY mappings /etc/concord/mappings
# config/default.toml is read from the working directory.
WORKDIR /etc/concord
ENV CONCORD__STORE__URL=sqlite:///var/lib/concord/concord.db
USER concord
VOLUME ["/var/lib/concord"]
ENTRYPOINT ["concord"]
CMD ["status"]
