package dev.stagehost.bench;

import java.time.Duration;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.streams.processor.StateRestoreListener;

/**
 * The running total of plugins/running-total as a Kafka Streams application:
 * {"account": A, "amount": N} keyed by its account A becomes
 * {"account": A, "amount": N, "total": T, "count": C}, one output per input,
 * exactly once (exactly_once_v2, commit every 100 ms as the host's
 * commit_interval_ms). The aggregate is kept in a RocksDB store with its
 * changelog topic, as Streams does by default; the record cache is off
 * (statestore.cache.max.bytes 0) so that every input gives an output, as in
 * the host, instead of one per key and commit (-Dbench.cache.bytes=N sets it;
 * state-restore.sh fills distinct keys with the default cache, which changes
 * nothing there: every key is written once).
 *
 * Args: BOOTSTRAP APPLICATION_ID INPUT OUTPUT STATE_DIR
 */
@SuppressWarnings("deprecation")
public final class Totals {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], appId = args[1], input = args[2], output = args[3], stateDir = args[4];
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, Long.getLong("bench.cache.bytes", 0L));
        props.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, Integer.getInteger("bench.threads", 1));
        props.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        props.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        // The host's producer settings (host/src/kafka/clients.rs): linger 5 ms.
        props.put(StreamsConfig.producerPrefix("linger.ms"), 5);

        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .groupByKey()
                // The aggregate: "total,count,last amount".
                .aggregate(
                        () -> "0,0,0",
                        (account, value, agg) -> {
                            long amount = amount(value);
                            String[] parts = agg.split(",", 3);
                            long total = Math.addExact(Long.parseLong(parts[0]), amount);
                            long count = Long.parseLong(parts[1]) + 1;
                            return total + "," + count + "," + amount;
                        },
                        Materialized.<String, String, KeyValueStore<Bytes, byte[]>>as("totals")
                                .withKeySerde(Serdes.String())
                                .withValueSerde(Serdes.String()))
                .toStream()
                .mapValues((account, agg) -> {
                    String[] parts = agg.split(",", 3);
                    return "{\"account\":\"" + account + "\",\"amount\":" + parts[2]
                            + ",\"count\":" + parts[1] + ",\"total\":" + parts[0] + "}";
                })
                .to(output, Produced.with(Serdes.String(), Serdes.String()));

        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        CountDownLatch done = new CountDownLatch(1);
        streams.setUncaughtExceptionHandler(err -> {
            err.printStackTrace();
            done.countDown();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse
                    .SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> System.err.println("kstreams-totals: " + before + " -> " + now));
        // Restores, one line per store partition (scripts/bench/state-restore.sh reads them).
        streams.setGlobalStateRestoreListener(new StateRestoreListener() {
            final java.util.Map<TopicPartition, Long> started = new java.util.concurrent.ConcurrentHashMap<>();

            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {
                started.put(tp, System.nanoTime());
                System.err.printf("kstreams-totals: restoring %s from %d to %d%n", tp, start, end);
            }

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long end, long restored) {}

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                long ms = (System.nanoTime() - started.getOrDefault(tp, System.nanoTime())) / 1_000_000;
                System.err.printf("kstreams-totals: restored partition=%d records=%d elapsed_ms=%d%n", tp.partition(), total, ms);
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            // Leave the group, so that a restart (state-restore.sh) is
            // assigned at once instead of after the session timeout.
            streams.close(new KafkaStreams.CloseOptions().leaveGroup(true).timeout(Duration.ofSeconds(30)));
            done.countDown();
        }));
        streams.start();
        done.await();
    }

    /** The integer under "amount" in a {"amount": N} message. */
    static long amount(String value) {
        int at = value.indexOf("\"amount\"");
        if (at < 0) throw new IllegalArgumentException("no amount: " + value);
        int i = value.indexOf(':', at) + 1;
        while (value.charAt(i) == ' ') i++;
        int j = i;
        if (value.charAt(j) == '-') j++;
        while (j < value.length() && Character.isDigit(value.charAt(j))) j++;
        return Long.parseLong(value.substring(i, j));
    }
}
