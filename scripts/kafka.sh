#!/usr/bin/env bash
# scripts/kafka.sh - a real Apache Kafka 4.x broker (KRaft mode) on this
# machine, for Stagehost's development and tests.
#
#   scripts/kafka.sh up       start the broker (or cluster) unless its port already answers
#   scripts/kafka.sh down     stop the broker(s) this script started
#   scripts/kafka.sh kill [NODE]   SIGKILL node NODE (default 1), as a crash would; `up` restarts it
#   scripts/kafka.sh status   say whether the broker(s) answer; exit 0 only if all do
#   scripts/kafka.sh logs [-f] [N]   last N (default 100) lines of the broker log, -f to follow
#   scripts/kafka.sh classpath       print the classpath of the broker and its tools
#   scripts/kafka.sh tool MAIN-CLASS [ARGS...]   run a Kafka command line tool,
#         e.g. scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand \
#                --bootstrap-server 127.0.0.1:9092 --create --topic t --partitions 3
#   scripts/kafka.sh topics [ARGS...]   TopicCommand with --bootstrap-server filled in
#
# No Kafka distribution is downloaded: the broker's jars (org.apache.kafka:kafka_2.13,
# kafka-tools and a log4j2 binding, version pinned in scripts/kafka/pom.xml) are
# resolved from Maven Central with `mvn dependency:copy-dependencies` into
#   ${STAGEHOST_CACHE:-$HOME/.cache/stagehost}/kafka-<version>/libs
# once; a marker file there makes later runs skip Maven. Each node is a combined
# broker+controller started as `java -cp "libs/*" kafka.Kafka server.properties`.
# Node i (1-based) of KAFKA_NODES listens on
#   PLAINTEXT  127.0.0.1:$((KAFKA_PORT + i - 1))          (client listener)
#   CONTROLLER 127.0.0.1:$((KAFKA_PORT + i - 1 + 1000))   (KRaft quorum)
# and keeps everything (server.properties, data, broker.log, broker.pid) in
#   ${STAGEHOST_CACHE}/kafka-data-<client port>/
# The data is disposable: when it was formatted for another cluster id, Kafka
# version or node count it is wiped and formatted anew.
#
# Environment:
#   KAFKA_PORT            client port of node 1 (default 9092)
#   KAFKA_NODES           1 (default) or more; 3 gives a 3-node KRaft quorum on
#                         9092/9093/9094 with replication factor 3, min.insync.replicas 2
#   STAGEHOST_CACHE       cache root (default $HOME/.cache/stagehost)
#   KAFKA_HEAP_OPTS       broker heap (default "-Xms256m -Xmx1g")
#   KAFKA_START_TIMEOUT   seconds to wait for the broker to answer (default 90)
#   KAFKA_EXTRA_PROPERTIES  extra server.properties lines appended to every node's file
#   JAVA_HOME / JAVA      which java to run (default: java on PATH)
set -euo pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
pom="$script_dir/kafka/pom.xml"
log4j_conf="$script_dir/kafka/log4j2.properties"

host=127.0.0.1
base_port=${KAFKA_PORT:-9092}
nodes=${KAFKA_NODES:-1}
controller_offset=1000
start_timeout=${KAFKA_START_TIMEOUT:-90}
stop_timeout=30
heap_opts=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}
cache=${STAGEHOST_CACHE:-${HOME:-/tmp}/.cache/stagehost}

if [[ -n "${JAVA:-}" ]]; then
    java=$JAVA
elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    java=$JAVA_HOME/bin/java
else
    java=java
fi

say() { printf 'kafka: %s\n' "$*"; }
warn() { printf 'kafka: %s\n' "$*" >&2; }
die() { warn "error: $*"; exit 1; }

[[ "$base_port" =~ ^[0-9]+$ ]] || die "KAFKA_PORT must be a port number, not '$base_port'"
[[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "KAFKA_NODES must be a positive number, not '$nodes'"
[[ "$start_timeout" =~ ^[0-9]+$ ]] || die "KAFKA_START_TIMEOUT must be a number of seconds"

# The one place the version is pinned is the pom.
kafka_version=$(sed -n 's:.*<kafka\.version>\([^<]*\)</kafka\.version>.*:\1:p' "$pom" | head -n 1)
[[ -n "$kafka_version" ]] || die "no <kafka.version> in $pom"
libs="$cache/kafka-$kafka_version/libs"
classpath="$libs/*"

# Replication settings follow the node count: 1 node -> 1/1, 3 nodes -> 3/2.
if ((nodes >= 3)); then replication=3; else replication=$nodes; fi
if ((replication > 1)); then min_isr=$((replication - 1)); else min_isr=1; fi

node_port() { echo $((base_port + $1 - 1)); }
controller_port() { echo $((base_port + $1 - 1 + controller_offset)); }
node_dir() { echo "$cache/kafka-data-$(node_port "$1")"; }

bootstrap_servers() {
    local i list=""
    for ((i = 1; i <= nodes; i++)); do list+="${list:+,}$host:$(node_port "$i")"; done
    echo "$list"
}

controller_bootstrap() {
    local i list=""
    for ((i = 1; i <= nodes; i++)); do list+="${list:+,}$host:$(controller_port "$i")"; done
    echo "$list"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_answers() {
    # shellcheck disable=SC2016 # expanded by the inner shell
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$1" 2>/dev/null
}

# A Kafka Uuid as the tools print it: 16 random bytes, base64url, no padding.
# One starting with '-' would read as an option, so draw again.
random_uuid() {
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        [[ "$id" == -* || ${#id} -ne 22 ]] || break
    done
    echo "$id"
}

# Pid of the broker this script started for node $1, if it is still running.
running_pid() {
    local pidfile pid
    pidfile="$(node_dir "$1")/broker.pid"
    [[ -f "$pidfile" ]] || return 1
    pid=$(<"$pidfile")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    # Make sure the pid was not reused by something else.
    if kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $(node_dir "$1")/server.properties"; then
        echo "$pid"
        return 0
    fi
    return 1
}

# ---------------------------------------------------------------------------
# Jars
# ---------------------------------------------------------------------------

pom_stamp() { echo "kafka=$kafka_version pom=$(sha256sum "$pom" | cut -d' ' -f1)"; }

libs_complete() {
    [[ -f "$libs/.stagehost-complete" && "$(<"$libs/.stagehost-complete")" == "$(pom_stamp)" ]]
}

ensure_libs() {
    libs_complete && return 0
    # Serialise with any other kafka.sh resolving the same version.
    mkdir -p "$(dirname "$libs")"
    exec 8>"$libs.lock"
    flock -w 600 8 || die "another kafka.sh holds $libs.lock"
    if libs_complete; then
        exec 8>&-
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found; it resolves the Kafka jars (apt-get install -y maven)"
    say "resolving Kafka $kafka_version jars with Maven into $libs (first time only)"
    local tmp="$libs.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    if ! mvn -q -B -f "$pom" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.mvn.log" 2>&1; then
        tail -n 50 "$tmp.mvn.log" >&2 || true
        rm -rf "$tmp" "$tmp.mvn.log"
        die "Maven could not resolve the Kafka jars (see above)"
    fi
    rm -f "$tmp.mvn.log"
    [[ -f "$tmp/kafka_2.13-$kafka_version.jar" ]] || die "Maven did not produce kafka_2.13-$kafka_version.jar"
    rm -rf "$libs"
    mv "$tmp" "$libs"
    pom_stamp >"$libs/.stagehost-complete"
    exec 8>&-
    say "resolved $(find "$libs" -name '*.jar' | wc -l) jars"
}

# Run a Kafka command line tool on the broker's classpath, logging only
# warnings, to stderr. `run_tool --timeout SECONDS MAIN ...` bounds its time.
run_tool() {
    local limit=()
    if [[ "${1:-}" == --timeout ]]; then
        limit=(timeout "$2")
        shift 2
    fi
    local main=$1
    shift
    # shellcheck disable=SC2086 # KAFKA_TOOL_OPTS is a list of JVM options
    "${limit[@]}" "$java" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC ${KAFKA_TOOL_OPTS:-} \
        -Dlog4j2.configurationFile="$log4j_conf" \
        -Dstagehost.log.level=WARN -Dstagehost.log.target=SYSTEM_ERR \
        -cp "$classpath" "$main" "$@"
}

# ---------------------------------------------------------------------------
# Configuration and storage
# ---------------------------------------------------------------------------

write_config() {
    local i=$1 dir port cport
    dir=$(node_dir "$i")
    port=$(node_port "$i")
    cport=$(controller_port "$i")
    mkdir -p "$dir"
    cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka.sh on every 'up'; edits here are overwritten.
# Node $i of $nodes, Kafka $kafka_version, combined broker+controller (KRaft).
process.roles=broker,controller
node.id=$i
controller.quorum.bootstrap.servers=$(controller_bootstrap)
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$cport
advertised.listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$cport
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data

# Topics and internal topics sized for tests on a small machine.
num.partitions=1
default.replication.factor=$replication
min.insync.replicas=$min_isr
auto.create.topics.enable=true
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0

num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
EOF
    if [[ -n "${KAFKA_EXTRA_PROPERTIES:-}" ]]; then
        printf '\n# From KAFKA_EXTRA_PROPERTIES\n%s\n' "$KAFKA_EXTRA_PROPERTIES" >>"$dir/server.properties"
    fi
}

layout_stamp() { echo "kafka=$kafka_version nodes=$nodes base=$base_port"; }

# Cluster id node $1's storage was formatted with, if it matches this layout.
formatted_cluster_id() {
    local dir stamp layout cid meta
    dir=$(node_dir "$1")
    stamp="$dir/format.stamp"
    meta="$dir/data/meta.properties"
    [[ -f "$stamp" && -f "$meta" ]] || return 1
    layout=$(sed -n 's/^layout=//p' "$stamp")
    cid=$(sed -n 's/^cluster=//p' "$stamp")
    [[ "$layout" == "$(layout_stamp)" && -n "$cid" ]] || return 1
    grep -qx "cluster.id=$cid" "$meta" || return 1
    grep -qx "node.id=$1" "$meta" || return 1
    echo "$cid"
}

# True when every node's storage is formatted for this layout and one cluster id.
storage_consistent() {
    local i cid first=""
    for ((i = 1; i <= nodes; i++)); do
        cid=$(formatted_cluster_id "$i") || return 1
        if [[ -z "$first" ]]; then first=$cid; elif [[ "$cid" != "$first" ]]; then return 1; fi
    done
    return 0
}

# Wipe and format every node's storage with a fresh cluster id.
format_storage() {
    local i cid dir out initial="" dirids=()
    cid=$(random_uuid)
    if ((nodes > 1)); then
        for ((i = 1; i <= nodes; i++)); do
            dirids[i]=$(random_uuid)
            initial+="${initial:+,}$i@$host:$(controller_port "$i"):${dirids[i]}"
        done
    fi
    for ((i = 1; i <= nodes; i++)); do
        dir=$(node_dir "$i")
        rm -rf "$dir/data" "$dir/format.stamp"
        if ((nodes == 1)); then
            set -- --standalone
        else
            set -- --initial-controllers "$initial"
        fi
        if ! out=$(run_tool kafka.tools.StorageTool format --cluster-id "$cid" \
            --config "$dir/server.properties" "$@" 2>&1); then
            printf '%s\n' "$out" >&2
            die "formatting the KRaft storage of node $i in $dir/data failed"
        fi
        printf 'layout=%s\ncluster=%s\n' "$(layout_stamp)" "$cid" >"$dir/format.stamp"
    done
    say "formatted KRaft storage (cluster id $cid, $nodes node(s))"
}

# ---------------------------------------------------------------------------
# Start / stop
# ---------------------------------------------------------------------------

start_node() {
    local i=$1 dir
    dir=$(node_dir "$i")
    [[ -f "$dir/broker.log" ]] && mv -f "$dir/broker.log" "$dir/broker.log.1"
    rm -f "$dir/broker.pid"
    # The inner shell writes its own pid and then becomes java (exec), so the
    # pid file names the broker JVM itself. setsid: the broker outlives this
    # shell and its terminal.
    # shellcheck disable=SC2016 # expanded by the inner shell
    KAFKA_STAGEHOST_HEAP="$heap_opts" setsid nohup bash -c '
        echo $$ >"$1"
        # shellcheck disable=SC2086
        exec "$2" -server $KAFKA_STAGEHOST_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$3" -Dkafka.logs.dir="$4" \
            -cp "$5" kafka.Kafka "$4/server.properties"
    ' kafka-node "$dir/broker.pid" "$java" "$log4j_conf" "$dir" "$classpath" \
        </dev/null >"$dir/broker.log" 2>&1 9>&- &
    # Wait for the pid file so that callers can rely on it.
    local n
    for ((n = 0; n < 50; n++)); do
        [[ -s "$dir/broker.pid" ]] && break
        sleep 0.1
    done
    say "started node $i (pid $(cat "$dir/broker.pid" 2>/dev/null || echo '?')) on $host:$(node_port "$i"), log $dir/broker.log"
}

show_log_tail() {
    local i=$1 dir
    dir=$(node_dir "$i")
    warn "last 50 lines of $dir/broker.log:"
    tail -n 50 "$dir/broker.log" >&2 2>/dev/null || true
}

# Wait until every node answers on its port and the cluster serves metadata
# to a real Kafka client with all $nodes brokers registered.
# Returns 1 on timeout, 2 when a broker process died.
wait_ready() {
    local deadline i pid all out brokers
    deadline=$((SECONDS + start_timeout))
    while ((SECONDS < deadline)); do
        all=1
        for ((i = 1; i <= nodes; i++)); do
            if ! port_answers "$(node_port "$i")"; then
                all=0
                if [[ -f "$(node_dir "$i")/broker.pid" ]] && ! pid=$(running_pid "$i"); then
                    warn "node $i exited during start-up"
                    failed_node=$i
                    return 2
                fi
            fi
        done
        if ((all)); then
            # With several nodes, first make sure every broker has registered
            # and is unfenced (the metadata lists only those); then a real
            # admin request (list topics) must succeed.
            brokers=$nodes
            if ((nodes > 1)); then
                brokers=0
                if out=$(run_tool --timeout 30 org.apache.kafka.tools.BrokerApiVersionsCommand \
                    --bootstrap-server "$(bootstrap_servers)" 2>/dev/null); then
                    brokers=$(grep -c '(id: [0-9]* rack' <<<"$out" || true)
                fi
            fi
            if ((brokers >= nodes)) &&
                run_tool --timeout 30 org.apache.kafka.tools.TopicCommand \
                    --bootstrap-server "$(bootstrap_servers)" --list >/dev/null 2>&1; then
                return 0
            fi
        fi
        sleep 0.5
    done
    failed_node=1
    return 1
}

# True when node $1 died of an error about its storage (log directory,
# meta.properties, cluster or node id) rather than, say, a busy port.
storage_problem() {
    local dir
    dir=$(node_dir "$1")
    # Only ERROR/FATAL lines and the exception text that follows them.
    awk '/^\[/ { keep = ($3 == "ERROR" || $3 == "FATAL") } keep' "$dir/broker.log" 2>/dev/null |
        grep -qiE "initializeLogDirs|meta\.properties|cluster.?id|node id|directory.?id|not formatted|InconsistentClusterIdException|$dir/data"
}

# Stop nodes "$@" (default: all). SIGTERM to every node at once (stopping
# them one by one can leave the last ones waiting for a controller quorum
# that is already gone), wait up to $stop_timeout s, then SIGKILL what is left.
stop_nodes() {
    local i pid pids=() waited which=("$@")
    if ((${#which[@]} == 0)); then
        for ((i = 1; i <= nodes; i++)); do which+=("$i"); done
    fi
    for i in "${which[@]}"; do
        if pid=$(running_pid "$i"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids[i]=$pid
            say "stopping node $i (pid $pid)"
        else
            rm -f "$(node_dir "$i")/broker.pid"
        fi
    done
    ((${#pids[@]} > 0)) || return 0
    for ((waited = 0; waited < stop_timeout * 10; waited++)); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[i]}" 2>/dev/null; then
            warn "node $i did not stop within ${stop_timeout}s, sending SIGKILL"
            kill -KILL "${pids[i]}" 2>/dev/null || true
            while kill -0 "${pids[i]}" 2>/dev/null; do sleep 0.1; done
        fi
        rm -f "$(node_dir "$i")/broker.pid"
    done
    return 0
}

# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------

take_lock() {
    mkdir -p "$cache"
    exec 9>"$cache/kafka-$base_port.lock"
    flock -w 300 9 || die "another kafka.sh holds $cache/kafka-$base_port.lock"
}

cmd_up() {
    local i pid answering=0 ours=0 missing=()
    take_lock
    for ((i = 1; i <= nodes; i++)); do
        if port_answers "$(node_port "$i")"; then
            answering=$((answering + 1))
            running_pid "$i" >/dev/null && ours=$((ours + 1))
        else
            missing+=("$i")
        fi
    done
    if ((answering == nodes)); then
        if ((ours == nodes)); then
            say "already running on $(bootstrap_servers) (started by this script); leaving it alone"
        else
            say "something already answers on $(bootstrap_servers); leaving it alone"
        fi
        return 0
    fi

    command -v "$java" >/dev/null || die "java not found (Kafka $kafka_version needs Java 17+)"
    ensure_libs

    local started=() n
    for i in "${missing[@]}"; do
        if running_pid "$i" >/dev/null; then
            say "node $i is running (pid $(running_pid "$i")) but does not answer yet"
        fi
    done
    for ((i = 1; i <= nodes; i++)); do write_config "$i"; done

    if ! storage_consistent; then
        if ((answering > 0)); then
            die "some nodes already answer, but the storage of the others needs formatting; run '$0 down' first"
        fi
        for ((i = 1; i <= nodes; i++)); do
            if pid=$(running_pid "$i"); then
                die "node $i (pid $pid) is running but its storage needs formatting; run '$0 down' first"
            fi
        done
        format_storage
    fi

    local attempt
    for attempt in 1 2; do
        started=()
        for i in "${missing[@]}"; do
            if ! running_pid "$i" >/dev/null; then
                start_node "$i"
                started+=("$i")
            fi
        done
        say "waiting up to ${start_timeout}s for $(bootstrap_servers) to answer"
        local t0=$SECONDS rc=0
        failed_node=1
        wait_ready || rc=$?
        if ((rc == 0)); then
            say "ready on $(bootstrap_servers) after $((SECONDS - t0))s (Kafka $kafka_version, $nodes node(s))"
            return 0
        fi
        n=$failed_node
        # A storage that the broker refuses (other cluster id, damaged
        # meta.properties, ...) is wiped and formatted once more.
        if ((rc == 2 && attempt == 1 && answering == 0)) && storage_problem "$n"; then
            show_log_tail "$n"
            warn "the broker rejected its storage; wiping and formatting it again"
            stop_nodes
            format_storage
            continue
        fi
        show_log_tail "$n"
        ((${#started[@]} == 0)) || stop_nodes "${started[@]}"
        if ((rc == 1)); then
            die "Kafka did not answer on $(bootstrap_servers) within ${start_timeout}s"
        fi
        die "Kafka failed to start"
    done
}

# SIGKILL node $1 (default 1) without any shutdown, for fault tests.
cmd_kill() {
    local node=${1:-1} pid
    [[ "$node" =~ ^[1-9][0-9]*$ ]] && ((node <= nodes)) || die "no node '$node' (KAFKA_NODES=$nodes)"
    take_lock
    pid=$(running_pid "$node") || die "node $node is not running"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$(node_dir "$node")/broker.pid"
    say "killed node $node (pid $pid) with SIGKILL"
}

cmd_down() {
    local i any=0
    take_lock
    for ((i = 1; i <= nodes; i++)); do
        running_pid "$i" >/dev/null && any=1
    done
    if ((!any)); then
        for ((i = 1; i <= nodes; i++)); do rm -f "$(node_dir "$i")/broker.pid"; done
        if port_answers "$base_port"; then
            say "no broker started by this script is running ($host:$base_port is answered by something else, left alone)"
        else
            say "no broker is running"
        fi
        return 0
    fi
    stop_nodes
    say "stopped"
}

cmd_status() {
    local i port pid up=0
    for ((i = 1; i <= nodes; i++)); do
        port=$(node_port "$i")
        if pid=$(running_pid "$i"); then pid="pid $pid, started by this script"; else pid="no broker process of this script"; fi
        if port_answers "$port"; then
            up=$((up + 1))
            say "node $i: answers on $host:$port ($pid)"
        else
            say "node $i: nothing answers on $host:$port ($pid)"
        fi
    done
    if ((up == nodes)); then
        say "up (Kafka $kafka_version expected; bootstrap $(bootstrap_servers))"
        return 0
    fi
    say "down"
    return 1
}

cmd_logs() {
    local follow=0 lines=100 files=() i f
    while (($#)); do
        case $1 in
        -f | --follow) follow=1 ;;
        [0-9]*) lines=$1 ;;
        *) die "usage: $0 logs [-f] [LINES]" ;;
        esac
        shift
    done
    for ((i = 1; i <= nodes; i++)); do
        f="$(node_dir "$i")/broker.log"
        [[ -f "$f" ]] && files+=("$f")
    done
    ((${#files[@]})) || die "no broker log yet under $cache/kafka-data-*"
    if ((follow)); then
        exec tail -n "$lines" -F "${files[@]}"
    fi
    tail -n "$lines" "${files[@]}"
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
    up) cmd_up ;;
    down | stop) cmd_down ;;
    kill) cmd_kill "$@" ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    classpath)
        ensure_libs >&2
        echo "$classpath"
        ;;
    tool)
        (($#)) || die "usage: $0 tool MAIN-CLASS [ARGS...]"
        ensure_libs >&2
        run_tool "$@"
        ;;
    topics)
        ensure_libs >&2
        run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap_servers)" "$@"
        ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
