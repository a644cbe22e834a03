# A network link of limited rate for benchmarks, sourced by scripts/bench-proxy.sh and
# scripts/bench-s3.sh: a network namespace of its own, reached from this one over a veth
# pair whose two ends are shaped by a `tbf` qdisc. Servers started in the namespace (with
# "${shaped_exec[@]}" before their command) and bound to $shaped_remote_ip are reached
# over the link; traffic between them inside the namespace is not shaped. No latency is
# added: `tbf` adds only its queueing delay (netem would add more, but not every kernel
# has it). Needs root, `ip` and `tc`.
#
#   shaped_link_check OPTION MBIT  exits (status 2) unless MBIT is a whole number and
#                             `ip` and `tc` are here: call it before any long build
#   shaped_link_up TAG MBIT   create it; sets shaped_ns, shaped_local_ip (this end),
#                             shaped_remote_ip (the namespace's end) and shaped_exec
#   shaped_link_down          remove it (safe to call when none was made, and twice)
#
# Names derive from TAG and the shell's pid, the /30 from the pid, so two runs at once do
# not collide.

shaped_ns=""
shaped_veth=""
shaped_local_ip=""
shaped_remote_ip=""
shaped_exec=()

shaped_link_check() { # OPTION MBIT
    case "$2" in
        '' | *[!0-9]*) echo "$1 takes a whole number of megabits/s, not '$2'" >&2; exit 2 ;;
    esac
    local tool
    for tool in ip tc; do
        command -v "$tool" >/dev/null 2>&1 || { echo "$1 needs $tool, not found on PATH" >&2; exit 2; }
    done
}

shaped_link_up() { # TAG MBIT
    local tag="$1" rate="$2" peer net burst
    shaped_ns="$tag-$$"
    shaped_veth="${tag:0:3}x$$"
    peer="${tag:0:3}y$$"
    net="10.$((200 + $$ % 50)).$(($$ / 50 % 250)).$(($$ % 64 * 4))"
    shaped_local_ip="${net%.*}.$((${net##*.} + 1))"
    shaped_remote_ip="${net%.*}.$((${net##*.} + 2))"
    ip netns add "$shaped_ns"
    ip link add "$shaped_veth" type veth peer name "$peer"
    ip link set "$peer" netns "$shaped_ns"
    ip addr add "$shaped_local_ip/30" dev "$shaped_veth"
    ip link set "$shaped_veth" up
    ip netns exec "$shaped_ns" ip addr add "$shaped_remote_ip/30" dev "$peer"
    ip netns exec "$shaped_ns" ip link set "$peer" up
    ip netns exec "$shaped_ns" ip link set lo up
    # Both directions; the burst is about 1 ms at the rate (at least 64 KiB, one GSO
    # packet), the queue holds at most 20 ms.
    burst=$((rate * 1000 / 8))
    [ "$burst" -lt 65536 ] && burst=65536
    tc qdisc add dev "$shaped_veth" root tbf rate "${rate}mbit" burst "$burst" latency 20ms
    ip netns exec "$shaped_ns" tc qdisc add dev "$peer" root tbf rate "${rate}mbit" \
        burst "$burst" latency 20ms
    shaped_exec=(ip netns exec "$shaped_ns")
}

shaped_link_down() {
    if [ -n "$shaped_ns" ]; then
        ip netns del "$shaped_ns" 2>/dev/null || true
    fi
    if [ -n "$shaped_veth" ]; then
        ip link del "$shaped_veth" 2>/dev/null || true
    fi
    shaped_ns=""
    shaped_veth=""
    shaped_exec=()
}
