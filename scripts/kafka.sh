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
#   scripts/kafka.sh acl [ARGS...]      AclCommand (org.apache.kafka.tools.AclCommand) likewise,
#         e.g. scripts/kafka.sh acl --add --allow-principal User:stagehost \
#                --operation Write --operation Describe --topic t
#   scripts/kafka.sh client-config [--with-password] USER   librdkafka properties for
#         SCRAM user USER, one key=value a line: bootstrap.servers, security.protocol,
#         sasl.mechanism, sasl.username, ssl.ca.location, and sasl.password only
#         with --with-password (in plaintext mode just the first two)
#
# No Kafka distribution is downloaded: the broker's jars (org.apache.kafka:kafka_2.13,
# kafka-tools and a log4j2 binding, version pinned in scripts/kafka/pom.xml) are
# resolved from Maven Central with `mvn dependency:copy-dependencies` into
#   ${STAGEHOST_CACHE:-$HOME/.cache/stagehost}/kafka-<version>/libs
# once; a marker file there makes later runs skip Maven. Each node is a combined
# broker+controller started as `java -cp "libs/*" kafka.Kafka server.properties`.
# Node i (1-based) of KAFKA_NODES listens on
#   PLAINTEXT  127.0.0.1:$((KAFKA_PORT + i - 1))          (client listener; SASL_SSL, see below)
#   CONTROLLER 127.0.0.1:$((KAFKA_PORT + i - 1 + 1000))   (KRaft quorum)
# and keeps everything (server.properties, data, broker.log, broker.pid) in
#   ${STAGEHOST_CACHE}/kafka-data-<client port>/
# The data is disposable: when it was formatted for another cluster id, Kafka
# version, node count, security mode or set of SCRAM users it is wiped and
# formatted anew.
#
# KAFKA_SECURITY=sasl_ssl makes the client listener SASL_SSL (SCRAM-SHA-512)
# instead of PLAINTEXT; the brokers talk to each other over it as the SCRAM
# super user `admin`, and the CONTROLLER listener stays PLAINTEXT on loopback.
# The TLS material and passwords are made once per data directory, for all
# nodes, in ${STAGEHOST_CACHE}/kafka-data-<client port of node 1>/security/:
#   ca.pem               the CA to trust (librdkafka: ssl.ca.location)
#   admin.properties     Java client config of `admin` (--command-config etc.)
#   admin.password, keystore.password, truststore.password   (mode 600)
#   broker.keystore.p12, truststore.p12 (PKCS12), broker.pem (SAN 127.0.0.1, localhost)
# `admin` and KAFKA_SCRAM_USERS are created when the storage is formatted.
# In this mode `topics`, `acl`, `tool` and the readiness check pass
# admin.properties to the Java tools (`tool` with the option each tool takes
# for it, when ARGS have --bootstrap-server and no such option). Give every
# command on a cluster the same environment.
#
# Environment:
#   KAFKA_PORT            client port of node 1 (default 9092)
#   KAFKA_NODES           1 (default) or more; 3 gives a 3-node KRaft quorum on
#                         9092/9093/9094 with replication factor 3, min.insync.replicas 2
#   STAGEHOST_CACHE       cache root (default $HOME/.cache/stagehost)
#   KAFKA_HEAP_OPTS       broker heap (default "-Xms256m -Xmx1g")
#   KAFKA_START_TIMEOUT   seconds to wait for the broker to answer (default 90)
#   KAFKA_EXTRA_PROPERTIES  extra server.properties lines appended to every node's file
#   KAFKA_SECURITY        plaintext (default) or sasl_ssl (see above)
#   KAFKA_SCRAM_USERS     sasl_ssl: SCRAM users besides admin, space-separated
#                         name:password, e.g. "stagehost:s3cret other:pw2"; names of
#                         [A-Za-z0-9._@-], passwords without , " or \
#   KAFKA_ACLS            1 (sasl_ssl only): StandardAuthorizer, no ACL means deny,
#                         super users User:admin and User:ANONYMOUS (the controller
#                         listener); grant the rest with `acl`. Default 0: no authorizer
#   JAVA_HOME / JAVA      which java to run (default: java on PATH)
set -euo pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
pom="$script_dir/kafka/pom.xml"
log4j_conf="$script_dir/kafka/log4j2.properties"
openssl_conf="$script_dir/kafka/openssl.cnf"

host=127.0.0.1
base_port=${KAFKA_PORT:-9092}
nodes=${KAFKA_NODES:-1}
controller_offset=1000
start_timeout=${KAFKA_START_TIMEOUT:-90}
stop_timeout=30
heap_opts=${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}
cache=${STAGEHOST_CACHE:-${HOME:-/tmp}/.cache/stagehost}
security=${KAFKA_SECURITY:-plaintext}
security=${security,,}
acls=${KAFKA_ACLS:-0}

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
[[ "$security" == plaintext || "$security" == sasl_ssl ]] ||
    die "KAFKA_SECURITY must be plaintext or sasl_ssl, not '$security'"
[[ "$acls" == 0 || "$acls" == 1 ]] || die "KAFKA_ACLS must be 0 or 1, not '$acls'"
# An authorizer on a PLAINTEXT listener would see every client as
# User:ANONYMOUS, which must be a super user (see write_config): no ACL
# would ever apply.
[[ "$acls" == 0 || "$security" == sasl_ssl ]] || die "KAFKA_ACLS=1 needs KAFKA_SECURITY=sasl_ssl"

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
# Security (KAFKA_SECURITY=sasl_ssl)
# ---------------------------------------------------------------------------

# One directory for all nodes of the cluster: they share the CA, the broker
# certificate (every node is 127.0.0.1) and the admin password.
security_dir() { echo "$(node_dir 1)/security"; }
admin_config() { echo "$(security_dir)/admin.properties"; }

# The Java client config of admin, for the tools; dies when `up` has not
# made it yet.
need_admin_config() {
    [[ -s "$(admin_config)" ]] ||
        die "no $(admin_config) yet: start the cluster with KAFKA_SECURITY=sasl_ssl '$0 up' first"
    admin_config
}

# A random password: 18 bytes in base64url, 24 characters and no padding, so
# that it needs no quoting in a properties file, a JAAS config or --add-scram.
random_secret() { head -c 18 /dev/urandom | base64 | tr '+/' '-_' | tr -d '\n'; }

security_files=(ca.pem broker.pem broker.keystore.p12 truststore.p12
    keystore.password truststore.password admin.password admin.properties)

security_complete() {
    local f dir
    dir=$(security_dir)
    for f in "${security_files[@]}"; do [[ -s "$dir/$f" ]] || return 1; done
}

# keytool of the java that runs the broker, else the one on PATH. (openssl
# alone cannot make a truststore Java accepts: Java trusts a certificate in a
# PKCS12 file only with its own trusted-key-usage attribute, which OpenSSL
# writes only from 3.2 on.)
find_keytool() {
    local real
    real=$(readlink -f "$(command -v "$java")" 2>/dev/null) || real=
    if [[ -n "$real" && -x "$(dirname "$real")/keytool" ]]; then
        echo "$(dirname "$real")/keytool"
    elif command -v keytool >/dev/null; then
        command -v keytool
    else
        return 1
    fi
}

# Make the CA, the brokers' key and certificate, the key- and truststore and
# the passwords, once per data directory, in a temporary directory renamed
# into place at the end, so that an interrupted run leaves no half of it.
# The CA's key is deleted once it has signed the broker certificate: nothing
# else is ever signed with it, and clients that trust ca.pem then trust this
# one certificate only. A new security directory means a new admin password,
# hence (see scram_digest) a reformat.
ensure_security() {
    [[ "$security" == sasl_ssl ]] || return 0
    security_complete && return 0
    command -v openssl >/dev/null || die "openssl not found; KAFKA_SECURITY=sasl_ssl makes its TLS material with it"
    local keytool dir tmp serial f
    keytool=$(find_keytool) || die "keytool not found; KAFKA_SECURITY=sasl_ssl makes its truststore with it"
    dir=$(security_dir)
    tmp="$dir.tmp.$$"
    say "making the TLS material and passwords in $dir (once per data directory)"
    rm -rf "$tmp" "$tmp.log" "$dir"
    mkdir -p "$(dirname "$dir")"
    (umask 077 && mkdir "$tmp" && for f in keystore truststore admin; do
        printf '%s\n' "$(random_secret)" >"$tmp/$f.password"
    done)
    serial=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    # Passwords go to openssl and keytool as file names, never as arguments.
    # (set -e does not apply inside an `if !`, hence the && chain.)
    if ! (
        umask 077 && cd "$tmp" &&
            openssl req -x509 -config "$openssl_conf" -extensions ca_ext \
                -newkey rsa:2048 -nodes -sha256 -days 3650 \
                -subj "/CN=Stagehost development CA ($host:$(node_port 1))" \
                -keyout ca.key -out ca.pem &&
            openssl req -new -config "$openssl_conf" -newkey rsa:2048 -nodes -sha256 \
                -subj "/CN=localhost" -keyout broker.key -out broker.csr &&
            openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -set_serial "0x$serial" \
                -days 3650 -sha256 -extfile "$openssl_conf" -extensions broker_ext -out broker.pem &&
            openssl pkcs12 -export -name broker -in broker.pem -inkey broker.key -certfile ca.pem \
                -passout file:keystore.password -out broker.keystore.p12 &&
            "$keytool" -importcert -noprompt -alias stagehost-ca -file ca.pem \
                -storetype PKCS12 -keystore truststore.p12 -storepass:file truststore.password &&
            rm -f ca.key broker.key broker.csr &&
            chmod 644 ca.pem broker.pem
    ) >"$tmp.log" 2>&1; then
        cat "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        die "making the TLS material for KAFKA_SECURITY=sasl_ssl failed (see above)"
    fi
    rm -f "$tmp.log"
    write_admin_config "$tmp" "$dir"
    mv "$tmp" "$dir"
    security_complete || die "incomplete TLS material in $dir"
}

# admin.properties in directory $1, naming the files as they will be in $2.
write_admin_config() {
    local src=$1 dir=$2
    (
        umask 077
        cat >"$src/admin.properties" <<CONF
# Written by scripts/kafka.sh: Java client config of the SCRAM super user
# admin (--command-config, --producer.config, --consumer.config, ...).
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(<"$src/admin.password")";
ssl.truststore.type=PKCS12
ssl.truststore.location=$dir/truststore.p12
ssl.truststore.password=$(<"$src/truststore.password")
CONF
    )
}

# KAFKA_SCRAM_USERS as two parallel arrays. Names and passwords are checked
# so that nothing needs quoting: --add-scram splits its [name=..,password=..]
# at commas and strips surrounding double quotes, and properties files treat
# backslashes as escapes.
scram_names=()
scram_passwords=()
parse_scram_users() {
    local entries=() e name pw n
    scram_names=()
    scram_passwords=()
    read -r -a entries <<<"${KAFKA_SCRAM_USERS:-}"
    for e in "${entries[@]}"; do
        [[ "$e" == ?*:?* ]] || die "KAFKA_SCRAM_USERS: every entry must be name:password"
        name=${e%%:*}
        pw=${e#*:}
        [[ "$name" =~ ^[A-Za-z0-9._@-]+$ ]] ||
            die "KAFKA_SCRAM_USERS: user name '$name' has other characters than A-Z a-z 0-9 . _ @ -"
        [[ "$name" != admin ]] || die "KAFKA_SCRAM_USERS: 'admin' is the script's own super user"
        [[ "$pw" != *[,\"\\]* ]] || die "KAFKA_SCRAM_USERS: the password of '$name' contains , \" or \\"
        for n in "${scram_names[@]}"; do
            [[ "$n" != "$name" ]] || die "KAFKA_SCRAM_USERS: '$name' is listed twice"
        done
        scram_names+=("$name")
        scram_passwords+=("$pw")
    done
}

# The SCRAM users in the layout stamp: when KAFKA_SCRAM_USERS changes (or the
# security directory, hence the admin password, is made anew) the storage is
# formatted again, so that the users always match. Salted with the random
# admin password, so that the stamp, which is not secret, gives no way to
# search for a weak user password.
scram_digest() {
    local i
    {
        cat "$(security_dir)/admin.password"
        for i in "${!scram_names[@]}"; do printf '%s:%s\n' "${scram_names[i]}" "${scram_passwords[i]}"; done
    } | sha256sum | cut -c1-16
}

# StorageTool arguments that create admin and the KAFKA_SCRAM_USERS.
scram_format_args() {
    local i
    printf '%s\n' --add-scram "SCRAM-SHA-512=[name=admin,password=$(<"$(security_dir)/admin.password")]"
    for i in "${!scram_names[@]}"; do
        printf '%s\n' --add-scram "SCRAM-SHA-512=[name=${scram_names[i]},password=${scram_passwords[i]}]"
    done
}

# run_tool with the main class and its arguments in a java @argfile (mode
# 600, deleted afterwards) instead of on the command line, where any local
# user could read them in /proc/PID/cmdline: StorageTool takes the SCRAM
# passwords only as arguments.
run_tool_private_args() {
    local argfile arg rc=0
    argfile=$(umask 077 && mktemp "$(security_dir)/java-args.XXXXXX")
    for arg in "$@"; do
        arg=${arg//\\/\\\\}
        printf '"%s"\n' "${arg//\"/\\\"}"
    done >"$argfile"
    run_tool "@$argfile" || rc=$?
    rm -f "$argfile"
    return "$rc"
}

# Passwords out of a tool's error output.
redact() { sed -E 's/(password=)"?[^],"]*"?/\1<redacted>/g'; }

# ---------------------------------------------------------------------------
# Configuration and storage
# ---------------------------------------------------------------------------

write_config() {
    local i=$1 dir port cport client=PLAINTEXT
    dir=$(node_dir "$i")
    port=$(node_port "$i")
    cport=$(controller_port "$i")
    mkdir -p "$dir"
    if [[ "$security" == sasl_ssl ]]; then
        client=SASL_SSL
        # The file will hold the key- and truststore passwords and admin's.
        : >"$dir/server.properties"
        chmod 600 "$dir/server.properties"
    fi
    cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka.sh on every 'up'; edits here are overwritten.
# Node $i of $nodes, Kafka $kafka_version, combined broker+controller (KRaft).
process.roles=broker,controller
node.id=$i
controller.quorum.bootstrap.servers=$(controller_bootstrap)
controller.listener.names=CONTROLLER
listeners=$client://$host:$port,CONTROLLER://$host:$cport
advertised.listeners=$client://$host:$port,CONTROLLER://$host:$cport
inter.broker.listener.name=$client
listener.security.protocol.map=CONTROLLER:PLAINTEXT,$client:$client
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
    [[ "$security" == plaintext ]] || security_properties >>"$dir/server.properties"
    if [[ -n "${KAFKA_EXTRA_PROPERTIES:-}" ]]; then
        printf '\n# From KAFKA_EXTRA_PROPERTIES\n%s\n' "$KAFKA_EXTRA_PROPERTIES" >>"$dir/server.properties"
    fi
}

# The server.properties lines of KAFKA_SECURITY=sasl_ssl (and KAFKA_ACLS=1).
security_properties() {
    local sec
    sec=$(security_dir)
    cat <<EOF

# KAFKA_SECURITY=sasl_ssl: clients and the other brokers authenticate with
# SCRAM-SHA-512 over TLS; the brokers as admin (the JAAS config below is the
# client side of inter-broker connections, SCRAM's server side needs none).
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(<"$sec/admin.password")";
ssl.keystore.type=PKCS12
ssl.keystore.location=$sec/broker.keystore.p12
ssl.keystore.password=$(<"$sec/keystore.password")
ssl.key.password=$(<"$sec/keystore.password")
ssl.truststore.type=PKCS12
ssl.truststore.location=$sec/truststore.p12
ssl.truststore.password=$(<"$sec/truststore.password")
ssl.client.auth=none
EOF
    ((acls)) || return 0
    cat <<'EOF'

# KAFKA_ACLS=1: without an ACL that allows it, a request is denied.
# User:ANONYMOUS is the principal of every connection on the PLAINTEXT
# CONTROLLER listener, and the KRaft quorum's own traffic goes there:
# ControllerRegistration, each broker's BrokerRegistration and
# BrokerHeartbeat, and between several controllers Vote, Fetch,
# BeginQuorumEpoch. All need CLUSTER_ACTION on the cluster; without it the
# broker never registers (CLUSTER_AUTHORIZATION_FAILED in the log) and never
# serves clients. No ACL can grant it: nothing can add ACLs before the broker
# serves, and the Raft requests come before the ACLs are loaded, while the
# StandardAuthorizer allows super users only. So ANONYMOUS is a super user,
# and with it anything that reaches a controller port (loopback only). On the
# SASL_SSL listener every client is a SCRAM user, never ANONYMOUS.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:ANONYMOUS
EOF
}

# What the storage was formatted for. The plaintext stamp is the one this
# script always wrote, so that storage formatted before there was a secured
# mode is kept.
layout_stamp() {
    local stamp="kafka=$kafka_version nodes=$nodes base=$base_port"
    [[ "$security" == plaintext ]] || stamp+=" security=$security scram=$(scram_digest)"
    echo "$stamp"
}

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

# Wipe and format every node's storage with a fresh cluster id. In sasl_ssl
# mode the SCRAM users are created too (with KRaft they can only come with
# the bootstrap metadata: the brokers need admin's credential to talk to each
# other before anything could add it), with the arguments in a private
# argfile rather than on the command line.
format_storage() {
    local i cid dir out initial="" dirids=() scram=() runner=run_tool
    if [[ "$security" == sasl_ssl ]]; then
        mapfile -t scram < <(scram_format_args)
        runner=run_tool_private_args
    fi
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
        if ! out=$("$runner" kafka.tools.StorageTool format --cluster-id "$cid" \
            --config "$dir/server.properties" "$@" "${scram[@]}" 2>&1); then
            printf '%s\n' "$out" | redact >&2
            die "formatting the KRaft storage of node $i in $dir/data failed"
        fi
        printf 'layout=%s\ncluster=%s\n' "$(layout_stamp)" "$cid" >"$dir/format.stamp"
    done
    if [[ "$security" == sasl_ssl ]]; then
        say "formatted KRaft storage (cluster id $cid, $nodes node(s), SCRAM users: admin${scram_names[*]:+ ${scram_names[*]}})"
    else
        say "formatted KRaft storage (cluster id $cid, $nodes node(s))"
    fi
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
                    --bootstrap-server "$(bootstrap_servers)" "${command_config[@]}" 2>/dev/null); then
                    brokers=$(grep -c '(id: [0-9]* rack' <<<"$out" || true)
                fi
            fi
            if ((brokers >= nodes)) &&
                run_tool --timeout 30 org.apache.kafka.tools.TopicCommand \
                    --bootstrap-server "$(bootstrap_servers)" "${command_config[@]}" --list >/dev/null 2>&1; then
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

# Dies when node $1, running, was started in another mode than the
# environment asks for: `up` would report success for a cluster that the
# caller's clients cannot use. (Lines from KAFKA_EXTRA_PROPERTIES don't count.)
check_running_mode() {
    local props have_sec=plaintext have_acls=0 own
    props="$(node_dir "$1")/server.properties"
    [[ -f "$props" ]] || return 0
    own=$(sed '/^# From KAFKA_EXTRA_PROPERTIES/q' "$props")
    grep -q '^listeners=SASL_SSL:' <<<"$own" && have_sec=sasl_ssl
    grep -q '^authorizer\.class\.name=' <<<"$own" && have_acls=1
    if [[ "$have_sec" != "$security" || "$have_acls" != "$acls" ]]; then
        die "node $1 runs with KAFKA_SECURITY=$have_sec KAFKA_ACLS=$have_acls; run '$0 down' first to change that"
    fi
    if [[ "$security" == sasl_ssl ]] && ! { security_complete && storage_consistent; }; then
        die "the running cluster was formatted for other KAFKA_SCRAM_USERS (or TLS material); run '$0 down' first"
    fi
    return 0
}

cmd_up() {
    local i pid answering=0 ours=0 missing=()
    take_lock
    [[ "$security" == plaintext ]] || parse_scram_users
    for ((i = 1; i <= nodes; i++)); do
        if port_answers "$(node_port "$i")"; then
            answering=$((answering + 1))
            running_pid "$i" >/dev/null && ours=$((ours + 1))
        else
            missing+=("$i")
        fi
        if running_pid "$i" >/dev/null; then check_running_mode "$i"; fi
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
    ensure_security

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
            say "ready on $(bootstrap_servers) after $((SECONDS - t0))s (Kafka $kafka_version, $nodes node(s), $(mode_text))"
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
    if ! [[ "$node" =~ ^[1-9][0-9]*$ ]] || ((node > nodes)); then die "no node '$node' (KAFKA_NODES=$nodes)"; fi
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

mode_text() {
    if [[ "$security" == plaintext ]]; then
        echo "PLAINTEXT"
    elif ((acls)); then
        echo "SASL_SSL/SCRAM-SHA-512 with ACLs"
    else
        echo "SASL_SSL/SCRAM-SHA-512"
    fi
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
        say "up (Kafka $kafka_version expected; bootstrap $(bootstrap_servers), $(mode_text) expected)"
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

# The option with which Kafka tool $1 (main class) takes a client config
# file; fails for a tool that takes none, or that kafka.sh does not know.
tool_config_option() {
    case ${1##*.} in
    ConsoleProducer | VerifiableProducer | ProducerPerformance) echo --producer.config ;;
    ConsoleConsumer | VerifiableConsumer | ConsumerPerformance | ShareConsumerPerformance) echo --consumer.config ;;
    ConsoleShareConsumer) echo --consumer-config ;;
    LeaderElectionCommand) echo --admin.config ;;
    ClusterTool) echo --config ;;
    TopicCommand | AclCommand | ConfigCommand | ConsumerGroupCommand | ShareGroupCommand | \
        StreamsGroupCommand | GroupsCommand | DeleteRecordsCommand | BrokerApiVersionsCommand | \
        ReassignPartitionsCommand | ClientMetricsCommand | GetOffsetShell | LogDirsCommand | \
        FeatureCommand | MetadataQuorumCommand | TransactionsCommand | DelegationTokenCommand | \
        VerifiableShareConsumer)
        echo --command-config
        ;;
    *) return 1 ;;
    esac
}

# True when option $1 is among "${@:2}", alone or as --opt=value.
has_option() {
    local opt=$1 a
    shift
    for a in "$@"; do [[ "$a" == "$opt" || "$a" == "$opt="* ]] && return 0; done
    return 1
}

# `tool`: in sasl_ssl mode a tool that talks to the brokers (--bootstrap-server;
# not --bootstrap-controller, the controller listener is PLAINTEXT) is given
# admin.properties, unless ARGS already name a config file.
cmd_tool() {
    local main=$1 opt cfg
    shift
    if [[ "$security" == sasl_ssl ]] && has_option --bootstrap-server "$@"; then
        if opt=$(tool_config_option "$main"); then
            if ! has_option "$opt" "$@"; then
                cfg=$(need_admin_config) || exit 1
                set -- "$@" "$opt" "$cfg"
            fi
        else
            warn "$main is not one kafka.sh knows; pass it the client config $(admin_config) yourself"
        fi
    fi
    run_tool "$main" "$@"
}

# librdkafka properties for SCRAM user $1 on this cluster.
cmd_client_config() {
    local user="" with_password=0 password="" i dir
    while (($#)); do
        case $1 in
        --with-password) with_password=1 ;;
        -*) die "usage: $0 client-config [--with-password] USER" ;;
        *)
            [[ -z "$user" ]] || die "usage: $0 client-config [--with-password] USER"
            user=$1
            ;;
        esac
        shift
    done
    if [[ "$security" == plaintext ]]; then
        printf 'bootstrap.servers=%s\nsecurity.protocol=PLAINTEXT\n' "$(bootstrap_servers)"
        return 0
    fi
    [[ -n "$user" ]] || die "usage: $0 client-config [--with-password] USER"
    dir=$(security_dir)
    security_complete || die "no TLS material in $dir yet: start the cluster with KAFKA_SECURITY=sasl_ssl '$0 up' first"
    parse_scram_users
    if [[ "$user" == admin ]]; then
        password=$(<"$dir/admin.password")
    else
        for i in "${!scram_names[@]}"; do
            [[ "${scram_names[i]}" == "$user" ]] && password=${scram_passwords[i]}
        done
        [[ -n "$password" ]] || die "no SCRAM user '$user': it is admin or one of KAFKA_SCRAM_USERS"
    fi
    printf '%s\n' "bootstrap.servers=$(bootstrap_servers)" security.protocol=SASL_SSL \
        sasl.mechanism=SCRAM-SHA-512 "sasl.username=$user" "ssl.ca.location=$dir/ca.pem"
    ((with_password)) && printf 'sasl.password=%s\n' "$password"
    return 0
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

# The Java tools' --command-config for admin, in sasl_ssl mode.
command_config=()

main() {
    local cmd=${1:-} cfg
    (($#)) && shift
    if [[ "$security" == sasl_ssl ]]; then
        case $cmd in
        topics | acl | acls) cfg=$(need_admin_config) || exit 1 ;;
        *) cfg=$(admin_config) ;;
        esac
        command_config=(--command-config "$cfg")
    fi
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
        cmd_tool "$@"
        ;;
    topics)
        ensure_libs >&2
        run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap_servers)" \
            "${command_config[@]}" "$@"
        ;;
    acl | acls)
        ensure_libs >&2
        run_tool org.apache.kafka.tools.AclCommand --bootstrap-server "$(bootstrap_servers)" \
            "${command_config[@]}" "$@"
        ;;
    client-config) cmd_client_config "$@" ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
