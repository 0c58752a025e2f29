#!/usr/bin/env bash
# Exact-mode epochs on the CPU backend and on CUDA, same machine, same run, for machines without
# Python (the GPU machines): N mws-node processes on loopback, each with its own random model of
# PARAMS f32 parameters, join through one seed. The clock runs from the launch until a status
# poll finds every node seeing all N members with a completed epoch, and the exports of all N
# nodes, fetched then, are identical byte for byte (the same bits everywhere: an epoch over the
# whole membership has completed; scripts/bench_agreement.py also checks the value against
# numpy where Python is available). Then the steady state, start-up aside: epochs back to back,
# the epochs per second of the slowest node over WINDOW seconds.
#   scripts/bench_device.sh BUILD_DIR [NODES...]      (PARAMS=10000000, WINDOW=10 by default)
set -euo pipefail
build=${1:?usage: scripts/bench_device.sh BUILD_DIR [NODES...]}
shift
node_counts=("$@")
((${#node_counts[@]})) || node_counts=(4 8)
params=${PARAMS:-10000000}
window=${WINDOW:-10}
bin="$build/apps/mws-node/mws-node"
work=$(mktemp -d)
# Nodes start in a subshell ($(run_mesh ...)): their pids go to a file, for this trap.
trap 'kill $(cat "$work"/pids 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

field_of() {  # field_of PORT NAME: a numeric field of a node's status, or -1
  local s v
  s=$("$bin" status --http "127.0.0.1:$1" 2>/dev/null) || { echo -1; return; }
  v=$(sed -n "s/.*\"$2\":\\([0-9]*\\).*/\\1/p" <<<"$s")
  echo "${v:--1}"
}

same_exports() {  # same_exports BASE N: every node's export identical
  local first="" i sum
  for ((i = 0; i < $2; i++)); do
    "$bin" export --http "127.0.0.1:$(($1 + 2 * i + 1))" --out "$work/export" >/dev/null 2>&1 ||
      return 1
    sum=$(cksum <"$work/export")
    [[ -z "$first" ]] && first=$sum
    [[ "$sum" == "$first" ]] || return 1
  done
}

min_epochs() {  # min_epochs BASE N: the fewest epochs any node has completed (-1: one did not say)
  local i e least=""
  for ((i = 0; i < $2; i++)); do
    e=$(field_of "$(($1 + 2 * i + 1))" epochs_completed)
    ((e < 0)) && { echo -1; return; }
    [[ -z "$least" || "$e" -lt "$least" ]] && least=$e
  done
  echo "$least"
}

# run_mesh DEVICE NODES MODE. MODE agree (--epoch-s 1): seconds from the launch until every node
# sees all N members, has completed an epoch, and exports the same bytes. MODE rate (--epoch-s
# 0.01, epochs back to back): after the first epoch, epochs completed per second by the slowest
# node over WINDOW seconds. Prints the number, or "none" and why.
run_mesh() {
  local device=$1 n=$2 mode=$3 base=$((20000 + RANDOM % 12000)) pids=() start i epoch_s=1
  [[ "$mode" == rate ]] && epoch_s=0.01
  start=$(date +%s.%N)
  for ((i = 0; i < n; i++)); do
    local seed_args=(--listen "127.0.0.1:$((base + 2 * i))")
    ((i > 0)) && seed_args+=(--seed "127.0.0.1:$base")
    "$bin" run --key "$work/key-$i" --random-init "$params" --init-seed $((i + 1)) \
      --http "127.0.0.1:$((base + 2 * i + 1))" --algorithm exact --epoch-s "$epoch_s" \
      --device "$device" --log-level error "${seed_args[@]}" 2>>"$work/log-$device-$n" &
    pids+=($!)
    echo $! >>"$work/pids"
  done
  local result="" tries p all
  for ((tries = 0; tries < 3000; tries++)); do
    [[ -n "$result" ]] && break
    all=1
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || all=2; done
    ((all == 2)) && break  # a node exited: its log says why
    for ((i = 0; i < n; i++)); do
      local port=$((base + 2 * i + 1))
      if (($(field_of "$port" members_alive) != n || $(field_of "$port" epochs_completed) < 1))
      then
        all=0
        break
      fi
    done
    if ((all == 1)) && [[ "$mode" == agree ]]; then
      local seen
      seen=$(date +%s.%N)
      same_exports "$base" "$n" && result=$(awk "BEGIN { printf \"%.2f\", $seen - $start }")
    elif ((all == 1)); then
      local e0 e1 t0 t1
      e0=$(min_epochs "$base" "$n") t0=$(date +%s.%N)
      sleep "$window"
      e1=$(min_epochs "$base" "$n") t1=$(date +%s.%N)
      if ((e0 >= 0 && e1 >= 0)); then
        result=$(awk "BEGIN { printf \"%.2f\", ($e1 - $e0) / ($t1 - $t0) }")
      else
        break  # a node stopped answering: its log says why
      fi
    fi
    [[ -z "$result" ]] && sleep 0.05
  done
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "${result:-none ($(tail -n 1 "$work/log-$device-$n" 2>/dev/null))}"
}

for n in "${node_counts[@]}"; do
  echo "$n nodes, $params f32 params, exact mode:" \
    "agreement after cpu $(run_mesh cpu "$n" agree) s, cuda $(run_mesh cuda "$n" agree) s;" \
    "then epochs/s cpu $(run_mesh cpu "$n" rate), cuda $(run_mesh cuda "$n" rate)"
done
