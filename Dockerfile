# castari-gateway as a container: a sidecar or a shared key broker.
#
#   docker build -t castari-gateway .
#   docker run -p 8787:8787 -e CASTARI_API_KEY=cast_... castari-gateway
#
# The key can also come from a mounted secret file: set
# CASTARI_GATEWAY_CONFIG to a config whose upstream.api_key_file points at it.

# --- builder ---------------------------------------------------------------
FROM rust:1-slim-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY sim ./sim
COPY src ./src
COPY config ./config
# Same command CI runs (.ci/run), so CI proves this stage builds.
RUN cargo build --release --locked --bin castari-gateway

# --- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin castari
COPY --from=builder /src/target/release/castari-gateway /usr/local/bin/castari-gateway
COPY config/gateway.toml /etc/castari-gateway/gateway.toml
USER 10001:10001
# Inside a container the gateway must listen on all interfaces; outside it
# defaults to loopback.
ENV CASTARI_GATEWAY_LISTEN=0.0.0.0:8787
EXPOSE 8787
# Slim images have no curl: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["castari-gateway", "healthcheck"]
# Exec form: the gateway is PID 1 and receives SIGTERM directly; it stops
# accepting and drains in-flight requests (server.shutdown_grace_ms).
ENTRYPOINT ["castari-gateway"]
CMD ["serve"]
