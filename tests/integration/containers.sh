#!/usr/bin/env bash
# The container runtime with real podman and runc: a pool whose agents each own a
# busybox-static container (image made here with `podman import`); tasks run inside it;
# the pool's limits reach the container; it scales up and back down by draining; a crashed
# agent's container is replaced; so is one failing its health command (run in the
# container); nothing is left behind when the server stops.
source "$(dirname "$0")/lib.sh"
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs --events-backend=file)
IMAGE="localhost/drover-busybox-it:$$"
mkdir -p "$WORK/rootfs/bin"
cp "$(command -v busybox)" "$WORK/rootfs/bin/busybox"
for c in sh cat sleep echo; do ln -s busybox "$WORK/rootfs/bin/$c"; done
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
"${PODMAN[@]}" import "$WORK/rootfs.tar" "$IMAGE" >/dev/null 2>&1
trap 'cleanup; "${PODMAN[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true' EXIT
cat >"$WORK/config.json" <<JSON
{"pools": [{"name": "box", "types": ["boxed"], "runtime": "container", "image": "$IMAGE",
  "container_engine": ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs", "--events-backend=file"],
  "container_run_args": ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"],
  "memory_bytes": 67108864, "pids_limit": 100,
  "command": ["sh", "-c", "p=\$(cat); [ \"\$p\" = load ] && sleep 1; echo \"\$p ran in \$(cat /proc/1/comm)\""],
  "health_command": ["sh", "-c", "test ! -e /sick"], "health_interval_ms": 300, "health_failures": 2,
  "min": 1, "max": 3, "sync_period_ms": 500, "scale_down_stabilization_ms": 1500}]}
JSON
start_server --config "$WORK/config.json"
running() { "${PODMAN[@]}" ps --filter "label=drover.pool_dir=$WORK/data/pools/box" --format '{{.Names}}' | grep -c . || true; }
wait_for() {  # wait_for SECONDS 'EXPRESSION'
  local n=$(($1 * 10))
  for _ in $(seq 1 "$n"); do eval "$2" && return 0; sleep 0.1; done
  return 1
}
check "warm-up: one container runs for min 1" wait_for 30 'test "$(running)" = 1'
check "its agent registered" wait_for 30 '"$DROVER" pools | grep -q "idle 1"'
out=$("$DROVER" submit --type boxed --payload hello --wait 2>&1)
check "a task runs inside the container (its PID 1 is the container's sleep)" contains "$out" "hello ran in sleep"
name=$("${PODMAN[@]}" ps --filter "label=drover.pool_dir=$WORK/data/pools/box" --format '{{.Names}}' | head -1)
check "the memory limit reaches the container" test "$("${PODMAN[@]}" inspect -f '{{.HostConfig.Memory}}' "$name")" = 67108864
check "and the pids limit" test "$("${PODMAN[@]}" inspect -f '{{.HostConfig.PidsLimit}}' "$name")" = 100
# Load: 9 tasks of 1 s on max 3 agents.
ids=$("$DROVER" submit -q --type boxed --count 9 --payload load)
check "under load the pool runs 3 containers" wait_for 30 'test "$(running)" = 3'
check "then drains back to 1" wait_for 40 'test "$(running)" = 1 && "$DROVER" pools | grep -q "draining 0"'
ok=1
for id in $ids; do contains "$("$DROVER" get "$id")" "SUCCEEDED" || ok=0; done
check "all 9 tasks succeeded (no task interrupted by the scale-in)" test "$ok" = 1
# A crash: kill -9 the agent process; its container is removed and a new member starts.
pid=$("$DROVER" pools --json | python3 -c "import json,sys; print(json.load(sys.stdin)['pools'][0]['members'][0]['pid'])")
old=$(running)
kill -9 -- "-$pid"
check "a crashed agent's container is replaced" wait_for 30 '"$DROVER" pools | grep -q "crashed 1" && test "$(running)" = 1 && ! "${PODMAN[@]}" ps --format "{{.Names}}" | grep -qx "$name"'
out=$("$DROVER" submit --type boxed --payload again --wait 2>&1)
check "the new container runs tasks" contains "$out" "again ran in sleep"
# The health command runs inside the container: make it fail there.
name=$("${PODMAN[@]}" ps --filter "label=drover.pool_dir=$WORK/data/pools/box" --format '{{.Names}}' | head -1)
"${PODMAN[@]}" exec "$name" sh -c 'echo >/sick'
check "a container failing its health command is replaced" wait_for 30 '"$DROVER" pools | grep -q "unhealthy 1" && test "$(running)" = 1 && ! "${PODMAN[@]}" ps --format "{{.Names}}" | grep -qx "$name"'
check "and not counted as a crash" contains "$("$DROVER" pools)" "crashed 1 "
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
check "stopping the server removes every container" wait_for 20 'test "$(running)" = 0 && test "$("${PODMAN[@]}" ps -a --filter "label=drover.pool_dir=$WORK/data/pools/box" -q | grep -c . || true)" = 0'
echo '{"pools": [{"name": "p", "types": ["t"], "command": ["true"], "runtime": "container"}]}' >"$WORK/bad.json"
check "a container pool without image or rootfs is refused, naming the field" sh -c \
  "'$DROVER' serve --config '$WORK/bad.json' --data-dir '$WORK/bad' 2>&1 | grep -q 'pools\[0\].image: a container pool needs exactly one of image and rootfs'"
finish
