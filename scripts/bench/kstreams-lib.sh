# scripts/bench/kstreams-lib.sh - sourced by the stateful benches: builds and
# runs the Java side (scripts/bench/kstreams-totals: the Kafka Streams
# contender and the Topics/Preload/Await tools).
#   kstreams_build               mvn package + copy-dependencies, when a source is newer than the build
#   kjava CLASS ARGS...          runs dev.stagehost.bench.CLASS (a tool: serial GC, small heap)
#   kjava_exec [JVM-OPTS] CLASS ARGS...   execs the contender's JVM (KSTREAMS_JAVA_OPTS, default JVM settings)

kstreams_dir="$root/scripts/bench/kstreams-totals"
kstreams_cp="$kstreams_dir/target/classes:$kstreams_dir/target/dependency/*"

kstreams_build() {
  local stamp="$kstreams_dir/target/.built"
  if [[ ! -f $stamp ]] || [[ -n $(find "$kstreams_dir/pom.xml" "$kstreams_dir/src" -newer "$stamp" -type f | head -1) ]]; then
    command -v mvn >/dev/null || { echo "kstreams-totals: needs Maven (apt-get install -y maven)" >&2; return 1; }
    echo "kstreams-totals: building (mvn package)" >&2
    mvn -q -B -f "$kstreams_dir/pom.xml" package dependency:copy-dependencies -DincludeScope=runtime >&2
    touch "$stamp"
  fi
}

kjava() {
  local class=$1
  shift
  java -XX:+UseSerialGC -Xmx512m -XX:TieredStopAtLevel=1 -cp "$kstreams_cp" "dev.stagehost.bench.$class" "$@"
}

kjava_exec() {
  local opts=()
  while [[ $1 == -* ]]; do opts+=("$1"); shift; done
  local class=$1
  shift
  # shellcheck disable=SC2086
  exec java ${KSTREAMS_JAVA_OPTS:-} "${opts[@]}" -cp "$kstreams_cp" "dev.stagehost.bench.$class" "$@"
}
