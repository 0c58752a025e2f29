#!/usr/bin/env bash
# Exact-mode epochs on the CPU backend and on CUDA, same machine, same run, for machines without
# Python (the GPU machines): N mws-node processes on loopback, each with its own random model of
# PARAMS f32 parameters, join through one seed; the clock runs from the launch until every
# node's /status reports a completed epoch (every node then holds the exact mean, bit for bit;
# scripts/bench_agreement.py checks that against numpy where Python is available).
#   scripts/bench_device.sh BUILD_DIR [NODES...]      (PARAMS=10000000 by default)
set -euo pipefail
build=${1:?usage: scripts/bench_device.sh BUILD_DIR [NODES...]}
shift
node_counts=("${@:-4 8}")
params=${PARAMS:-10000000}
bin="$build/apps/mws-node/mws-node"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

epochs_of() {  # the epochs_completed field of a node's status, or -1
  local s
  s=$("$bin" status --http "127.0.0.1:$1" 2>/dev/null) || { echo -1; return; }
  sed -n 's/.*"epochs_completed":\([0-9]*\).*/\1/p' <<<"$s"
}

run_mesh() {  # run_mesh DEVICE NODES -> prints seconds to a completed epoch everywhere
  local device=$1 n=$2 base=$((20000 + RANDOM % 20000)) pids=() start
  start=$(date +%s.%N)
  for ((i = 0; i < n; i++)); do
    local seed_args=()
    ((i > 0)) && seed_args=(--seed "127.0.0.1:$base")
    "$bin" run --key "$work/key-$i" --random-init "$params" --init-seed $((i + 1)) \
      --listen "127.0.0.1:$((base + 2 * i))" --http "127.0.0.1:$((base + 2 * i + 1))" \
      --algorithm exact --epoch-s 1 --device "$device" --log-level error "${seed_args[@]}" \
      2>>"$work/log-$device-$n" &
    pids+=($!)
  done
  local done_at=""
  for ((tries = 0; tries < 6000; tries++)); do
    local all=1 p
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { all=2; break; }; done
    ((all == 2)) && break  # a node exited: its log says why
    for ((i = 0; i < n; i++)); do
      (($(epochs_of $((base + 2 * i + 1))) >= 1)) || { all=0; break; }
    done
    if ((all)); then done_at=$(date +%s.%N); break; fi
    sleep 0.05
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  if [[ -z "$done_at" ]]; then echo "none ($(tail -n 1 "$work/log-$device-$n" 2>/dev/null))"; else awk "BEGIN { printf \"%.2f\", $done_at - $start }"; fi
}

for n in ${node_counts[*]}; do
  cpu=$(run_mesh cpu "$n")
  cuda=$(run_mesh cuda "$n")
  echo "$n nodes, $params f32 params, exact mode: cpu backend $cpu s, cuda backend $cuda s"
done
