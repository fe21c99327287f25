#!/bin/sh
# flowgate following its control plane, on one machine (root, DPDK build):
#   cargo build --release --features dpdk && sudo scripts/veth-control-demo.sh
#
# Builds the namespace demo of docs/RUNNING.md (a client namespace, two HTTP servers
# behind a bridge), adds a supervisor in the bridge's namespace and an agent beside each
# server, runs `flowgate run --conf conf/veth-demo.yaml` with a `control:` section, sends
# requests, drains s2 with `flowgate ctl drain s2`, sends requests again, and cleans up.
# Expected: s1 and s2 both answer before the drain, only s1 after it.
set -eu
FG=${FG:-target/release/flowgate}
[ -x "$FG" ] || { echo "build first: cargo build --release --features dpdk" >&2; exit 1; }
W=$(mktemp -d /tmp/fg-control-demo.XXXXXX)
cleanup() {
    set +e
    [ -n "${FGPID:-}" ] && kill -TERM "$FGPID" 2>/dev/null && wait "$FGPID" 2>/dev/null
    pkill -f "http.server 80 --bind 203.0.113.10" 2>/dev/null
    pkill -f "$W/" 2>/dev/null
    for n in fgc fgs1 fgs2 fgsw; do ip netns del $n 2>/dev/null; done
    ip link del fgv-out 2>/dev/null; ip link del fgv-in 2>/dev/null; ip link del fgm 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

for n in fgc fgs1 fgs2 fgsw; do ip netns add $n; done
ip link add fgv-out type veth peer name eth0 netns fgc
ip link add fgv-in type veth peer name uplink netns fgsw
ip -n fgs1 link add eth0 type veth peer name p1 netns fgsw
ip -n fgs2 link add eth0 type veth peer name p2 netns fgsw
ip -n fgsw link add br0 type bridge
for p in uplink p1 p2; do ip -n fgsw link set $p master br0 up; done
ip -n fgsw link set br0 up; ip link set fgv-out up; ip link set fgv-in up
ip -n fgc link set eth0 address 02:00:00:00:00:fe
ip -n fgc addr add 198.51.100.2/24 dev eth0; ip -n fgc link set eth0 up
ip -n fgc route add 203.0.113.10/32 via 198.51.100.1
ip netns exec fgc ethtool -K eth0 tx off tso off >/dev/null
for i in 1 2; do
    ip -n fgs$i link set eth0 address 02:00:00:00:01:0$i
    ip -n fgs$i addr add 10.0.0.1$i/24 dev eth0; ip -n fgs$i link set eth0 up
    ip -n fgs$i link set lo up; ip -n fgs$i addr add 203.0.113.10/32 dev lo
    ip -n fgs$i route add default via 10.0.0.1
    ip netns exec fgs$i ethtool -K eth0 tx off tso off >/dev/null
    mkdir -p "$W/www$i" && echo server-s$i > "$W/www$i/index.html"
    ip netns exec fgs$i python3 -m http.server 80 --bind 203.0.113.10 --directory "$W/www$i" \
        >/dev/null 2>&1 &
done

# Control network: the supervisor in the bridge's namespace, on br0 for the agents and on
# a management veth for flowgate's management core (which runs in this namespace).
ip link add fgm type veth peer name mgmt netns fgsw
ip addr add 192.168.77.1/30 dev fgm; ip link set fgm up
ip -n fgsw addr add 192.168.77.2/30 dev mgmt; ip -n fgsw link set mgmt up
ip -n fgsw addr add 10.0.0.250/24 dev br0
KEY=$W/control.key
python3 -c "import secrets; print(secrets.token_hex(32))" > "$KEY"
printf 'name: sup\nadvert_interval_ms: 500\ndead_interval_ms: 2000\n' > "$W/sup.yaml"
ip netns exec fgsw "$FG" supervisor --conf "$W/sup.yaml" --state "$W/state" \
    --listen 0.0.0.0:7700 --key-file "$KEY" 2>"$W/supervisor.log" &
for i in 1 2; do
    cat > "$W/s$i.yaml" <<EOF
name: s$i
mac: "02:00:00:00:01:0$i"
addrs: [10.0.0.1$i]
load: {source: loadavg}
services:
  - {name: web, vip: 203.0.113.10, proto: tcp, ports: [80]}
EOF
    ip netns exec fgs$i "$FG" agent --conf "$W/s$i.yaml" --supervisor 10.0.0.250:7700 \
        --key-file "$KEY" --control-socket "$W/s$i.sock" 2>"$W/agent-s$i.log" &
done

# The shipped namespace conf, plus a control section.
sed "s|^pipeline: ../pipelines/|pipeline: $PWD/pipelines/|" conf/veth-demo.yaml > "$W/run.yaml"
sed -i "s|json: /tmp/flowgate-veth-stats.json|json: $W/stats.json|" "$W/run.yaml"
printf 'control: { supervisor: "192.168.77.2:7700", key_file: control.key, name: lb1, unheard: down }\n' \
    >> "$W/run.yaml"
"$FG" run --conf "$W/run.yaml" 2>"$W/run.log" &
FGPID=$!

ask() { ip netns exec fgc curl -s --noproxy '*' -m 3 http://203.0.113.10/ || echo "(no answer)"; }
printf 'waiting for the agents to be heard (unheard: down: no answer before)'
i=0
until [ "$(ask)" != "(no answer)" ]; do
    i=$((i + 1)); [ $i -lt 30 ] || { echo; cat "$W/run.log"; exit 1; }
    printf .; sleep 1
done
echo
echo "before the drain:"; for i in $(seq 10); do ask; done | sort | uniq -c
"$FG" ctl --supervisor 192.168.77.2:7700 --key-file "$KEY" drain s2
sleep 1
echo "after ctl drain s2:"; for i in $(seq 10); do ask; done | sort | uniq -c
kill -TERM $FGPID; wait $FGPID || true; FGPID=
echo "flowgate's control-plane log:"; grep '^control' "$W/run.log"
python3 -c "import json,sys; j=json.load(open(sys.argv[1]))['control']; \
print('stats JSON control.servers:', {k: v['state'] for k, v in j['servers'].items()})" "$W/stats.json"
