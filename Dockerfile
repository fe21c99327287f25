# flowgate on Debian bookworm.
#
#   docker build -t flowgate .
#   docker run --rm flowgate                      # replays the shipped sample capture
#   docker run --rm -v $PWD:/data flowgate replay --pipeline /opt/flowgate/pipelines/web-farm.yaml \
#       --input /data/in.pcap --output /data/out.pcap
#
# Build with the DPDK data plane (feature `dpdk`, DPDK 22.11 LTS from Debian):
#   docker build --build-arg FEATURES=dpdk -t flowgate:dpdk .
# and run it with hugepages and vfio devices passed through, for example:
#   docker run --rm --privileged -v /dev/hugepages:/dev/hugepages -v /sys:/sys \
#       --device /dev/vfio/vfio --device /dev/vfio/<group> flowgate:dpdk run --conf /opt/flowgate/conf/<x>.yaml
# (see docs/RUNNING.md for hugepages and binding the NIC to vfio-pci first). With
# `stats.prometheus` in the conf, an orchestrator's HTTP probe (Kubernetes' httpGet
# liveness/readiness probe) asks GET /healthz on that address: 200 while running with
# every port's link up, 503 and why otherwise (docs/RUNNING.md, "Health").

FROM rust:1-bookworm AS build
ARG FEATURES=""
RUN apt-get update && apt-get install -y --no-install-recommends \
      dpdk-dev libdpdk-dev pkg-config libpcap-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked ${FEATURES:+--features $FEATURES} \
 && cp target/release/flowgate /usr/local/bin/flowgate

FROM debian:bookworm-slim
ARG FEATURES=""
# iproute2: `ss`, which `flowgate agent` reads its services' accept queues with.
RUN apt-get update && apt-get install -y --no-install-recommends \
      $( [ -n "$FEATURES" ] && echo dpdk ) ca-certificates iproute2 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/flowgate /usr/local/bin/flowgate
COPY pipelines /opt/flowgate/pipelines
COPY conf /opt/flowgate/conf
COPY samples /opt/flowgate/samples
WORKDIR /opt/flowgate
ENTRYPOINT ["flowgate"]
CMD ["replay", "--pipeline", "pipelines/web-farm.yaml", "--input", "samples/web-farm.pcap", "--output", "/tmp/out.pcap"]
